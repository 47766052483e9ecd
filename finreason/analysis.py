"""What ``07_analyze.py`` reports, as numbers: stage results, breakdowns, error categories, training logs.

Inputs are whatever exists under ``OUTPUT_DIR``: ``eval/<stage>.jsonl`` (one record per question,
written by ``finreason.evaluation``), ``eval/<stage>.summary.json``, and the training logs of
``sft/`` and ``grpo/`` (the trainers' ``step_log.jsonl``, a checkpoint's ``trainer_state.json``
or the TensorBoard event files under ``runs/``, whichever reaches furthest). Nothing here assumes
a stage exists: missing stages are listed, never fatal. ``finreason.report`` turns these numbers
into report.md and figures.

Error categories (``categorize``) are defined on one record plus, when available, its FinQA
example (for the gold program and the document's numbers). See ``CATEGORY_DEFINITIONS``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finreason import stats
from finreason.layout import STAGES, STEP_LOG, Layout
from finreason.programs import ProgramError, TABLE_OPS, split_steps, str_to_num, tokenize
from finreason.storage import read_jsonl
from finreason.training import read_step_log

# Order matters: the first matching category wins (see categorize).
CATEGORY_DEFINITIONS = {
    "no_answer": "no Program line and no Answer line that parses: nothing could be scored",
    "imprecise": "value within LENIENT_REL_TOL of gold but not the official exact match (rounding)",
    "wrong_scale": "value equals gold x100, /100, x1000, /1000, x1e6 or /1e6 within LENIENT_REL_TOL: "
    "percent vs fraction, thousands vs millions",
    "unparseable_program": "a Program line is present but does not execute (syntax, unknown table row, "
    "bad #reference, division by zero) and no Answer line rescued it",
    "wrong_numbers": "the program executes but its operands (numbers and table rows, constants excluded) "
    "are not the gold program's, e.g. numbers taken from the wrong cell, year or sentence",
    "wrong_operation": "the program uses exactly the gold program's operands but combines them "
    "differently (other operations, order or sign)",
    "wrong_answer_only": "no Program line; the Answer line parses but is wrong, so the cause cannot be located",
    "unclassified": "the program executes but the gold program is unknown (example not in the loaded data)",
}
CATEGORY_LABELS = {
    "no_answer": "no answer",
    "imprecise": "rounding",
    "wrong_scale": "wrong scale",
    "unparseable_program": "unparseable program",
    "wrong_numbers": "wrong numbers",
    "wrong_operation": "wrong operation",
    "wrong_answer_only": "wrong answer (no program)",
    "unclassified": "unclassified",
}
SCALE_FACTORS = (100.0, 0.01, 1000.0, 0.001, 1e6, 1e-6)
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")


# --- eval records ----------------------------------------------------------------------------

@dataclass
class StageResult:
    """One evaluated stage: its records and summary (either may be empty)."""

    name: str
    records: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.records) if self.records else int(self.summary.get("n", 0) or 0)

    @property
    def evidence_mode(self) -> str:
        """How the stage's prompts got their evidence; results from before the mode existed were retrieved."""
        return str(self.summary.get("evidence_mode") or "retrieved")

    @property
    def retriever(self) -> dict[str, Any] | None:
        """What chose a retrieved-evidence stage's facts (``retrieval.describe``), when recorded."""
        value = self.summary.get("retriever")
        return value if isinstance(value, dict) else None


def stage_sort_key(name: str) -> tuple[int, int, str]:
    """Pipeline order: zero-shot, then SFT, then GRPO stages (other names after their stage)."""
    for rank, expected in enumerate(STAGES):
        if name == expected or name.startswith(expected + "_"):
            return (rank, name != expected, name)
    return (len(STAGES), 1, name)


def load_stages(where: Layout) -> dict[str, StageResult]:
    """Every stage with records or a summary under ``eval/``, in pipeline order."""
    if not where.eval_dir.is_dir():
        return {}
    names = {path.name[: -len(".jsonl")] for path in where.eval_dir.glob("*.jsonl")}
    names |= {path.name[: -len(".summary.json")] for path in where.eval_dir.glob("*.summary.json")}
    stages = {}
    for name in sorted(names, key=stage_sort_key):
        records = list(read_jsonl(where.eval_records(name)))
        summary: dict[str, Any] = {}
        summary_path = where.eval_summary(name)
        if summary_path.is_file():
            try:
                loaded = json.loads(summary_path.read_text(encoding="utf-8"))
                summary = loaded if isinstance(loaded, dict) else {}
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                summary = {}
        if records or summary:
            stages[name] = StageResult(name, records, summary)
    return stages


