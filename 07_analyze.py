"""Analyse every stage that has been evaluated: accuracy with CIs, breakdowns, error categories, curves.

    python 07_analyze.py [--PROFILE=cpu] [--OUTPUT_DIR=outputs]

Reads  OUTPUT_DIR/eval/<stage>.jsonl and <stage>.summary.json (whatever stages exist),
       OUTPUT_DIR/sft/ and OUTPUT_DIR/grpo/ training logs (trainer_state.json, else TensorBoard runs/),
       and the FinQA examples (for gold programs, to categorise errors).
Writes OUTPUT_DIR/report.md, OUTPUT_DIR/figures/*.png, OUTPUT_DIR/analysis.json (numbers + provenance).
Missing stages are listed in the report, never an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from finreason.analysis import TRAINING_STAGES, build_report, load_stages, load_training_log
from finreason.cli import parse_args
from finreason.data import DataError, load_from_config
from finreason.records import atomic_write_json, provenance


def main(argv=None) -> dict:
    _, cfg = parse_args(__doc__.splitlines()[0], argv)
    out_dir = Path(cfg.OUTPUT_DIR)

    # eval results: every stage present, in pipeline order
    stages = load_stages(out_dir / "eval")
    print(f"[analyze] stages found: {', '.join(stages) or 'none'}", file=sys.stderr)

    # data: gold programs for the error categories; the report still works without them
    examples, data_note, data_description = {}, "", None
    if any(stage.records for stage in stages.values()):
        try:
            bundle = load_from_config(cfg)
        except DataError as error:
            data_note = f"FinQA could not be loaded ({error}); program errors are left unclassified."
        else:
            data_description = bundle.describe()
            examples = {example.id: example for split in bundle.splits.values() for example in split}
            if not bundle.full_release:
                data_note = "Data: a SUBSET of FinQA (not comparable to published test scores)."

    # training logs
    logs = {stage: load_training_log(out_dir / stage, stage) for stage in TRAINING_STAGES}

    # report + figures
    numbers = build_report(
        out_dir, stages, logs, examples,
        rel_tol=cfg.LENIENT_REL_TOL, samples=cfg.BOOTSTRAP_SAMPLES, seed=cfg.SEED, data_note=data_note,
    )
    atomic_write_json(out_dir / "analysis.json", {**numbers, "provenance": provenance(cfg, data=data_description)})
    if numbers["missing_stages"]:
        print(f"[analyze] missing stages: {', '.join(numbers['missing_stages'])}", file=sys.stderr)
    print(f"[analyze] wrote {numbers['report']} and {len(numbers['figures'])} figures", file=sys.stderr)
    return numbers


if __name__ == "__main__":
    main()
