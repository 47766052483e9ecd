"""The training rows 03_format_data.py writes: SFT prompt/completion pairs, GRPO prompts with
verifiable golds, and the self-check that every SFT target is strict-correct.

Prompts come from ``prompts.prompt_from_cfg`` (the one builder every stage uses) and targets from
``prompts.format_target`` in the SFT_TARGET style; the self-check scores every train target with
``scoring.score_completion``, the same check the evaluation and the GRPO reward use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from finreason import scoring
from finreason.programs import ProgramError, execute
from finreason.prompts import format_target, prompt_from_cfg


def gold_as_text(exe_ans: float | str) -> str:
    """GRPO's gold column: "yes"/"no", or repr(float) so no precision is lost in JSON."""
    return exe_ans if isinstance(exe_ans, str) else repr(float(exe_ans))


def check_targets(examples: Sequence[Any], style: str, progress: bool = False) -> dict[str, Any]:
    """Score every SFT target; sort the misses into inconsistent golds (the gold program does not
    give exe_ans, so no target can be right) and real failures (a bug in the target format)."""
    failures, inconsistent = [], []
    for example in tqdm(examples, desc="self-check train targets", disable=not progress):
        try:
            target = format_target(example, style)
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


def target_is_correct(example: Any, style: str) -> bool:
    """Dev rows are for validation loss: skip the rare example whose gold cannot be reproduced."""
    try:
        return scoring.score_completion(format_target(example, style), example.exe_ans, example.table).strict
    except ProgramError:
        return False


def sft_rows(examples: Sequence[Any], tokenizer: Any, cfg: Any, label: str, progress: bool = False) -> list[dict[str, str]]:
    return [
        {"id": example.id, "prompt": prompt_from_cfg(example, tokenizer, cfg), "completion": format_target(example, cfg.SFT_TARGET)}
        for example in tqdm(examples, desc=label, disable=not progress)
    ]


def grpo_rows(examples: Sequence[Any], tokenizer: Any, cfg: Any, progress: bool = False) -> list[dict[str, Any]]:
    return [
        {"id": example.id, "prompt": prompt_from_cfg(example, tokenizer, cfg), "gold": gold_as_text(example.exe_ans), "table": example.table}
        for example in tqdm(examples, desc="grpo prompts", disable=not progress)
    ]


def length_stats(rows: Sequence[dict[str, str]], tokenizer: Any, max_seq_len: int) -> dict[str, Any]:
    """Prompt + completion tokens per SFT row, and how many would be cut at MAX_SEQ_LEN."""
    if not rows:
        return {"max_tokens": 0, "mean_tokens": 0.0, "over_max_seq_len": 0}
    lengths = [len(ids) for ids in tokenizer([row["prompt"] + row["completion"] for row in rows], add_special_tokens=False)["input_ids"]]
    return {
        "max_tokens": max(lengths),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "over_max_seq_len": sum(length > max_seq_len for length in lengths),
    }
