"""The demo's promise, measured: `make demo` from a fresh clone, its time, peak memory and learning.

Command:  .venv/bin/python benchmarks/demo.py [--clone-dir DIR] [--keep] [--command "make demo"]
Reads:    this repository's committed HEAD (cloned afresh, so what is measured is what a user gets:
          `make demo` creates the clone's own .venv and runs run_pipeline.sh in it).
Writes:   <OUTPUT_DIR>/bench/demo.json (this checkout's OUTPUT_DIR): the wall time of the whole
          command, each pipeline step's time and peak resident memory (finreason.measure), the
          precision that trained and why, this machine's matmul peaks, the probe's projected peak
          of the SFT stage against the SFT step's measured peak, the strict accuracy of each stage
          on the dev questions with its n and evidence mode, each goal met or not, and provenance.

Goals (the README's promise for 2 CPU cores): the whole command in under 20 minutes, no step above
4 GiB resident, the best trained stage at least 10 points above zero-shot on at least 50 dev
questions, and the probe's projected SFT peak within 15% of the SFT step's measured peak. Run it on
an idle machine: anything else running slows every step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from finreason import configuration, console, measure, storage
from finreason.errors import FinReasonError
from finreason.layout import STAGES, TRAINED_STAGES, Layout
from finreason.provenance import provenance

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"seconds": 20 * 60, "peak_rss_gb": 4.0, "gain_points": 10.0, "n": 50, "probe_error": 0.15}
SFT_STEP = "04 train SFT"


class DemoError(FinReasonError):
    """The clone folder is in use, or the measured command failed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clone-dir", default=None, help="clone into this new folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its outputs/ and .venv) afterwards")
    parser.add_argument("--command", default="make demo", help="what runs in the clone (default: make demo)")


def main(argv=None) -> dict:
    args, cfg = configuration.parse_args(__doc__.splitlines()[0], argv, add_arguments)

    # a fresh clone of the committed HEAD: uncommitted changes are not what a user gets
    clone = Path(args.clone_dir) if args.clone_dir else Path(tempfile.mkdtemp(prefix="finreason-demo-")) / "finreason"
    if clone.exists() and any(clone.iterdir()):
        raise DemoError(f"--clone-dir {clone} is not empty: name a new folder")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True, capture_output=True, text=True).stdout.strip()
    # beside what the demo writes (git-ignored there), so it goes with the clone
    steps_log = clone / "outputs" / "pipeline_steps.jsonl"
    try:
        # the command, measured from outside: wall time and the peak of its process tree
        env = {**os.environ, "FINREASON_PIPELINE_LOG": str(steps_log)}
        env.pop("VIRTUAL_ENV", None)
        whole = measure.run(["bash", "-c", f"cd {clone} && {args.command}"], args.command, env=env)
        if whole["exit_code"] != 0:
            raise DemoError(f"`{args.command}` failed in {clone} (exit {whole['exit_code']}); its output is above")
        result = summarise(Layout(clone / "outputs"), list(storage.read_jsonl(steps_log)), whole)
    finally:
        if not args.keep:
            shutil.rmtree(clone.parent if not args.clone_dir else clone, ignore_errors=True)
    result["provenance"] = provenance(cfg, commit=head, clone=str(clone) if args.keep else None)
    out = Layout.of(cfg).bench_result("demo")
    storage.atomic_write_json(out, result)
    print(table(result))
    print(f"\nwrote {out}")
    return result


def summarise(where: Layout, steps: list[dict], whole: dict) -> dict:
    """What the demo left in ``where`` and the pipeline's step log, against GOALS."""
    check_env = storage.read_json_object(where.check_env) or {}
    probe = check_env.get("probe") or {}
    accuracy = {}
    for stage in STAGES:
        summary = storage.read_json_object(where.eval_summary(stage)) or {}
        accuracy[stage] = {key: summary.get(key) for key in ("n", "execution_accuracy", "evidence_mode")}
    trained = [stage for stage in TRAINED_STAGES if accuracy[stage]["execution_accuracy"] is not None]
    best = max(trained, key=lambda stage: accuracy[stage]["execution_accuracy"], default=None)
    zero = accuracy["zero_shot"]["execution_accuracy"]
    gain = None if best is None or zero is None else round(100 * (accuracy[best]["execution_accuracy"] - zero), 1)
    sft_summary = storage.read_json_object(where.weights("sft") / "training_summary.json") if where.weights("sft") else None
    peak = max((step["peak_rss_gb"] for step in steps), default=whole["peak_rss_gb"])
    sft_peak = next((step["peak_rss_gb"] for step in steps if step["name"] == SFT_STEP), None)
    projected = (probe.get("sft") or {}).get("projected_peak_memory_gb")
    error = None if not sft_peak or projected is None else round(projected / sft_peak - 1, 3)
    n = min((accuracy[stage]["n"] or 0 for stage in STAGES), default=0)
    return {
        "seconds": whole["seconds"],
        "peak_rss_gb": peak,
        "steps": steps,
        "precision": (sft_summary or {}).get("precision"),
        "cpu_precision_decision": probe.get("cpu_precision"),
        "matmul_peak_gflops": check_env.get("matmul_peak_gflops"),
        "probe_projected_sft_peak_gb": projected,
        "sft_step_peak_gb": sft_peak,
        "probe_error": error,
        "accuracy": accuracy,
        "best_trained_stage": best,
        "gain_points": gain,
        "goals": GOALS,
        "met": {
            "seconds": whole["seconds"] < GOALS["seconds"],
            "peak_rss_gb": peak <= GOALS["peak_rss_gb"],
            "gain_points": gain is not None and gain >= GOALS["gain_points"] and n >= GOALS["n"],
            "probe_error": error is not None and abs(error) <= GOALS["probe_error"],
        },
    }


def table(result: dict) -> str:
    rows = [(step["name"], f"{step['seconds']:.0f} s", f"{step['peak_rss_gb']:.2f} GiB") for step in result["steps"]]
    rows.append(("whole command", f"{result['seconds']:.0f} s", f"{result['peak_rss_gb']:.2f} GiB"))
    lines = [console.table(rows, ("step", "time", "peak memory")), ""]
    for stage, found in result["accuracy"].items():
        if found["execution_accuracy"] is not None:
            lines.append(f"{stage}: {100 * found['execution_accuracy']:.1f}% of {found['n']} ({found['evidence_mode']} evidence)")
    lines.append(f"precision: {result['precision']}; matmul peaks {result['matmul_peak_gflops']} GFLOP/s")
    lines.append(f"probe's projected SFT peak {result['probe_projected_sft_peak_gb']} GiB against the SFT step's "
                 f"{result['sft_step_peak_gb']} GiB (error {result['probe_error']})")
    lines.append("goals: " + ", ".join(f"{name} {'met' if met else 'NOT met'}" for name, met in result["met"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    console.run_main(main)
