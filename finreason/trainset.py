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
from finreason.prompts import evidence_from_cfg, format_target, prompt_from_cfg


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


def evidence_coverage(examples: Sequence[Any], tokenizer: Any, cfg: Any) -> dict[str, Any]:
    """How often the prompts' evidence holds every gold fact, and its mean tokens: for train rows
    the cross-fitted ranking, so the number says what training prompts really miss."""
    with_gold = [example for example in examples if getattr(example, "gold_inds", None)]
    if not with_gold:
        return {"n": 0, "all_gold": None, "mean_evidence_tokens": None}
    chosen = [evidence_from_cfg(example, tokenizer, cfg) for example in with_gold]
    return {
        "n": len(with_gold),
        "all_gold": round(sum(set(e.gold_inds) <= evidence.kept_ids for e, evidence in zip(with_gold, chosen)) / len(with_gold), 4),
        "mean_evidence_tokens": round(sum(evidence.n_tokens for evidence in chosen) / len(chosen), 1),
    }


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
