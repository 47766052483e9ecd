"""How many SFT epochs? The held-out training rows' curve (what chooses) beside dev's (what it is judged by).

Command:
    .venv/bin/python benchmarks/sft_epochs.py [--epochs 4] [--holdout 40] [--dev 100] [--fresh] [--KEY=value ...]
    .venv/bin/python benchmarks/sft_epochs.py --EVIDENCE_MODE=retrieved      (the standard setting)

Runs on the cpu profile (plus your overrides), in <OUTPUT_DIR>/bench/sft_epochs/<setting>/
(the evidence mode, the views, any SFT_TRL_ARGS and a non-default length, as the JSON's name):
  1. 03_format_data.py
  2. 04_train_sft.py --SFT_EPOCHS=E --SFT_HOLDOUT=H --SFT_PATIENCE=E --no-eval: --holdout training
     rows held out and answered after every epoch (finreason.epoch_choice), never stopping early so
     the whole curve is measured, every epoch's checkpoint kept (no step checkpoints between them)
  3. 06_evaluate.py --stage sft --weights <epoch e's checkpoint>: the first --dev dev questions,
     greedy, for every epoch e, each in its own folder epochs/<e>/
Prints a table (per epoch: held-out strict, dev strict with its 95% CI, exact McNemar p against
epoch 1 and against the epoch before) and which epoch the rule keeps at patience 1 and at
patience E, beside the epoch dev likes best. Writes <OUTPUT_DIR>/bench/sft_epochs_<mode>.json
(sft_epochs_<mode>_both_views.json with --SFT_EVIDENCE_VIEWS=both, _commuted_programs added with
--SFT_PROGRAM_VIEWS=commuted, _3_distractor_views with --SFT_DISTRACTOR_VIEWS=3,
_neftune_noise_alpha_5 with --SFT_TRL_ARGS=neftune_noise_alpha=5, _6_epochs with --epochs 6: any
length but the default 4)
with those numbers, each epoch's weights SHA-256, the stage times and peak memory, provenance.

One run of E epochs has one learning-rate schedule (cosine over E epochs): epoch 2 of a 4-epoch
run is not a 2-epoch run. That is the curve the rule sees when SFT_EPOCHS is the most it may train.
Resumable: 04 resumes from its epoch checkpoints, each evaluation from its records.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from finreason import configuration, console, epoch_choice, evaluation, measure, models, stats, storage
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.prompts import evidence_label
from finreason.provenance import provenance
from finreason.retrieval import used_by

NAME = "sft_epochs"
ROOT = Path(__file__).resolve().parent.parent
_LOG = logging.getLogger(NAME)
# far beyond an epoch: the only checkpoints are the ones the epoch rule saves at each epoch's end
NO_STEP_CHECKPOINTS = 1_000_000
# a run of another length has another cosine schedule: it keeps its own folder and JSON
DEFAULT_EPOCHS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs trained and measured (default {DEFAULT_EPOCHS})")
    parser.add_argument("--holdout", type=int, default=40, help="training rows held out to score each epoch (default 40)")
    parser.add_argument("--dev", type=int, default=100, help="dev questions evaluated after each epoch (default 100)")
    parser.add_argument("--fresh", action="store_true", help="delete this evidence mode's previous run first")


class EpochsError(FinReasonError):
    """A stage of the benchmark failed."""


def main(argv=None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = configuration.parse_args(__doc__, ["--PROFILE=cpu", *argv], add_arguments)
    if args.epochs < 1 or args.holdout < 1 or args.dev < 1:
        raise EpochsError("--epochs, --holdout and --dev must each be at least 1")
    overrides, _ = configuration.config_tokens(argv)
    setting = setting_name(cfg, args.epochs)
    run_dir = Layout.of(cfg).bench_dir / NAME / setting
    if args.fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    base_path = models.resolve_model_path(cfg.MODEL_NAME, cfg.OUTPUT_DIR)
    common = ["--PROFILE=cpu", *overrides, f"--MODEL_NAME={base_path}", "--EVAL_SPLIT=dev", f"--EVAL_LIMIT={args.dev}", "--quiet"]
    training_flags = sft_flags(cfg, args.epochs, args.holdout)
    where = Layout(run_dir)
    steps_log = run_dir / "steps.jsonl"

    # train: every epoch scored on the held-out rows, every epoch's checkpoint kept
    timings = {}
    for name, script, flags in (("format", "03_format_data.py", ["--no-progress"]),
                                ("sft", "04_train_sft.py", ["--no-eval", *training_flags])):
        _LOG.info("%s: %s", name, script)
        record = measure.run([sys.executable, str(ROOT / script), *flags, *common, f"--OUTPUT_DIR={run_dir}"], name, steps_log)
        if record["exit_code"]:
            raise EpochsError(f"{script} failed (exit {record['exit_code']}); see its output above")
        timings[name] = {"seconds": record["seconds"], "peak_rss_gb": record["peak_rss_gb"]}
    curve = epoch_choice.curve(where.step_log("sft"))
    if not curve:
        raise EpochsError(f"{where.step_log('sft')} holds no held-out scores: did 04 train with --SFT_HOLDOUT?")

    # dev: each epoch's checkpoint on the same questions, in its own folder (the ranker copied, not refit)
    epochs = []
    for number, point in enumerate(curve, start=1):
        checkpoint = where.checkpoints("sft") / f"checkpoint-{point['step']}"
        epoch_dir = run_dir / "epochs" / str(number)
        if where.retriever_dir.is_dir() and not (epoch_dir / where.retriever_dir.name).exists():
            shutil.copytree(where.retriever_dir, epoch_dir / where.retriever_dir.name)
        record = measure.run([sys.executable, str(ROOT / "06_evaluate.py"), "--stage", "sft", "--weights", str(checkpoint),
                              *common, f"--OUTPUT_DIR={epoch_dir}"], f"dev epoch {number}", steps_log)
        if record["exit_code"]:
            raise EpochsError(f"06_evaluate.py on {checkpoint} failed (exit {record['exit_code']}); see its output above")
        timings[f"dev_epoch_{number}"] = {"seconds": record["seconds"], "peak_rss_gb": record["peak_rss_gb"]}
        epochs.append({**point, "records": evaluation.read_stage(Layout(epoch_dir), "sft"),
                       "weights_sha256": models.weights_fingerprint(checkpoint)})

    run_cfg = configuration.resolve_config([*(t for t in common if t.startswith("--") and "=" in t), *training_flags,
                                            f"--OUTPUT_DIR={run_dir}"])
    result = summarize(epochs, run_cfg)
    result.update(timings=timings, holdout=args.holdout,
                  provenance=provenance(run_cfg, model=cfg.MODEL_NAME, data=storage.read_json_object(where.data_manifest).get("provenance", {}).get("data")))
    path = storage.atomic_write_json(Layout.of(cfg).bench_result(f"{NAME}_{setting}"), result)
    print(table(result))
    _LOG.info("wrote %s", path)
    return result


def sft_flags(cfg: Any, epochs: int, holdout: int) -> list[str]:
    """04's flags for the whole curve: never stopping early, a checkpoint at every epoch's end and
    room to keep them all, beside the TRL fields the user set (e.g. neftune_noise_alpha=5)."""
    trl_args = ",".join(part for part in (cfg.SFT_TRL_ARGS.strip(), f"save_total_limit={epochs + 1}") if part)
    return [f"--SFT_EPOCHS={epochs}", f"--SFT_HOLDOUT={holdout}", f"--SFT_PATIENCE={epochs}",
            f"--SAVE_STEPS={NO_STEP_CHECKPOINTS}", f"--SFT_TRL_ARGS={trl_args}"]


def setting_name(cfg: Any, epochs: int = DEFAULT_EPOCHS) -> str:
    """The evidence mode, then each training-row view the run adds, then TRL fields the run sets, then
    the epochs if not the default: runs of different rows, trainers or schedules keep apart."""
    views = {"SFT_EVIDENCE_VIEWS": f"{cfg.SFT_EVIDENCE_VIEWS}_views", "SFT_PROGRAM_VIEWS": f"{cfg.SFT_PROGRAM_VIEWS}_programs"}
    distractors = [f"{cfg.SFT_DISTRACTOR_VIEWS}_distractor_views"] if cfg.SFT_DISTRACTOR_VIEWS else []
    trainer = [re.sub(r"[^a-z0-9.]+", "_", cfg.SFT_TRL_ARGS.lower()).strip("_")] if cfg.SFT_TRL_ARGS.strip() else []
    schedule = [] if epochs == DEFAULT_EPOCHS else [f"{epochs}_epochs"]
    return "_".join([cfg.EVIDENCE_MODE, *(suffix for key, suffix in views.items() if getattr(cfg, key) != "one"),
                     *distractors, *trainer, *schedule])


def summarize(epochs: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """Per epoch: held-out and dev strict accuracy, dev's CI and exact McNemar p against epoch 1
    and the epoch before, on the questions every epoch answered; the epochs each choice keeps."""
    ids = sorted(set.intersection(*(set(epoch["records"]) for epoch in epochs)))
    strict = [[bool(epoch["records"][i].get("strict")) for i in ids] for epoch in epochs]
    rows = []
    for index, (epoch, flags) in enumerate(zip(epochs, strict)):
        rows.append({
            "epoch": index + 1, "step": epoch["step"], "holdout_strict": epoch[epoch_choice.SCORE],
            "holdout_correct": epoch["holdout_correct"], "holdout_n": epoch["holdout_n"],
            "dev_strict": stats.rate(flags), "dev_correct": sum(flags),
            "dev_ci95": list(stats.bootstrap_ci(flags, cfg.BOOTSTRAP_SAMPLES, cfg.SEED)),
            "p_vs_epoch_1": stats.mcnemar(strict[0], flags) if index else None,
            "p_vs_previous": stats.mcnemar(strict[index - 1], flags) if index else None,
            "weights_sha256": epoch["weights_sha256"],
        })
    holdout = [row["holdout_strict"] for row in rows]
    return {
        "n": len(ids), "evidence_mode": cfg.EVIDENCE_MODE, "sft_evidence_views": cfg.SFT_EVIDENCE_VIEWS,
        "sft_program_views": cfg.SFT_PROGRAM_VIEWS, "sft_distractor_views": cfg.SFT_DISTRACTOR_VIEWS,
        "evidence": evidence_label(cfg.EVIDENCE_MODE, used_by(cfg)),
        "epochs": rows,
        # the rule: the best held-out score among the epochs trained before it stops
        "rule_patience_1": _kept(holdout, 1),
        "rule_no_early_stop": _kept(holdout, len(holdout)),
        "dev_best_epoch": max(range(len(rows)), key=lambda i: (rows[i]["dev_strict"], -i)) + 1,
    }


def _kept(scores: list[float], patience: int) -> int:
    """The epoch (1-based) the rule keeps when it stops after ``patience`` epochs without a better score."""
    for last in range(1, len(scores) + 1):
        if epoch_choice.epochs_since_best(scores[:last]) >= patience:
            break
    seen = scores[:last]
    return seen.index(max(seen)) + 1


def table(result: dict[str, Any]) -> str:
    pct = stats.percent
    rows = [(str(row["epoch"]), f"{row['holdout_correct']}/{row['holdout_n']} ({pct(row['holdout_strict'])})",
             f"{row['dev_correct']}/{result['n']} ({pct(row['dev_strict'])})",
             f"[{pct(row['dev_ci95'][0])}, {pct(row['dev_ci95'][1])}]",
             "" if row["p_vs_epoch_1"] is None else f"{row['p_vs_epoch_1']:.2g}",
             "" if row["p_vs_previous"] is None else f"{row['p_vs_previous']:.2g}") for row in result["epochs"]]
    return "\n".join([
        console.table(rows, ("epoch", "held-out train", "dev strict", "dev 95% CI", "McNemar p vs epoch 1", "vs previous"),
                      title=f"sft_epochs: {result['evidence']}, n={result['n']} dev questions"),
        f"the rule keeps epoch {result['rule_patience_1']} at patience 1 and epoch {result['rule_no_early_stop']} "
        f"without early stopping; dev is best at epoch {result['dev_best_epoch']}",
    ])


if __name__ == "__main__":
    console.run_main(main)
