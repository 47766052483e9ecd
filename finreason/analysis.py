"""Everything ``07_analyze.py`` reports: stage results, error categories, training curves, figures.

Inputs are whatever exists under ``OUTPUT_DIR``: ``eval/<stage>.jsonl`` (one record per question,
written by ``finreason.evaluation``), ``eval/<stage>.summary.json``, and the training logs of
``sft/`` and ``grpo/`` (``trainer_state.json`` when a checkpoint saved one, else TensorBoard
event files under ``runs/``). Nothing here assumes a stage exists: missing stages are listed,
never fatal.

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

from finreason.programs import ProgramError, TABLE_OPS, split_steps, str_to_num, tokenize
from finreason.records import read_jsonl

# Stages in the order the pipeline produces them, with the script that writes each.
EXPECTED_STAGES = {
    "zero_shot": "02_zero_shot_baseline.py",
    "sft": "06_evaluate.py --stage=sft (after 04_train_sft.py)",
    "grpo": "06_evaluate.py --stage=grpo (after 05_train_grpo.py)",
}
TRAINING_STAGES = ("sft", "grpo")

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


def stage_sort_key(name: str) -> tuple[int, int, str]:
    """Pipeline order: zero-shot, then SFT, then GRPO stages (``sft_dev`` right after ``sft``)."""
    for rank, expected in enumerate(EXPECTED_STAGES):
        if name == expected or name.startswith(expected + "_"):
            return (rank, name != expected, name)
    return (len(EXPECTED_STAGES), 1, name)


def load_stages(eval_dir: str | Path) -> dict[str, StageResult]:
    """Every stage with a ``<stage>.jsonl`` or ``<stage>.summary.json`` in ``eval_dir``, in pipeline order."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        return {}
    names = {path.name[: -len(".jsonl")] for path in eval_dir.glob("*.jsonl")}
    names |= {path.name[: -len(".summary.json")] for path in eval_dir.glob("*.summary.json")}
    stages = {}
    for name in sorted(names, key=stage_sort_key):
        records = list(read_jsonl(eval_dir / f"{name}.jsonl"))
        summary: dict[str, Any] = {}
        summary_path = eval_dir / f"{name}.summary.json"
        if summary_path.is_file():
            try:
                loaded = json.loads(summary_path.read_text(encoding="utf-8"))
                summary = loaded if isinstance(loaded, dict) else {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                summary = {}
        if records or summary:
            stages[name] = StageResult(name, records, summary)
    return stages


def bootstrap_ci(values: Sequence[float], samples: int, seed: int) -> tuple[float, float]:
    """Percentile 95% interval of the mean; (nan, nan) for no data."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(max(samples, 1), data.size))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


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
    low, high = bootstrap_ci(values, samples, seed)
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


def _from_step_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """A training script's per-step JSONL (``train_log.jsonl``/``step_log.jsonl``); a resumed run's
    repeated step keeps its newest entry."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in read_jsonl(path):
        if isinstance(entry.get("step"), int) and not isinstance(entry.get("step"), bool):
            by_step[entry["step"]] = {**by_step.get(entry["step"], {}), **entry}
    return _from_trainer_state_entries([by_step[step] for step in sorted(by_step)])


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
    """The most complete log under ``stage_dir``: the script's per-step ``*_log.jsonl``, a
    checkpoint's ``trainer_state.json`` or the TensorBoard scalars in ``runs/`` (the one reaching the
    furthest step wins; ties go in that order). None when there is no log at all."""
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        return None
    candidates: list[tuple[Path, dict[str, list[tuple[int, float]]]]] = []
    for path in sorted(stage_dir.glob("*log.jsonl")):
        candidates.append((path, _from_step_log(path)))
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


# --- figures ---------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: the analysis runs on servers without a display
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Strict and lenient accuracy per stage with 95% CI error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(len(rows))
    width = 0.38
    for offset, metric, color in ((-width / 2, "strict", "#1f77b4"), (width / 2, "lenient", "#ff7f0e")):
        acc = np.array([row[metric][0] for row in rows]) * 100
        low = np.array([row[metric][1] for row in rows]) * 100
        high = np.array([row[metric][2] for row in rows]) * 100
        err = np.nan_to_num(np.vstack([acc - low, high - acc]).clip(min=0))
        bars = ax.bar(x + offset, np.nan_to_num(acc), width, yerr=err, capsize=4, label=metric, color=color)
        ax.bar_label(bars, labels=[f"{a:.1f}" for a in np.nan_to_num(acc)], padding=2, fontsize=8)
    ax.set_xticks(x, [f"{row['stage']}\n(n={row['n']})" for row in rows])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 112)  # headroom for the value labels above a bar at 100%
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("Execution accuracy by stage (95% bootstrap CI)")
    ax.legend()
    return _save(fig, path, plt)