def _metric_from_summary(summary: Mapping[str, Any], metric: str) -> tuple[float, float, float] | None:
    """(accuracy, low, high) as ``finreason.evaluation.summarize`` states them, when it does."""
    key = {"strict": "execution_accuracy", "lenient": "lenient_accuracy"}[metric]
    acc, ci = summary.get(key), summary.get(f"{key}_ci95")
    if isinstance(acc, (int, float)) and isinstance(ci, Sequence) and len(ci) == 2:
        if all(isinstance(bound, (int, float)) for bound in ci):
            return (float(acc), float(ci[0]), float(ci[1]))
    return None


def accuracy(stage: StageResult, metric: str, samples: int, seed: int) -> tuple[float, float, float]:
    """(accuracy, ci_low, ci_high) for ``metric`` in {"strict", "lenient"}: the summary's own
    numbers when it has them (so the report matches 06_evaluate), else bootstrapped from records."""
    stated = _metric_from_summary(stage.summary, metric)
    if stated is not None:
        return stated
    values = [float(bool(r.get(metric))) for r in stage.records]
    if not values:
        return (math.nan, math.nan, math.nan)
    low, high = stats.bootstrap_ci(values, samples, seed)
    return (float(np.mean(values)), low, high)


def breakdown(records: Iterable[Mapping[str, Any]], key: str) -> dict[str, tuple[int, float]]:
    """Strict accuracy per group: ``key`` is "operation" (a record counts once for each distinct gold
    operation), "num_steps" (1, 2, 3, 4+) or any record field such as "evidence_source"."""
    hits: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if key == "operation":
            groups = sorted(set(record.get("operations") or [])) or ["unknown"]
        elif key == "num_steps":
            steps = record.get("num_steps")
            groups = [("4+" if steps >= 4 else str(steps)) if isinstance(steps, int) else "unknown"]
        else:
            groups = [str(record.get(key) or "unknown")]
        for group in groups:
            hits[group].append(float(bool(record.get("strict"))))
    return {group: (len(vals), float(np.mean(vals))) for group, vals in sorted(hits.items())}


# --- error categories ------------------------------------------------------------------------

def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and value not in ("yes", "no"):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _close(a: float, b: float, rel_tol: float) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


def _key(number: float) -> float:
    """Numbers compared by 6 significant digits, sign ignored ((1,234) in a table is -1234)."""
    return float(f"{abs(number):.6g}")


def program_operands(program: str) -> set[tuple[str, Any]] | None:
    """What a program reads: ("num", value) per literal and ("row", name) per table step; constants
    and #references excluded. None when the program does not parse."""
    try:
        steps = split_steps(tokenize(program)[:-1])
    except ProgramError:
        return None
    if not steps:
        return None
    operands: set[tuple[str, Any]] = set()
    for op, arg1, arg2 in steps:
        if op in TABLE_OPS:
            if "#" not in arg1:
                operands.add(("row", arg1.strip().lower()))
            continue
        for arg in (arg1, arg2):
            if "#" in arg or arg.strip().startswith("const_"):
                continue
            number = str_to_num(arg.strip())
            if number is not None:
                operands.add(("num", _key(number)))
    return operands


def document_numbers(example: Any) -> set[float]:
    """Every number written in the example's table and text, as-is and as a percent fraction."""
    cells = [cell for row in getattr(example, "table", []) for cell in row]
    numbers: set[float] = set()
    for chunk in [*cells, *getattr(example, "text", [])]:
        for match in _NUMBER.findall(str(chunk)):
            try:
                value = float(match.replace(",", ""))
            except ValueError:
                continue
            numbers.update({_key(value), _key(value / 100.0)})
    return numbers


@dataclass(frozen=True)
class Category:
    name: str  # "correct" or a key of CATEGORY_DEFINITIONS
    not_in_document: bool = False  # wrong_numbers only: some operand appears nowhere in the document


