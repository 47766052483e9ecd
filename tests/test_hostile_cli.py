"""Mistaken and hostile command lines end with one line naming the problem and a non-zero exit.

Every row runs a real script in a subprocess, as a user would, and checks the exit code, that
stderr names the problem, and that no traceback was printed. Nothing heavy loads: each mistake
is caught before a model would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A subprocess per row (about 12 s in all on 2 cores): `make test-all` and CI, not `make test`;
# the one-line exit itself is also checked in-process (helpers.run_script) in the fast suite.
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
OWN_REPORTS = ROOT / "tests" / "data" / "own_reports.jsonl"
COMMON = ["--PROFILE=cpu", "--DOWNLOAD_DATA=false"]


def run(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          timeout=180, cwd=tmp_path, env=env)


@pytest.fixture
def dev_predictions(tmp_path, dev_examples) -> Path:
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps({"id": e.id, "completion": "Answer: 1"}) + "\n" for e in dev_examples[:3]))
    return path


@pytest.mark.parametrize(
    "script, args, code, message",
    [
        ("02_zero_shot_baseline.py", ["--EVAL_LIMIT=-1"], 2, "--EVAL_LIMIT must be >= 0"),  # was silently the whole split
        ("06_evaluate.py", ["--stage", "sft", "--MAX_NEW_TOKENS=0"], 2, "--MAX_NEW_TOKENS must be >= 1"),  # was empty completions
        ("02_zero_shot_baseline.py", ["--SEED=-1"], 2, "--SEED must be >= 0"),  # was a numpy crash after generation
        ("07_analyze.py", ["--OUTPUT_DIR="], 2, "--OUTPUT_DIR must be non-empty"),  # was a report in the repository root
        ("02_zero_shot_baseline.py", ["--limit", "-3"], 2, "must be 0 (all) or a positive count"),  # the flag, like the constant
        ("05_train_grpo.py", ["--NUM_GENERATIONS=3"], 2, "multiple of NUM_GENERATIONS"),  # refused before the model loads
        ("03_format_data.py", ["--MODEL_NAME=/no/such/model"], 1, "neither an existing folder"),  # ModelError was a traceback in 03
        ("01_explore_data.py", ["--DATA_DIR=/no/such/folder"], 1, "no such folder"),  # DataError, one line
        ("06_evaluate.py", ["--stage", "zero_shot", "--weights", "x"], 1, "drop --weights"),  # options that contradict
        ("06_evaluate.py", ["--stage", "grpo"], 1, "run 05_train_grpo.py first"),  # nothing trained yet
        ("06_evaluate.py", [], 1, "pass --stage"),  # neither mode chosen
        ("06_evaluate.py", ["--questions", "missing.jsonl", "--stage", "zero_shot"], 1, "cannot read the questions file"),  # no such file
        ("06_evaluate.py", ["--questions", "/dev/null", "--stage", "zero_shot"], 1, "is a device, not a regular file"),  # not a file
        ("06_evaluate.py", ["--questions", "/dev/zero", "--stage", "zero_shot"], 1, "is a device, not a regular file"),  # grew to 18 GB before
        ("06_evaluate.py", ["--questions", "/", "--stage", "zero_shot"], 1, "is a folder, not a regular file"),  # a folder
        ("06_evaluate.py", ["--score", "/dev/zero", "--split", "dev"], 1, "is a device, not a regular file"),  # --score the same way
        ("06_evaluate.py", ["--compare", "zero_shot", "sft"], 1, "add --questions"),  # a comparison of what?
    ],
)
def test_mistaken_command_lines(tmp_path, script, args, code, message):
    # the row's own arguments come last, so its --OUTPUT_DIR= wins over the private one
    done = run(tmp_path, script, f"--OUTPUT_DIR={tmp_path / 'out'}", *COMMON, *args)
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "out, message",
    [
        (lambda tmp: tmp, "is a folder"),  # --out a directory: refused before scoring, not after
        (lambda tmp: tmp / "blocker" / "verdicts.jsonl", "cannot write"),  # its folder is a file
    ],
)
def test_score_out_is_checked_before_scoring(tmp_path, dev_predictions, out, message):
    (tmp_path / "blocker").write_text("x")
    done = run(tmp_path, "06_evaluate.py", "--score", str(dev_predictions), "--split", "dev", "--out", str(out(tmp_path)), *COMMON)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert "scored (n)" not in done.stdout  # nothing was scored and then lost


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda dev: "".join(json.dumps({"id": e.id, "completion": "1"}) + "\n" for e in dev), "score with --split dev"),  # dev ids scored as test
        (lambda dev: "[" * 100_000, "nested too deeply"),  # a JSON bomb: no RecursionError
        (lambda dev: "\ufeff\x00\x01 not json", "neither FinQA's official prediction format"),  # junk
    ],
)
def test_score_file_mistakes(tmp_path, dev_examples, content, message):
    path = tmp_path / "predictions.jsonl"
    path.write_text(content(dev_examples[:3]), encoding="utf-8")
    done = run(tmp_path, "06_evaluate.py", "--score", str(path), "--split", "test", *COMMON)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_damaged_model_file_is_one_line(tmp_path, tiny_qwen2_dir):
    import shutil

    model = shutil.copytree(tiny_qwen2_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    done = run(tmp_path, "02_zero_shot_baseline.py", f"--MODEL_NAME={model}", "--limit", "1", *COMMON,
               f"--OUTPUT_DIR={tmp_path / 'out'}", "--EVIDENCE_MODE=retrieved")
    assert done.returncode == 1 and "cannot load" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "out, overwrite, message",
    [
        ("q.jsonl", False, "is the input file"),  # --out at the question file: it was "repaired" and overwritten
        ("q.jsonl", True, "is the input file"),  # even with --overwrite
        ("notes.txt", False, "exists and is not a records file"),  # an unrelated file was lost the same way
    ],
)
def test_out_never_destroys_a_users_file(tmp_path, out, overwrite, message):
    (tmp_path / "q.jsonl").write_bytes(OWN_REPORTS.read_bytes())
    (tmp_path / "notes.txt").write_text("my notes\n")
    before = {name: (tmp_path / name).read_bytes() for name in ("q.jsonl", "notes.txt")}
    done = run(tmp_path, "06_evaluate.py", "--questions", "q.jsonl", "--stage", "zero_shot", "--out", out, "--limit", "1",
               *(["--overwrite"] if overwrite else []), f"--OUTPUT_DIR={tmp_path / 'out'}", *COMMON)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


@pytest.mark.parametrize(
    "make",
    [
        lambda path: os.mkfifo(path),  # a FIFO at the lock hung the holder's record read
        lambda path: path.symlink_to(path.parent / "victim.txt"),  # a link: holding emptied its target
    ],
)
def test_a_hostile_lock_file_is_one_line(tmp_path, make):
    out = tmp_path / "out"
    out.mkdir()
    (out / "victim.txt").write_text("keep me\n")
    make(out / ".finreason.lock")
    done = run(tmp_path, "06_evaluate.py", "--stage", "grpo", f"--OUTPUT_DIR={out}", *COMMON)
    assert done.returncode == 1 and "not a lock file" in done.stderr and "Traceback" not in done.stderr
    assert (out / "victim.txt").read_text() == "keep me\n"
