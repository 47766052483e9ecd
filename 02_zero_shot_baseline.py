"""Zero-shot baseline: the base model, no trained weights, on the evaluation split.

Command:  .venv/bin/python 02_zero_shot_baseline.py [--split dev|test] [--limit N] [--KEY=value ...]
          e.g. --PROFILE=cpu (SmolLM2-135M, 50 dev examples, a minute on a laptop CPU)
Reads:    FinQA (finreason.data: DATA_DIR, cache, download or the vendored subset), MODEL_NAME.
Writes:   <OUTPUT_DIR>/eval/zero_shot.jsonl (one scored record per example, appended per batch:
          rerunning resumes), <OUTPUT_DIR>/eval/zero_shot.summary.json (accuracies with 95% CIs,
          breakdowns, evidence mode, provenance).

The same as ``06_evaluate.py --stage zero_shot``: the prompt is exactly the one the trained
stages see (finreason.prompts), so later gains come from training, not from a different prompt.
Split and size default to EVAL_SPLIT and EVAL_LIMIT.
"""

from __future__ import annotations

from finreason import configuration, console, evaluation, outputlock


def main(argv=None) -> dict:
    args, cfg = configuration.parse_args(__doc__, argv, configuration.add_split_and_limit)
    # one writer per output folder: a second run on it stops here with the holder's PID
    with outputlock.hold(cfg.OUTPUT_DIR):
        return run(args, cfg)


def run(args, cfg) -> dict:
    summary = evaluation.run_stage(cfg, "zero_shot", split=args.split, limit=args.limit)
    print(evaluation.format_summary(summary))
    return summary


if __name__ == "__main__":
    console.run_main(main)
