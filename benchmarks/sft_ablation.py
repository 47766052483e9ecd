"""What makes SFT learn on a CPU: every weight or LoRA, and Program-only or reasoning targets.

Command:
    .venv/bin/python benchmarks/sft_ablation.py [--dev 100] [--lora-lr 1e-3] [--fresh] [--KEY=value ...]

Runs 03_format_data.py and 04_train_sft.py (its closing evaluation is the first --dev dev
questions, greedy) on the cpu profile for the four combinations of FINETUNE (full | lora) and
SFT_TARGET (program | reasoning), each in its own folder <OUTPUT_DIR>/bench/sft_ablation/<combo>/,
each timed with its peak memory (finreason.measure). LoRA trains at --lora-lr (a zero-initialised
adapter needs a higher rate than the full weights' SFT_LEARNING_RATE); reasoning targets get
MAX_NEW_TOKENS=192 so their longer answers are not cut. Everything else is the cpu profile's (or
your --KEY=value). Prints a table and writes <OUTPUT_DIR>/bench/sft_ablation.json: per combination
n, strict accuracy with its 95% CI, exact McNemar p against full + program, seconds, peak memory.

Resumable: each combination's 04 resumes from its checkpoints and evaluation records.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from finreason import configuration, console, evaluation, measure, models, stats, storage
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.provenance import provenance

NAME = "sft_ablation"
ROOT = Path(__file__).resolve().parent.parent
_LOG = logging.getLogger(NAME)
COMBINATIONS = (("full", "program"), ("lora", "program"), ("full", "reasoning"), ("lora", "reasoning"))
REASONING_NEW_TOKENS = 192  # reasoning targets run to ~220 tokens at most, ~75 on average


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dev", type=int, default=100, help="dev questions evaluated after each SFT (default 100)")
    parser.add_argument("--lora-lr", type=float, default=1e-3, help="SFT learning rate of the LoRA runs (default 1e-3)")
    parser.add_argument("--fresh", action="store_true", help="delete previous runs first")


def main(argv=None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = configuration.parse_args(__doc__, ["--PROFILE=cpu", *argv], add_arguments)
    overrides, _ = configuration.config_tokens(argv)
    root = Layout.of(cfg).bench_dir / NAME
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    base_path = models.resolve_model_path(cfg.MODEL_NAME, cfg.OUTPUT_DIR)

    # each combination: the real 03 and 04, timed, in its own folder
    rows = {}
    for finetune, target in COMBINATIONS:
        combo = f"{finetune}_{target}"
        run_dir = root / combo
        settings = [f"--FINETUNE={finetune}", f"--SFT_TARGET={target}"]
        if finetune == "lora":
            settings.append(f"--SFT_LEARNING_RATE={args.lora_lr}")
        if target == "reasoning":
            settings.append(f"--MAX_NEW_TOKENS={REASONING_NEW_TOKENS}")
        common = ["--PROFILE=cpu", *settings, *overrides, f"--OUTPUT_DIR={run_dir}", f"--MODEL_NAME={base_path}",
                  "--EVAL_SPLIT=dev", f"--EVAL_LIMIT={args.dev}", "--quiet"]
        for script, flags in (("03_format_data.py", ["--no-progress"]), ("04_train_sft.py", [])):
            _LOG.info("%s: %s", combo, script)
            record = measure.run([sys.executable, str(ROOT / script), *flags, *common], f"{combo} {script}", run_dir / "steps.jsonl")
            if record["exit_code"]:
                raise AblationError(f"{combo}: {script} failed (exit {record['exit_code']}); see its output above")
        run_cfg = configuration.resolve_config([token for token in common if token.startswith("--") and "=" in token])
        records = evaluation.read_stage(Layout(run_dir), "sft")
        rows[combo] = {"finetune": finetune, "target": target, "settings": settings, "records": records,
                       "seconds": record["seconds"], "peak_rss_gb": record["peak_rss_gb"],
                       "learning_rate": run_cfg.SFT_LEARNING_RATE,
                       "weights_sha256": models.weights_fingerprint(Layout(run_dir).weights("sft"))}

    result = compare(rows, cfg)
    result["provenance"] = provenance(cfg, model=cfg.MODEL_NAME)
    path = storage.atomic_write_json(Layout.of(cfg).bench_result(NAME), result)
    print(table(result))
    _LOG.info("wrote %s", path)
    return result


class AblationError(FinReasonError):
    """A run of the ablation failed."""


def compare(rows: dict[str, dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """Each combination on the questions every one answered, against full + program (the cpu
    profile's recipe): strict accuracy, its 95% CI, and the exact McNemar p-value."""
    ids = sorted(set.intersection(*(set(row["records"]) for row in rows.values())))
    reference = [bool(rows["full_program"]["records"][i]["strict"]) for i in ids]
    result: dict[str, Any] = {"n": len(ids), "evidence_mode": cfg.EVIDENCE_MODE, "combinations": {}}
    for combo, row in rows.items():
        strict = [bool(row["records"][i]["strict"]) for i in ids]
        result["combinations"][combo] = {
            **{key: row[key] for key in ("finetune", "target", "settings", "learning_rate", "seconds", "peak_rss_gb", "weights_sha256")},
            "strict": stats.rate(strict),
            "ci95": list(stats.bootstrap_ci(strict, cfg.BOOTSTRAP_SAMPLES, cfg.SEED)),
            "p_value_vs_full_program": stats.mcnemar(reference, strict),
        }
    return result


def table(result: dict[str, Any]) -> str:
    rows = []
    for row in result["combinations"].values():
        low, high = row["ci95"]
        rows.append((row["finetune"], row["target"], f"{row['learning_rate']:g}", stats.percent(row["strict"]),
                     f"[{stats.percent(low)}, {stats.percent(high)}]", f"{row['p_value_vs_full_program']:.2g}",
                     f"{row['seconds']:.0f}s", f"{row['peak_rss_gb']:.2f} GiB"))
    return console.table(rows, ("weights", "target", "lr", "strict", "95% CI", "p vs full+program", "SFT + eval", "peak mem"),
                         title=f"sft_ablation: n={result['n']} dev questions, {result['evidence_mode']} evidence", left=("weights", "target"))


if __name__ == "__main__":
    console.run_main(main)
