"""Evaluate a stage (zero_shot, sft, grpo) and compare every stage present; or score a file.

Commands:
  .venv/bin/python 06_evaluate.py --stage sft [--adapter DIR] [--split dev|test] [--limit N] [--KEY=value ...]
  .venv/bin/python 06_evaluate.py --score FILE --split dev|test [--json] [--out VERDICTS.jsonl]

Evaluation mode reads FinQA and the base model (MODEL_NAME) plus the stage's LoRA adapter
(default <OUTPUT_DIR>/<stage>/adapter, written by 04_train_sft.py / 05_train_grpo.py) and writes
<OUTPUT_DIR>/eval/<stage>.jsonl (resumable) and <stage>.summary.json, then compares all stages
with results on their shared examples (exact McNemar test) into <OUTPUT_DIR>/eval/comparison.json.
On the test split it also writes <OUTPUT_DIR>/eval/<stage>.test_predictions.json in FinQA's
official prediction format.

Scoring mode reads a predictions file (FinQA's official JSON list, or JSONL of
{"id", "completion"}) and scores it against the split, without loading any model: --json prints
exactly one JSON object on stdout (messages go to stderr); --out writes one verdict per line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from finreason import cli, records

STAGES = ("zero_shot", "sft", "grpo")
TRAINED_BY = {"sft": "04_train_sft.py", "grpo": "05_train_grpo.py"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=STAGES, help="which model to evaluate")
    parser.add_argument("--adapter", help="LoRA adapter folder (default <OUTPUT_DIR>/<stage>/adapter)")
    parser.add_argument("--split", choices=("dev", "test"), help="FinQA split (default EVAL_SPLIT)")
    parser.add_argument("--limit", type=int, help="first N examples of the split (default EVAL_LIMIT; 0 = all)")
    parser.add_argument("--score", metavar="FILE", help="score a predictions file instead of running a model")
    parser.add_argument("--json", action="store_true", help="with --score: print one JSON object on stdout")
    parser.add_argument("--out", metavar="VERDICTS.jsonl", help="with --score: write one verdict per example")


def score_mode(args: argparse.Namespace, cfg) -> dict:
    """Score a file: data and pure-python scoring only (no torch), so it takes seconds."""
    from finreason import data, scorefile

    split = args.split or cfg.EVAL_SPLIT
    try:
        bundle = data.load_from_config(cfg, splits=(split,))
        summary, verdicts = scorefile.score_file(args.score, split, bundle, rel_tol=cfg.LENIENT_REL_TOL)
    except (scorefile.ScoreFileError, data.DataError) as error:
        sys.exit(f"error: {error}")
    if args.out:
        lines = "".join(json.dumps(verdict, ensure_ascii=False, default=str) + "\n" for verdict in verdicts)
        records.atomic_write_text(args.out, lines)
        print(f"[score] wrote {len(verdicts)} verdicts to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        print(scorefile.format_summary_table(summary))
    return summary


def stage_adapter(args: argparse.Namespace, cfg) -> str | None:
    """The adapter to load for the stage, or exit naming the script that makes it."""
    if args.stage == "zero_shot":
        if args.adapter:
            sys.exit("error: --stage zero_shot evaluates the base model; drop --adapter (or choose --stage sft/grpo)")
        return None
    adapter = Path(args.adapter) if args.adapter else Path(cfg.OUTPUT_DIR) / args.stage / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        sys.exit(
            f"error: no {args.stage.upper()} adapter at {adapter}: run {TRAINED_BY[args.stage]} first "
            f"(with the same --OUTPUT_DIR/--PROFILE), or pass --adapter PATH"
        )
    return str(adapter)


def main(argv=None) -> dict:
    args, cfg = cli.parse_args(__doc__.splitlines()[0], argv, add_arguments)
    if args.score:
        return score_mode(args, cfg)
    if not args.stage:
        sys.exit("error: pass --stage zero_shot|sft|grpo to evaluate a model, or --score FILE to score predictions")
    if args.json or args.out:
        sys.exit("error: --json and --out belong to --score mode")
    if args.limit is not None and args.limit < 0:
        sys.exit("error: --limit must be 0 (all) or a positive number")
    split = args.split or cfg.EVAL_SPLIT
    limit = cfg.EVAL_LIMIT if args.limit is None else args.limit
    adapter = stage_adapter(args, cfg)

    # seed
    import torch

    torch.manual_seed(cfg.SEED)

    # data
    from finreason import data

    try:
        bundle = data.load_from_config(cfg, splits=(split,))
    except data.DataError as error:
        sys.exit(f"error: {error}")
    examples = list(data.iter_examples(bundle, split, limit))

    # model + adapter
    from finreason import evaluation, models

    try:
        loaded = models.load_model(cfg, adapter=adapter)
    except models.ModelError as error:
        sys.exit(f"error: {error}")

    # evaluate
    summary = evaluation.evaluate(loaded, examples, cfg, args.stage, cfg.OUTPUT_DIR, split=split, data=bundle.describe())
    print(evaluation.format_summary(summary))

    # official-format predictions (test split)
    eval_dir = Path(cfg.OUTPUT_DIR) / "eval"
    if split == "test":
        done = evaluation.read_stage(cfg.OUTPUT_DIR, args.stage)
        path = evaluation.write_official_predictions([done[e.id] for e in examples if e.id in done], eval_dir / f"{args.stage}.test_predictions.json")
        print(f"official-format predictions: {path}")

    # compare every stage with results, on shared examples
    table = evaluation.compare_stages(cfg.OUTPUT_DIR, STAGES)
    if len(table["stages"]) > 1:
        print(evaluation.format_comparison(table))
        records.atomic_write_json(eval_dir / "comparison.json", {**table, "provenance": records.provenance(cfg, data=bundle.describe())})
    return summary


if __name__ == "__main__":
    main()
