"""Format FinQA for training: SFT prompt/completion pairs and GRPO prompts with verifiable golds.

Command:
    .venv/bin/python 03_format_data.py [--PROFILE=cpu] [--SFT_TRAIN_LIMIT=N] [--GRPO_TRAIN_LIMIT=N] [--KEY=value ...]

Reads FinQA (finreason.data) and the configured model's tokenizer (finreason.models). Writes,
atomically, under OUTPUT_DIR/data/:
- sft_train.jsonl  {"id", "prompt", "completion"}: prompt from finreason.prompts.build_prompt,
  completion from finreason.prompts.format_target (reasoning, gold Program:, Answer:)
- sft_dev.jsonl    the same for all of dev (validation loss)
- grpo_train.jsonl {"id", "prompt", "gold" ("yes"/"no" or repr(float)), "table"}
- manifest.json    provenance, tokenizer, counts, token lengths and the SFT-target self-check

Self-check: every train target (all of train, not only the limited slice) must be strict-correct
under finreason.scoring.score_completion. Examples whose gold program does not reproduce their
gold answer cannot have a correct target; they are left out and listed. Any other failure is a
bug in the target format: the script writes nothing and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from finreason import models, records, scoring
from finreason.cli import parse_args
from finreason.data import DataError, Example, iter_examples, load_from_config
from finreason.programs import ProgramError, execute
from finreason.prompts import build_prompt, format_target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def gold_as_text(exe_ans: float | str) -> str:
    """GRPO's gold column: "yes"/"no", or repr(float) so no precision is lost in JSON."""
    return exe_ans if isinstance(exe_ans, str) else repr(float(exe_ans))


def check_targets(examples: list[Example], progress: bool) -> dict[str, Any]:
    """Score every SFT target; sort the misses into inconsistent golds and real failures."""
    failures, inconsistent = [], []
    for example in tqdm(examples, desc="self-check train targets", disable=not progress):
        try:
            target = format_target(example)
        except ProgramError as error:
            inconsistent.append({"id": example.id, "reason": f"gold program does not execute: {error}"})
            continue
        if scoring.score_completion(target, example.exe_ans, example.table).strict:
            continue
        gold_value = execute(example.program, example.table)
        if not scoring.compare(gold_value, scoring.coerce_gold(example.exe_ans))[0]:
            inconsistent.append({"id": example.id, "reason": f"gold program gives {gold_value!r}, exe_ans is {example.exe_ans!r}"})
        else:
            failures.append({"id": example.id, "target": target})
    return {
        "checked": len(examples),
        "strict_correct": len(examples) - len(failures) - len(inconsistent),
        "failures": failures,
        "inconsistent_gold": inconsistent,
    }


def sft_records(examples: list[Example], tokenizer: Any, cfg: Any, label: str, progress: bool) -> list[dict[str, str]]:
    budget, few_shot = int(cfg.PROMPT_TOKEN_BUDGET), bool(cfg.FEW_SHOT_EXAMPLE)
    return [
        {"id": example.id, "prompt": build_prompt(example, tokenizer, budget, few_shot), "completion": format_target(example)}
        for example in tqdm(examples, desc=label, disable=not progress)
    ]


def grpo_records(examples: list[Example], tokenizer: Any, cfg: Any, progress: bool) -> list[dict[str, Any]]:
    budget, few_shot = int(cfg.PROMPT_TOKEN_BUDGET), bool(cfg.FEW_SHOT_EXAMPLE)
    return [
        {
            "id": example.id,
            "prompt": build_prompt(example, tokenizer, budget, few_shot),
            "gold": gold_as_text(example.exe_ans),
            "table": example.table,
        }
        for example in tqdm(examples, desc="grpo prompts", disable=not progress)
    ]