def plot_grouped(table: Mapping[str, Mapping[str, tuple[int, float]]], title: str, xlabel: str, path: Path) -> Path:
    """Strict accuracy per group, one bar per stage: ``table[stage][group] = (n, accuracy)``."""
    plt = _pyplot()
    groups = sorted({group for per_stage in table.values() for group in per_stage})
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(groups) * max(len(table), 1)), 4))
    x = np.arange(len(groups))
    width = 0.8 / max(len(table), 1)
    for index, (stage, per_stage) in enumerate(table.items()):
        acc = [per_stage.get(group, (0, math.nan))[1] * 100 for group in groups]
        ax.bar(x + (index - (len(table) - 1) / 2) * width, np.nan_to_num(acc), width, label=stage)
    counts = [max((per_stage.get(group, (0, 0))[0] for per_stage in table.values()), default=0) for group in groups]
    ax.set_xticks(x, [f"{group}\n(n={count})" for group, count in zip(groups, counts)], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("strict accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    if table:
        ax.legend()
    return _save(fig, path, plt)


def plot_categories(counts: Mapping[str, Counter], path: Path) -> Path:
    """Share of each stage's wrong answers per error category."""
    plt = _pyplot()
    names = [name for name in CATEGORY_DEFINITIONS if any(c.get(name) for c in counts.values())] or ["no_answer"]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(names))
    width = 0.8 / max(len(counts), 1)
    for index, (stage, counter) in enumerate(counts.items()):
        wrong = sum(v for k, v in counter.items() if k != "correct") or 1
        share = [100 * counter.get(name, 0) / wrong for name in names]
        bars = ax.bar(x + (index - (len(counts) - 1) / 2) * width, share, width, label=stage)
        ax.bar_label(bars, labels=[str(counter.get(name, 0)) for name in names], padding=2, fontsize=8)
    ax.set_xticks(x, [CATEGORY_LABELS[name] for name in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("% of wrong answers (labels: counts)")
    ax.set_ylim(0, 110)
    ax.set_title("Error categories")
    if counts:
        ax.legend()
    return _save(fig, path, plt)


def plot_training(log: TrainingLog, panels: Sequence[tuple[str, Sequence[str]]], path: Path) -> Path | None:
    """One panel per (title, candidate metric names); None when no panel has data."""
    found = [(title, log.get(*names)) for title, names in panels]
    found = [(title, points) for title, points in found if points]
    if not found:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(found), figsize=(4.2 * len(found), 3.4), squeeze=False)
    for ax, (title, points) in zip(axes[0], found):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o", markersize=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{log.stage.upper()} training")
    return _save(fig, path, plt)


def _save(fig, path: Path, plt) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


GRPO_PANELS = (
    ("reward (mean)", ("reward",)),
    ("reward std within group", ("reward_std",)),
    ("completion length (tokens)", ("completions/mean_length", "completion_length")),
)
SFT_PANELS = (
    ("training loss", ("loss",)),
    ("eval loss", ("eval_loss",)),
    ("token accuracy", ("mean_token_accuracy",)),
)


def paired_comparison(out_dir: Path, stage_names: Sequence[str]) -> dict[str, Any]:
    """``finreason.evaluation.compare_stages`` on the pipeline stages (empty with fewer than two)."""
    if len(stage_names) < 2:
        return {"shared_ids": 0, "stages": [], "pairs": []}
    from finreason.evaluation import compare_stages

    return compare_stages(out_dir, list(stage_names))


# --- report ----------------------------------------------------------------------------------

def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _stage_provenance(stage: StageResult) -> str:
    prov = stage.summary.get("provenance") if isinstance(stage.summary.get("provenance"), Mapping) else {}
    model = prov.get("model") or (prov.get("config") or {}).get("MODEL_NAME") or "?"
    adapter = prov.get("adapter") or "none"
    split = stage.summary.get("split") or prov.get("split") or next((r.get("split") for r in stage.records if r.get("split")), "?")
    return f"{model}; adapter {adapter}; split {split}"


def build_report(
    out_dir: str | Path,
    stages: Mapping[str, StageResult],
    logs: Mapping[str, TrainingLog | None],
    examples: Mapping[str, Any],
    rel_tol: float,
    samples: int,
    seed: int,
    data_note: str = "",
) -> dict[str, Any]:
    """Write ``report.md`` and ``figures/*.png`` under ``out_dir``; return the numbers reported."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    figures: dict[str, Path] = {}
    missing = [name for name in EXPECTED_STAGES if name not in stages]
    lines = ["# FinReason report", ""]
    if data_note:
        lines += [f"_{data_note}_", ""]

    # stages
    lines += ["## Stages", ""]
    if stages:
        lines.append(f"Evaluated: {', '.join(stages)}.")
    else:
        lines.append("**No evaluation results found** (no `eval/*.jsonl` or `eval/*.summary.json`).")
    if missing:
        lines.append("Missing: " + "; ".join(f"{name} (run {EXPECTED_STAGES[name]})" for name in missing) + ".")
    lines.append("")

    # accuracy
    rows = []
    for name, stage in stages.items():
        rows.append({
            "stage": name,
            "n": stage.n,
            "strict": accuracy(stage, "strict", samples, seed),
            "lenient": accuracy(stage, "lenient", samples, seed),
            "program": stage.summary.get("program_accuracy"),
            "provenance": _stage_provenance(stage),
        })
    if rows:
        figures["accuracy"] = plot_accuracy(rows, fig_dir / "accuracy_by_stage.png")
        lines += ["## Accuracy", "",
                  "Strict = the official FinQA execution check; lenient = within "
                  f"{100 * rel_tol:g}% after percent/fraction rescaling; program acc. = the official "
                  "symbolic program match. 95% bootstrap intervals.", ""]
        lines.append(_md_table(
            ["stage", "n", "strict", "95% CI", "lenient", "95% CI", "program acc.", "model / adapter / split"],
            [[r["stage"], r["n"], _pct(r["strict"][0]), f"{_pct(r['strict'][1])} – {_pct(r['strict'][2])}",
              _pct(r["lenient"][0]), f"{_pct(r['lenient'][1])} – {_pct(r['lenient'][2])}", _pct(r["program"]), r["provenance"]]
             for r in rows]))
        lines += ["", "![accuracy by stage](figures/accuracy_by_stage.png)", ""]

    # paired comparison on the questions every pipeline stage answered (06_evaluate's own test)
    comparison = paired_comparison(out_dir, [name for name in EXPECTED_STAGES if name in stages and stages[name].records])
    if comparison["pairs"]:
        lines += ["## Paired comparison", "",
                  f"On the {comparison['shared_ids']} questions every stage answered; p = exact McNemar test on strict correctness.", ""]
        lines.append(_md_table(
            ["A", "B", "only A right", "only B right", "p"],
            [[pair["a"], pair["b"], pair["a_only"], pair["b_only"],
              "n/a" if pair["p_value"] is None else f"{pair['p_value']:.3g}"] for pair in comparison["pairs"]]))
        lines.append("")

    # breakdowns
    with_records = {name: stage for name, stage in stages.items() if stage.records}
    breakdowns: dict[str, dict[str, dict[str, tuple[int, float]]]] = {}
    for key, title, xlabel, figure in (
        ("operation", "Strict accuracy by gold operation", "operation in the gold program", "accuracy_by_operation.png"),
        ("num_steps", "Strict accuracy by number of gold program steps", "steps", "accuracy_by_steps.png"),
        ("evidence_source", "Strict accuracy by where the gold evidence is", "evidence", None),
    ):
        table = {name: breakdown(stage.records, key) for name, stage in with_records.items()}
        breakdowns[key] = table
        if not table:
            continue
        lines += [f"## {title}", ""]
        groups = sorted({group for per_stage in table.values() for group in per_stage})
        lines.append(_md_table(
            [xlabel, *[f"{name} (n / strict)" for name in table]],
            [[group, *[(f"{table[name][group][0]} / {_pct(table[name][group][1])}" if group in table[name] else "–")
                       for name in table]] for group in groups]))
        lines.append("")
        if figure:
            figures[key] = plot_grouped(table, title, xlabel, fig_dir / figure)
            lines += [f"![{title}](figures/{figure})", ""]

    # error categories
    categories: dict[str, Counter] = {}
    samples_by_stage: dict[str, dict[str, str]] = {}
    not_in_doc: dict[str, int] = {}
    for name, stage in with_records.items():
        categories[name], not_in_doc[name], samples_by_stage[name] = category_table(stage.records, examples, rel_tol)
    if categories:
        figures["categories"] = plot_categories(categories, fig_dir / "error_categories.png")
        lines += ["## Error categories", "",
                  "Each wrong answer gets the first category that applies, in this order:", ""]
        lines += [f"- **{CATEGORY_LABELS[name]}**: {text}." for name, text in CATEGORY_DEFINITIONS.items()]
        lines += ["", _md_table(
            ["category", *[f"{name}" for name in categories], "example id (last stage)"],
            [[CATEGORY_LABELS.get(cat, cat), *[categories[name].get(cat, 0) for name in categories],
              next((samples_by_stage[name][cat] for name in reversed(list(categories)) if cat in samples_by_stage[name]), "")]
             for cat in ["correct", *CATEGORY_DEFINITIONS]]), ""]
        lines.append("Wrong numbers that include a number written nowhere in the table or text: "
                     + ", ".join(f"{name} {count}" for name, count in not_in_doc.items()) + ".")
        if not examples:
            lines.append("The FinQA examples could not be loaded, so program errors are 'unclassified'.")
        lines += ["", "![error categories](figures/error_categories.png)", ""]

    # training
    lines += ["## Training", ""]
    training: dict[str, dict[str, Any]] = {}
    for stage_name, panels, figure in (("sft", SFT_PANELS, "training_sft.png"), ("grpo", GRPO_PANELS, "training_grpo.png")):
        log = logs.get(stage_name)
        if log is None:
            lines += [f"- {stage_name.upper()}: no training log found (no trainer_state.json or TensorBoard events under `{stage_name}/`).", ""]
            continue
        path = plot_training(log, panels, fig_dir / figure)
        last = {title: log.get(*names)[-1][1] for title, names in panels if log.get(*names)}
        steps = max((points[-1][0] for points in log.series.values() if points), default=0)
        training[stage_name] = {"source": log.source, "steps": steps, "last": last}
        shown_source = Path(log.source).relative_to(out_dir) if Path(log.source).is_relative_to(out_dir) else log.source
        summary = ", ".join(f"{title} {value:.4g}" for title, value in last.items()) or "no known metrics"
        lines += [f"- {stage_name.upper()}: {steps} steps logged (from `{shown_source}`); last: {summary}.", ""]
        if path is not None:
            figures[f"training_{stage_name}"] = path
            lines += [f"![{stage_name} training](figures/{figure})", ""]

    from finreason.records import atomic_write_text

    report_path = atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return {
        "report": str(report_path),
        "stages": [{**row, "strict": list(row["strict"]), "lenient": list(row["lenient"])} for row in rows],
        "missing_stages": missing,
        "comparison": comparison,
        "breakdowns": {key: {stage: {g: list(v) for g, v in t.items()} for stage, t in table.items()}
                       for key, table in breakdowns.items()},
        "error_categories": {name: dict(counter) for name, counter in categories.items()},
        "wrong_numbers_not_in_document": not_in_doc,
        "training": training,
        "figures": {name: str(path) for name, path in figures.items()},
    }