def categorize(record: Mapping[str, Any], example: Any = None, rel_tol: float = 0.01) -> Category:
    """The error category of one evaluation record (first matching rule in CATEGORY_DEFINITIONS)."""
    if record.get("strict"):
        return Category("correct")
    program = record.get("program") or None
    source = record.get("source") or "none"
    predicted = record.get("predicted")
    if source == "none" and not program:
        return Category("no_answer")
    pred_num, gold_num = _as_number(predicted), _as_number(record.get("gold"))
    if pred_num is not None and gold_num is not None:
        if _close(pred_num, gold_num, rel_tol):
            return Category("imprecise")
        if any(_close(pred_num * factor, gold_num, rel_tol) for factor in SCALE_FACTORS):
            return Category("wrong_scale")
    if program and source != "program":
        return Category("unparseable_program")
    if source != "program":
        return Category("wrong_answer_only")
    if example is None:
        return Category("unclassified")
    predicted_ops = program_operands(program)
    gold_ops = program_operands(example.program)
    if predicted_ops is None or gold_ops is None:
        return Category("unclassified")
    if predicted_ops != gold_ops:
        in_doc = document_numbers(example)
        missing = any(kind == "num" and value not in in_doc for kind, value in predicted_ops)
        return Category("wrong_numbers", not_in_document=missing)
    return Category("wrong_operation")


def category_table(
    records: Iterable[Mapping[str, Any]], examples: Mapping[str, Any], rel_tol: float
) -> tuple[Counter, int, dict[str, str]]:
    """(count per category incl. "correct", wrong_numbers not in the document, one example id per category)."""
    counts: Counter = Counter()
    not_in_doc = 0
    sample_ids: dict[str, str] = {}
    for record in records:
        category = categorize(record, examples.get(str(record.get("id"))), rel_tol)
        counts[category.name] += 1
        not_in_doc += category.not_in_document
        sample_ids.setdefault(category.name, str(record.get("id")))
    return counts, not_in_doc, sample_ids


# --- training logs ---------------------------------------------------------------------------

@dataclass
class TrainingLog:
    stage: str
    source: str  # path of the trainer_state.json or the runs/ folder read
    series: dict[str, list[tuple[int, float]]]

    def get(self, *names: str) -> list[tuple[int, float]]:
        """The first series present under any of ``names`` (TRL renames metrics between releases)."""
        for name in names:
            if self.series.get(name):
                return self.series[name]
        return []


def _from_tensorboard(runs: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = defaultdict(dict)
    for event_file in sorted(runs.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            name = tag.split("/", 1)[1] if tag.startswith(("train/", "eval/")) else tag
            if tag.startswith("eval/"):
                name = f"eval_{name}"
            for event in accumulator.Scalars(tag):
                series[name][int(event.step)] = float(event.value)
    return {name: sorted(points.items()) for name, points in series.items()}


def _from_trainer_state_entries(entries: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for entry in entries:
        step = entry.get("step")
        for key, value in entry.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                series[key].append((int(step), float(value)))
    return dict(series)


def _last_step(series: Mapping[str, list[tuple[int, float]]]) -> int:
    return max((points[-1][0] for points in series.values() if points), default=-1)


def load_training_log(stage_dir: str | Path, stage: str) -> TrainingLog | None:
    """The most complete log under ``stage_dir``: the trainer's ``step_log.jsonl``, a
    checkpoint's ``trainer_state.json`` or the TensorBoard scalars in ``runs/`` (the one reaching the
    furthest step wins; ties go in that order). None when there is no log at all."""
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        return None
    candidates: list[tuple[Path, dict[str, list[tuple[int, float]]]]] = []
    if (stage_dir / STEP_LOG).is_file():
        candidates.append((stage_dir / STEP_LOG, _from_trainer_state_entries(read_step_log(stage_dir / STEP_LOG))))
    for path in sorted(stage_dir.rglob("trainer_state.json")):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue
        if isinstance(state, dict):
            candidates.append((path, _from_trainer_state_entries(
                e for e in state.get("log_history", []) if isinstance(e, dict) and isinstance(e.get("step"), int))))
    runs = stage_dir / "runs"
    if runs.is_dir() and any(runs.rglob("events.out.tfevents.*")):
        candidates.append((runs, _from_tensorboard(runs)))
    candidates = [(path, series) for path, series in candidates if series]
    if not candidates:
        return None
    best_path, best = candidates[0]
    for path, series in candidates[1:]:
        if _last_step(series) > _last_step(best):
            best_path, best = path, series
    return TrainingLog(stage, str(best_path), best)
