"""Evaluate a stage (zero_shot, sft, grpo) and compare every stage present; or score a file.

Commands:
  .venv/bin/python 06_evaluate.py --stage sft [--weights DIR] [--split dev|test] [--limit N] [--KEY=value ...]
  .venv/bin/python 06_evaluate.py --score FILE --split dev|test [--json] [--out VERDICTS.jsonl [--overwrite]]
  .venv/bin/python 06_evaluate.py --questions FILE --stage zero_shot|sft|grpo [--weights DIR] [--limit N] [--out PRED.jsonl [--overwrite]] [--json]
  .venv/bin/python 06_evaluate.py --compare A B --questions FILE [--json]

Evaluation mode reads FinQA, the base model (MODEL_NAME) and the stage's trained weights (default
<OUTPUT_DIR>/<stage>/adapter or <OUTPUT_DIR>/<stage>/model, written by 04_train_sft.py /
05_train_grpo.py) and writes <OUTPUT_DIR>/eval/<stage>.jsonl (resumable) and <stage>.summary.json,
then compares all stages with results on their shared examples (exact McNemar test) into
<OUTPUT_DIR>/eval/comparison.json. On the test split it also writes
<OUTPUT_DIR>/eval/<stage>.test_predictions.json in FinQA's official prediction format.

Scoring mode reads a predictions file (FinQA's official JSON list, or JSONL of
{"id", "completion"}) and scores it against the split, without loading any model: --json prints
exactly one JSON object on stdout (messages go to stderr); --out writes one verdict per line
(checked writable before any scoring). An existing --out that is not a records file of that kind
is refused unless --overwrite, which keeps it beside, renamed; it is never edited.

Questions mode answers a file of your own questions over any tables and text (JSONL or a JSON
list; the format is in finreason/questions.py and the README, "Your own documents") with the
stage's model and retrieved evidence, batched and resumable like every evaluation (a changed file
or model starts afresh). One record per question (evidence kept, completion, program with each
step's value, predicted value, verdicts where the file gives an answer) goes to --out or
<OUTPUT_DIR>/eval/questions/<file>.<stage>.jsonl, the summary to <file>.<stage>.summary.json;
invalid lines are counted and named, the rest answered. --compare A B pairs two stages' results
on the same file (exact McNemar, strict and tolerant) into <file>.comparison.json.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from finreason import configuration, console, data, evaluation, outputlock, scorefile, storage
from finreason.errors import FinReasonError
from finreason.layout import STAGES

_LOG = logging.getLogger("evaluate")


class UsageError(FinReasonError):
    """Options that do not go together."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=STAGES, help="which model to evaluate")
    parser.add_argument("--weights", "--adapter", dest="weights", metavar="DIR",
                        help="trained weights: an adapter or model folder (default <OUTPUT_DIR>/<stage>/adapter|model)")
    configuration.add_split_and_limit(parser)
    parser.add_argument("--score", metavar="FILE", help="score a predictions file instead of running a model")
    parser.add_argument("--questions", metavar="FILE", help="answer a file of your own questions (JSONL or a JSON list)")
    parser.add_argument("--compare", nargs=2, choices=STAGES, metavar=("A", "B"),
                        help="with --questions: paired McNemar test of two stages' results on the file")
    parser.add_argument("--json", action="store_true", help="with --score/--questions/--compare: print one JSON object on stdout")
    parser.add_argument("--out", metavar="FILE.jsonl", help="with --score: one verdict per example; with --questions: one record per question")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --out replace an existing file that is not a records file of this kind (it is kept beside, renamed)")


def score_mode(args: argparse.Namespace, cfg) -> dict:
    """Score a file: data and pure-python scoring only (no torch), so it takes seconds."""
    if args.out:
        # refuse an unwritable --out, or the user's own file, before the scoring work, not after it
        storage.claim_output(args.out, scorefile.VERDICT_KEYS, args.overwrite, not_same_as=[args.score])
    split = args.split or cfg.EVAL_SPLIT
    # both splits, so predictions for the other one are named as such instead of scoring n = 0
    bundle = data.load_from_config(cfg, splits=("dev", "test"))
    summary, verdicts = scorefile.score_file(args.score, split, bundle, rel_tol=cfg.LENIENT_REL_TOL)
    if args.out:
        storage.write_jsonl(args.out, verdicts)
        _LOG.info("wrote %d verdicts to %s", len(verdicts), args.out)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        print(scorefile.format_summary_table(summary))
    return summary


def _print(summary: dict, as_json: bool, text: str) -> None:
    print(json.dumps(summary, ensure_ascii=False, default=str) if as_json else text)


def questions_mode(args: argparse.Namespace, cfg) -> dict:
    """Answer (or, with --compare, pair two stages' results on) a file of questions."""
    if args.split or args.score:
        raise UsageError("--questions reads its own file: drop --split/--score")
    if args.compare:
        if args.stage or args.weights or args.out or args.limit is not None:
            raise UsageError("--compare A B --questions FILE reads results already written: drop --stage/--weights/--out/--limit")
        table = evaluation.compare_questions(cfg, args.questions, *args.compare)
        _print(table, args.json, evaluation.format_question_comparison(table))
        return table
    if not args.stage:
        raise UsageError("--questions FILE needs --stage zero_shot|sft|grpo (or --compare A B)")
    summary = evaluation.run_questions(cfg, args.stage, args.questions, weights=args.weights, limit=args.limit, out=args.out,
                                       overwrite=args.overwrite)
    _print(summary, args.json, evaluation.format_question_summary(summary))
    return summary


def main(argv=None) -> dict:
    args, cfg = configuration.parse_args(__doc__.splitlines()[0], argv, add_arguments)
    if args.score and not _writes_inside(args.out, cfg.OUTPUT_DIR):
        return run(args, cfg)  # reads the output folder only: no lock, so it runs beside a writer
    # one writer per output folder: a second run on it stops here with the holder's PID
    with outputlock.hold(cfg.OUTPUT_DIR):
        return run(args, cfg)


def _writes_inside(out: str | None, output_dir: str) -> bool:
    if not out:
        return False
    return Path(output_dir).resolve() in Path(out).resolve().parents


def run(args: argparse.Namespace, cfg) -> dict:
    if args.questions:
        return questions_mode(args, cfg)
    if args.compare:
        raise UsageError("--compare A B pairs two stages on a questions file: add --questions FILE")
    if args.score:
        if args.stage or args.weights:
            raise UsageError("--score scores a file; drop --stage/--weights (or drop --score to evaluate a model)")
        return score_mode(args, cfg)
    if not args.stage:
        raise UsageError("pass --stage zero_shot|sft|grpo to evaluate a model, or --score FILE to score predictions")
    if args.json or args.out or args.overwrite:
        raise UsageError("--json, --out and --overwrite belong to --score and --questions modes")
    summary = evaluation.run_stage(cfg, args.stage, weights=args.weights, split=args.split, limit=args.limit)
    print(evaluation.format_summary(summary))
    return summary


if __name__ == "__main__":
    console.run_main(main)
