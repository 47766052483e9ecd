"""The training rows 03_format_data.py writes: SFT prompt/completion pairs, GRPO prompts with
verifiable golds, and the self-check that every SFT target is strict-correct.

Prompts come from ``prompts.prompt_from_cfg`` (the one builder every stage uses); targets are
written here (``format_target``, in the SFT_TARGET style: the gold program and its value, after a
sentence citing the gold evidence for "reasoning"). The self-check scores every train target with
``scoring.score_completion``, the same check the evaluation and the GRPO reward use.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from finreason import retrieval, scoring
from finreason.programs import TABLE_OPS, ProgramError, cell_to_num, commuted, execute, format_value, split_steps, str_to_num, tokenize
from finreason.prompts import Evidence, evidence_from_cfg, prompt_from_cfg, ranked_evidence, redrawn_distractors
from finreason.document_facts import report_sentences

TARGET_STYLES = ("reasoning", "program")


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


def sft_rows(examples: Sequence[Any], tokenizer: Any, cfg: Any, label: str, progress: bool = False) -> list[dict[str, Any]]:
    """Prompt and target of each example, with the gold answer and table the reward's check
    needs: SFT trains on prompt + completion, and answers held-out rows (SFT_HOLDOUT) to choose its epoch."""
    return [_sft_row(example, tokenizer, cfg) for example in tqdm(examples, desc=label, disable=not progress)]


def _sft_row(example: Any, tokenizer: Any, cfg: Any, evidence: Evidence | None = None) -> dict[str, Any]:
    return {"id": example.id, "prompt": prompt_from_cfg(example, tokenizer, cfg, evidence=evidence),
            "completion": format_target(example, cfg.SFT_TARGET), "gold": gold_as_text(example.exe_ans), "table": example.table}


def first_examples(rows: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The rows of the first ``limit`` training examples (0 = all), every view of each included."""
    if limit <= 0:
        return list(rows)
    kept = set(list(dict.fromkeys(row["id"] for row in rows))[:limit])
    return [row for row in rows if row["id"] in kept]


def gold_fact_views(examples: Sequence[Any], tokenizer: Any, cfg: Any, progress: bool = False) -> list[dict[str, Any]]:
    """The SFT rows of ``examples`` prompted with their gold facts instead of retrieved evidence,
    marked ``"view": "gold"`` (SFT_EVIDENCE_VIEWS=both): the same question and target seen with
    the evidence that matters alone, beside the retrieved view with its distractors."""
    gold = cfg.replace(EVIDENCE_MODE="gold", SFT_EVIDENCE_VIEWS="one")
    return [{**row, "view": "gold"} for row in sft_rows(examples, tokenizer, gold, "sft gold views", progress)]


def commuted_program_views(examples: Sequence[Any], tokenizer: Any, cfg: Any, progress: bool = False) -> list[dict[str, Any]]:
    """The SFT rows of the ``examples`` whose program adds or multiplies two different arguments,
    with the target's program written with them swapped (``programs.commuted``), marked
    ``"view": "commuted"`` (SFT_PROGRAM_VIEWS=commuted): APOLLO's target-program augmentation, the
    same question and answer with a second right program."""
    variants = [(example, commuted(example.program)) for example in examples]
    rewritten = [dataclasses.replace(example, program=program) for example, program in variants if program is not None]
    return [{**row, "view": "commuted"} for row in sft_rows(rewritten, tokenizer, cfg, "sft commuted programs", progress)]


def distractor_views(examples: Sequence[Any], tokenizer: Any, cfg: Any, progress: bool = False) -> list[dict[str, Any]]:
    """``SFT_DISTRACTOR_VIEWS`` more SFT rows of each example, marked ``"view": "distractors_<n>"``:
    the same question and target, prompted with the gold facts its retrieved evidence holds and,
    beside them, other near-miss facts of the ranker's (``prompts.redrawn_distractors``, a draw
    seeded by SEED, the example and the view). What a model gets wrong is the row, year or
    operation among the facts shown; these views vary the facts it must tell the gold ones from."""
    ranker = retrieval.ranker_for(cfg)  # never None: configuration refuses SFT_DISTRACTOR_VIEWS without a ranker
    rows = []
    for example in tqdm(examples, desc="sft distractor views", disable=not progress):
        ranking = ranker.rank(example)
        for view in range(1, cfg.SFT_DISTRACTOR_VIEWS + 1):
            redrawn = redrawn_distractors(example, ranking, cfg.RETRIEVER_TOP_K, random.Random(f"{cfg.SEED}:{example.id}:{view}"))
            evidence = ranked_evidence(example, tokenizer, cfg.PROMPT_TOKEN_BUDGET, redrawn, cfg.RETRIEVER_TOP_K, ranker.name)
            rows.append({**_sft_row(example, tokenizer, cfg, evidence), "view": f"distractors_{view}"})
    return rows


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


