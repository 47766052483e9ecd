"""Two processes for real: SFT, GRPO and a resume after a kill under ``accelerate launch``.

``accelerate launch --multi_gpu --num_processes 2`` on a machine without CUDA starts two
processes that train as DDP over gloo, the same rendezvous several machines use. (``--cpu
--num_processes 2`` is not that: without an MPI host file accelerate starts one process.) The
tiny random Qwen2 keeps each launch to ~20 s on two cores.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from finreason import training
from helpers import PROJECT_ROOT, run_script, tiny_overrides

pytestmark = pytest.mark.slow

PROCESSES = 2
TRAIN_ROWS = 16
SFT_BATCH, SFT_ACCUM = 2, 2
SMALL = ("--PROMPT_TOKEN_BUDGET=64", "--MAX_SEQ_LEN=768", "--LORA_R=4", "--LORA_ALPHA=8", "--EVAL_SPLIT=dev", "--EVAL_LIMIT=2")
SFT_ARGS = (f"--SFT_TRAIN_LIMIT={TRAIN_ROWS}", f"--SFT_BATCH_SIZE={SFT_BATCH}", f"--SFT_GRAD_ACCUM={SFT_ACCUM}", "--no-eval")
GRPO_ARGS = ("--NUM_GENERATIONS=2", "--GRPO_BATCH_SIZE=2", "--GRPO_GRAD_ACCUM=1", "--GRPO_MAX_NEW_TOKENS=8",
             "--GRPO_MAX_STEPS=2", "--DIFFICULTY_MAX_CANDIDATES=4")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch_command(script: str, argv: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={PROCESSES}",
        "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", f"--main_process_port={_free_port()}",
        script, *argv,
    ]


def _env() -> dict[str, str]:
    # one thread per process: two processes on two cores, no oversubscription
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}


def _launch(script: str, argv: list[str]) -> str:
    done = subprocess.run(_launch_command(script, argv), cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script} failed under accelerate launch:\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def _summary(folder: Path) -> dict:
    return json.loads((folder / "training_summary.json").read_text(encoding="utf-8"))


def _steps(out: Path, stage: str) -> list[int]:
    return [entry["step"] for entry in training.read_step_log(out / stage / "step_log.jsonl") if "loss" in entry]


def _only_weights(out: Path, stage: str) -> Path:
    """The stage's one weights folder, and nothing half-written beside it."""
    folders = [p for p in (out / stage).iterdir() if p.name in ("adapter", "model") or p.name.startswith(".tmp")]
    assert [p.name for p in folders] == ["adapter"], f"{stage}: expected one adapter, found {folders}"
    assert (folders[0] / "training_summary.json").is_file() and (folders[0] / "README.md").is_file()
    return folders[0]


@pytest.fixture(scope="module")
def formatted(tiny_qwen2_dir, tmp_path_factory):
    """An OUTPUT_DIR with 03's rows for the tiny model."""
    out = tmp_path_factory.mktemp("two-processes")
    argv = tiny_overrides(tiny_qwen2_dir, out, *SMALL, f"--SFT_TRAIN_LIMIT={TRAIN_ROWS}")
    run_script("03_format_data.py", argv)
    return out, tiny_qwen2_dir


@pytest.fixture(scope="module")
def trained(formatted):
    """04 then 05, each as two processes."""
    out, model_dir = formatted
    base = tiny_overrides(model_dir, out, *SMALL)
    sft_log = _launch("04_train_sft.py", [*base, *SFT_ARGS, "--SFT_EPOCHS=1"])
    grpo_log = _launch("05_train_grpo.py", [*base, *GRPO_ARGS])
    return out, base, sft_log, grpo_log


def test_sft_takes_the_steps_the_effective_batch_implies(trained):
    out, _, _, _ = trained
    summary = _summary(_only_weights(out, "sft"))
    # effective batch = SFT_BATCH_SIZE * SFT_GRAD_ACCUM * processes (config.py); one epoch of 16 rows
    expected = math.ceil(TRAIN_ROWS / (SFT_BATCH * SFT_ACCUM * PROCESSES))
    assert summary["global_step"] == expected
    assert _steps(out, "sft") == list(range(1, expected + 1))


def test_grpo_saves_once_and_every_rank_trains_on_the_same_questions(trained):
    out, _, _, grpo_log = trained
    summary = _summary(_only_weights(out, "grpo"))
    assert summary["global_step"] == 2
    assert f"the same {summary['train_rows']} difficulty-filtered questions on all {PROCESSES} processes" in grpo_log
    # each step's log lists every rank's sampled question, gathered by the main process: one per rank here
    # (NUM_GENERATIONS = GRPO_BATCH_SIZE = 2, so each rank samples one question's group per step)
    for entry in training.read_step_log(out / "grpo" / "step_log.jsonl"):
        assert len(entry["sampled_question_ids"]) == PROCESSES, entry["sampled_question_ids"]


def test_two_process_weights_load_in_06(trained):
    out, base, _, _ = trained
    result = run_script("06_evaluate.py", [*base, "--stage", "grpo", "--split", "dev", "--limit", "2"])
    assert result["n"] == 2


def test_a_killed_two_process_run_resumes_where_it_stopped(formatted, tmp_path):
    out, model_dir = formatted
    argv = [*tiny_overrides(model_dir, out, *SMALL), *SFT_ARGS, "--SFT_MAX_STEPS=4", "--SAVE_STEPS=1", "--fresh"]
    checkpoints = out / "sft" / "checkpoints"
    killed = subprocess.Popen(_launch_command("04_train_sft.py", argv), cwd=PROJECT_ROOT, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-3").is_dir() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    # torch's launcher starts each rank in a session of its own: kill the whole tree, as a crash would
    launcher = psutil.Process(killed.pid)
    tree = [*launcher.children(recursive=True), launcher]
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    killed.wait()
    psutil.wait_procs(tree, timeout=30)
    assert (checkpoints / "checkpoint-2").is_dir(), "the run ended before it could be killed mid-training"
    resumed = [arg for arg in argv if arg != "--fresh"]
    _launch("04_train_sft.py", resumed)
    summary = _summary(_only_weights(out, "sft"))
    assert summary["global_step"] == 4
    assert summary["resumed_from"] and Path(summary["resumed_from"]).name.startswith("checkpoint-")
    assert _steps(out, "sft") == [1, 2, 3, 4], "every optimizer step logged, none twice, across the kill"
