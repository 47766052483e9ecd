"""Shared test helpers: the script loader, a tiny random Qwen2 model, and the overrides that
keep model tests fast. Tests import these (``from helpers import ...``); fixtures live in conftest.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def load_script(filename: str) -> ModuleType:
    """A top-level pipeline script (``04_train_sft.py``) as a module, to call its ``main(argv)``.

    The numbered file names are fixed by the product layout and are not valid module names, so
    ``import`` cannot reach them. Tests run scripts through ``main``; their logic lives in the package.
    """
    path = PROJECT_ROOT / filename
    if not path.is_file():
        raise FileNotFoundError(f"no script {filename} in {PROJECT_ROOT}")
    module_name = "finreason_script_" + path.stem.lstrip("0123456789_")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(filename: str, argv: list[str]):
    """``filename``'s main(argv) as the command line runs it: a user error exits 1 with one line."""
    from finreason import console

    return console.run_main(load_script(filename).main, argv)


def build_tiny_qwen2(folder: Path, tokenizer, hidden_size: int = 64, seed: int = 0) -> Path:
    """Save a random Qwen2ForCausalLM (2 layers) and the tokenizer to ``folder``."""
    from finreason import random_models

    shape = {**random_models.SHAPES["tiny"], "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size}
    return random_models.build(folder, tokenizer, shape, seed=seed)


def tiny_overrides(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--PROFILE=cpu", f"--MODEL_NAME={model_dir}", f"--OUTPUT_DIR={out}", "--DOWNLOAD_DATA=false",
        # short prompts and answers keep each generate call well under a second on two cores
        "--PROMPT_TOKEN_BUDGET=128", "--FEW_SHOT_EXAMPLE=false", "--MAX_NEW_TOKENS=8",
        "--EVAL_BATCH_SIZE=2", "--BOOTSTRAP_SAMPLES=50", "--LOAD_IN_4BIT=false", "--COMPUTE_DTYPE=float32",
        # the cpu profile trains every weight on gold facts; the plumbing tests pin the other path
        "--FINETUNE=lora", "--EVIDENCE_MODE=retrieved",
        *extra,
    ]