# --- SFT targets --------------------------------------------------------------------------


def _program_numbers(program: str) -> list[float]:
    """The literal numbers a program uses (not #refs, constants or row names)."""
    try:
        steps = split_steps(tokenize(program)[:-1])
    except ProgramError:
        return []
    numbers = []
    for op, arg1, arg2 in steps:
        for arg in (arg2,) if op in TABLE_OPS else (arg1, arg2):
            if "#" in arg or "const" in arg:
                continue
            number = str_to_num(arg)
            if number is not None:
                numbers.append(number)
    return numbers


def _same_number(left: float | None, right: float) -> bool:
    return left is not None and abs(left - right) <= 1e-9 * max(1.0, abs(right))


def _cite_table_row(table: Sequence[Sequence[str]], index: int, numbers: Sequence[float], whole_row: bool) -> str | None:
    """'revenue is 5829 in 2008 and 5735 in 2007': the cells the program uses (all for table ops)."""
    if index >= len(table) or not table[index]:
        return None
    row, header = table[index], table[0] if table else []
    cells = []
    for column in range(1, len(row)):
        cell = str(row[column]).strip()
        if whole_row or any(_same_number(cell_to_num(cell), number) for number in numbers):
            label = str(header[column]).strip() if column < len(header) and index != 0 else ""
            cells.append(f"{cell} in {label}" if label else cell)
    if not cells:
        return None
    return f"{str(row[0]).strip() or 'the row'} is {' and '.join(cells)}"


def _cite_sentence(sentence: str, numbers: Sequence[float], window: int = 6, max_words: int = 30) -> str | None:
    """The words around the numbers the program uses (all of them when close), so the citation stays short."""
    words = sentence.split()
    hits = [
        position
        for position, word in enumerate(words)
        if any(_same_number(cell_to_num(word.strip(".;:")), number) for number in numbers)
    ]
    if not hits:
        return None
    last = hits[-1] if hits[-1] - hits[0] + 2 * window <= max_words else hits[0]
    start, end = max(0, hits[0] - window), min(len(words), last + window)
    return " ".join(words[start:end]).rstrip(" .,;")


def _reasoning(example: Any) -> str:
    """One sentence naming the evidence the gold program uses, from gold_inds."""
    table = [list(row) for row in (getattr(example, "table", None) or [])]
    sentences = report_sentences(example)
    numbers = _program_numbers(example.program)
    whole_row = any(op in example.program for op in TABLE_OPS)
    table_facts, text_facts = [], []
    for key in sorted(getattr(example, "gold_inds", {}) or {}, key=_fact_order):
        kind, _, raw_index = key.partition("_")
        if not raw_index.isdigit():
            continue
        index = int(raw_index)
        if kind == "table":
            table_facts.append(_cite_table_row(table, index, numbers, whole_row))
        elif kind == "text" and index < len(sentences):
            text_facts.append(_cite_sentence(sentences[index], numbers))
    table_facts = [fact for fact in table_facts if fact]
    text_facts = [fact for fact in text_facts if fact]
    parts = []
    if table_facts:
        parts.append("From the table: " + "; ".join(table_facts) + ".")
    if text_facts:
        parts.append("From the text: " + "; ".join(f'"{fact}"' for fact in text_facts) + ".")
    if not parts:
        shown = ", ".join(format_value(number) for number in numbers)
        return f"The calculation uses {shown}." if shown else "The calculation follows from the report."
    return " ".join(parts)


def _fact_order(key: str) -> tuple[str, int]:
    kind, _, raw_index = key.partition("_")
    return (kind, int(raw_index) if raw_index.isdigit() else 0)


def format_target(example: Any, style: str = "reasoning") -> str:
    """The SFT assistant text: the gold program and its value, after a sentence citing the gold
    evidence when ``style`` is "reasoning" (SFT_TARGET)."""
    if style not in TARGET_STYLES:
        raise ValueError(f"target style must be one of {TARGET_STYLES}, got {style!r}")
    answer = format_value(execute(example.program, example.table))
    program_lines = f"Program: {example.program}\nAnswer: {answer}"
    return f"{_reasoning(example)}\n{program_lines}" if style == "reasoning" else program_lines
