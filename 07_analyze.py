"""Analyse every stage that has been evaluated: accuracy with CIs, breakdowns, error categories, curves.

    python 07_analyze.py [--PROFILE=cpu] [--OUTPUT_DIR=outputs]

Reads  OUTPUT_DIR/eval/<stage>.jsonl and <stage>.summary.json (whatever stages exist),
       OUTPUT_DIR/sft/ and OUTPUT_DIR/grpo/ training logs (step_log.jsonl, trainer_state.json or
       TensorBoard runs/), and the FinQA examples (for gold programs, to categorise errors).
Writes OUTPUT_DIR/report.md, OUTPUT_DIR/figures/*.png, OUTPUT_DIR/analysis.json (numbers + provenance).
Missing stages are listed in the report, never an error; each stage's evidence mode is shown.
"""

from __future__ import annotations

import logging

from finreason import configuration, console, outputlock, storage, training
from finreason.analysis import load_stages, load_training_log
from finreason.data import DataError, load_from_config
from finreason.layout import TRAINED_STAGES, Layout
from finreason.provenance import provenance
from finreason.report import build_report

_LOG = logging.getLogger("analyze")


def main(argv=None) -> dict:
    _, cfg = configuration.parse_args(__doc__.splitlines()[0], argv)
    # one writer per output folder: a second run on it stops here with the holder's PID
    with outputlock.hold(cfg.OUTPUT_DIR):
        return run(cfg)


def run(cfg) -> dict:
    where = Layout.of(cfg)

    # eval results: every stage present, in pipeline order
    stages = load_stages(where)
    _LOG.info("stages found: %s", ", ".join(stages) or "none")

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
    logs = {stage: load_training_log(where.stage_dir(stage), stage) for stage in TRAINED_STAGES}

    # report + figures
    numbers = build_report(
        where, stages, logs, examples,
        rel_tol=cfg.LENIENT_REL_TOL, samples=cfg.BOOTSTRAP_SAMPLES, seed=cfg.SEED, data_note=data_note,
        stale=training.stale_weights(where),
    )
    storage.atomic_write_json(where.analysis, {**numbers, "provenance": provenance(cfg, data=data_description)})
    if numbers["missing_stages"]:
        _LOG.info("missing stages: %s", ", ".join(numbers["missing_stages"]))
    _LOG.info("wrote %s and %d figures", numbers["report"], len(numbers["figures"]))
    return numbers


if __name__ == "__main__":
    console.run_main(main)