def length_stats(rows: list[dict[str, str]], tokenizer: Any, max_seq_len: int) -> dict[str, Any]:
    """Prompt + completion tokens per SFT record, and how many would be cut at MAX_SEQ_LEN."""
    if not rows:
        return {"max_tokens": 0, "mean_tokens": 0.0, "over_max_seq_len": 0}
    encoded = tokenizer([row["prompt"] + row["completion"] for row in rows], add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    return {
        "max_tokens": max(lengths),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "over_max_seq_len": sum(length > max_seq_len for length in lengths),
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    records.atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def iter_limit(examples: list[Example], limit: int) -> list[Example]:
    """The first ``limit`` examples in file order (0 = all): a fixed, reproducible slice."""
    return examples[:limit] if limit > 0 else examples


def _target_ok(example: Example) -> bool:
    """Dev records are for validation loss: skip the rare example whose gold cannot be reproduced."""
    try:
        return scoring.score_completion(format_target(example), example.exe_ans, example.table).strict
    except ProgramError:
        return False


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, cfg = parse_args(__doc__, argv, add_arguments)
    progress = not args.no_progress
    for key in ("SFT_TRAIN_LIMIT", "GRPO_TRAIN_LIMIT"):
        if cfg[key] < 0:
            raise SystemExit(f"--{key} must be 0 (all) or a positive count, got {cfg[key]}")
    out_dir = Path(cfg.OUTPUT_DIR) / "data"

    # data
    try:
        bundle = load_from_config(cfg, splits=("train", "dev"))
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    train = bundle["train"]
    if not train:
        raise SystemExit("error: the train split has no usable examples")

    # self-check: every SFT target over ALL of train
    check = check_targets(train, progress)
    print(f"[format] SFT targets strict-correct: {check['strict_correct']}/{check['checked']}", file=sys.stderr)
    if check["inconsistent_gold"]:
        print(f"[format] left out {len(check['inconsistent_gold'])} examples whose gold program does not give exe_ans", file=sys.stderr)
    if check["failures"]:
        shown = ", ".join(failure["id"] for failure in check["failures"][:5])
        raise SystemExit(f"error: {len(check['failures'])} SFT targets are not strict-correct (e.g. {shown}); nothing written")
    excluded = {item["id"] for item in check["inconsistent_gold"]}

    # tokenizer
    tokenizer = models.load_tokenizer(cfg)

    # format
    usable_train = [example for example in train if example.id not in excluded]
    sft_train = sft_records(list(iter_limit(usable_train, cfg.SFT_TRAIN_LIMIT)), tokenizer, cfg, "sft train", progress)
    sft_dev = sft_records([e for e in iter_examples(bundle, "dev") if _target_ok(e)], tokenizer, cfg, "sft dev", progress)
    grpo_train = grpo_records(list(iter_limit(usable_train, cfg.GRPO_TRAIN_LIMIT)), tokenizer, cfg, progress)

    # write
    write_jsonl(out_dir / "sft_train.jsonl", sft_train)
    write_jsonl(out_dir / "sft_dev.jsonl", sft_dev)
    write_jsonl(out_dir / "grpo_train.jsonl", grpo_train)
    manifest = {
        "files": {"sft_train": "sft_train.jsonl", "sft_dev": "sft_dev.jsonl", "grpo_train": "grpo_train.jsonl"},
        "counts": {"sft_train": len(sft_train), "sft_dev": len(sft_dev), "grpo_train": len(grpo_train)},
        "tokenizer": {"model_name": cfg.MODEL_NAME, "class": type(tokenizer).__name__},
        "prompt": {"token_budget": cfg.PROMPT_TOKEN_BUDGET, "few_shot": cfg.FEW_SHOT_EXAMPLE},
        "sft_train_lengths": length_stats(sft_train, tokenizer, cfg.MAX_SEQ_LEN),
        "self_check": check,
        "provenance": records.provenance(cfg, data=bundle.describe(), model=cfg.MODEL_NAME),
    }
    records.atomic_write_json(out_dir / "manifest.json", manifest)
    print(f"[format] wrote {manifest['counts']} to {out_dir}", file=sys.stderr)
    if manifest["sft_train_lengths"]["over_max_seq_len"]:
        print(f"[format] warning: {manifest['sft_train_lengths']['over_max_seq_len']} SFT records exceed MAX_SEQ_LEN={cfg.MAX_SEQ_LEN}", file=sys.stderr)
    return manifest


if __name__ == "__main__":
    main()
