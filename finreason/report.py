"""The report ``07_analyze.py`` writes: report.md and its figures, from ``finreason.analysis``.

Every accuracy table says which evidence each stage's prompts used; a stage evaluated on gold
facts (FinQA's gold-retriever setting) is marked as such in the table, the figure title and a
note at the top, so it can never be read as a retrieved-evidence number.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finreason import prompts, retriever_labels, stats, storage
from finreason.analysis import (
    CATEGORY_DEFINITIONS, CATEGORY_LABELS, StageResult, TrainingLog, accuracy, breakdown, category_table,
)
from finreason.evaluation import compare_stages
from finreason.layout import EVALUATED_BY, STAGES, Layout


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
    ax.set_xticks(x, [f"{row['stage']}\n(n={row['n']}{', GOLD facts' if row['evidence'] == 'gold' else ''})" for row in rows])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 112)  # headroom for the value labels above a bar at 100%
    ax.set_yticks(range(0, 101, 20))
    modes = sorted({row["evidence"] for row in rows})
    ax.set_title(f"Execution accuracy by stage (95% bootstrap CI; {' / '.join(modes)} evidence)")
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
    ("correctness (mean)", ("rewards/correctness_reward/mean",)),
    ("groups with mixed correctness", ("correctness_mixed_group_share",)),
    ("completion length (tokens)", ("completions/mean_length", "completion_length")),
)
SFT_PANELS = (
    ("training loss", ("loss",)),
    ("eval loss", ("eval_loss",)),
    ("token accuracy", ("mean_token_accuracy",)),
)


# --- report ----------------------------------------------------------------------------------

def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _stage_provenance(stage: StageResult) -> str:
    prov = stage.summary.get("provenance") if isinstance(stage.summary.get("provenance"), Mapping) else {}
    model = prov.get("model") or (prov.get("config") or {}).get("MODEL_NAME") or "?"
    weights = prov.get("weights") or prov.get("adapter") or "none"
    digest = prov.get("weights_sha256")
    split = stage.summary.get("split") or prov.get("split") or next((r.get("split") for r in stage.records if r.get("split")), "?")
    return f"{model}; weights {weights}{f' (sha256 {digest[:12]})' if digest else ''}; split {split}"


def _ci(value: tuple[float, float, float]) -> str:
    return f"{stats.percent(value[1])} – {stats.percent(value[2])}"


def _stages_section(stages: Mapping[str, StageResult], missing: Sequence[str], stale: Mapping[str, str]) -> list[str]:
    lines = ["## Stages", ""]
    lines += [f"**Stale weights: {name.upper()} was {reason}.**" for name, reason in stale.items()] + ([""] if stale else [])
    if stages:
        lines.append(f"Evaluated: {', '.join(stages)}.")
    else:
        lines.append("**No evaluation results found** (no `eval/*.jsonl` or `eval/*.summary.json`).")
    if missing:
        lines.append("Missing: " + "; ".join(f"{name} (run {EVALUATED_BY[name]})" for name in missing) + ".")
    gold = [name for name, stage in stages.items() if stage.evidence_mode == "gold"]
    if gold:
        lines += ["", f"**Evidence: {', '.join(gold)} used {prompts.evidence_label('gold')}.** "
                  "Those numbers are not retrieved-evidence results and are not comparable to them."]
    return lines + [""]


def _accuracy_section(rows: Sequence[Mapping[str, Any]], rel_tol: float) -> list[str]:
    lines = ["## Accuracy", "",
             "Strict = the official FinQA execution check; lenient = within "
             f"{100 * rel_tol:g}% after percent/fraction rescaling; program acc. = the official "
             "symbolic program match. 95% bootstrap intervals.", ""]
    lines.append(_md_table(
        ["stage", "evidence", "n", "strict", "95% CI", "lenient", "95% CI", "program acc.", "model / weights / split"],
        [[r["stage"], "GOLD" if r["evidence"] == "gold" else f"{r['evidence']} ({r['retriever']})" if r.get("retriever") else r["evidence"], r["n"],
          stats.percent(r["strict"][0]), _ci(r["strict"]), stats.percent(r["lenient"][0]), _ci(r["lenient"]),
          stats.percent(r["program"]), r["provenance"]] for r in rows]))
    return lines + ["", "![accuracy by stage](figures/accuracy_by_stage.png)", ""]


def _comparison_section(comparison: Mapping[str, Any]) -> list[str]:
    if not comparison["pairs"]:
        return []
    lines = ["## Paired comparison", "",
             f"On the {comparison['shared_ids']} questions every stage answered; p = exact McNemar test on strict correctness.", ""]
    lines.append(_md_table(
        ["A", "B", "only A right", "only B right", "p"],
        [[pair["a"], pair["b"], pair["a_only"], pair["b_only"],
          "n/a" if pair["p_value"] is None else f"{pair['p_value']:.3g}"] for pair in comparison["pairs"]]))
    return lines + [""]


BREAKDOWNS = (
    ("operation", "Strict accuracy by gold operation", "operation in the gold program", "accuracy_by_operation.png"),
    ("num_steps", "Strict accuracy by number of gold program steps", "steps", "accuracy_by_steps.png"),
    ("evidence_source", "Strict accuracy by where the gold evidence is", "evidence", None),
)


def _breakdown_sections(with_records: Mapping[str, StageResult], fig_dir: Path, figures: dict[str, Path]) -> tuple[list[str], dict[str, Any]]:
    lines: list[str] = []
    breakdowns: dict[str, dict[str, dict[str, tuple[int, float]]]] = {}
    for key, title, xlabel, figure in BREAKDOWNS:
        table = {name: breakdown(stage.records, key) for name, stage in with_records.items()}
        breakdowns[key] = table
        if not table:
            continue
        lines += [f"## {title}", ""]
        groups = sorted({group for per_stage in table.values() for group in per_stage})
        lines.append(_md_table(
            [xlabel, *[f"{name} (n / strict)" for name in table]],
            [[group, *[(f"{table[name][group][0]} / {stats.percent(table[name][group][1])}" if group in table[name] else "–")
                       for name in table]] for group in groups]))
        lines.append("")
        if figure:
            figures[key] = plot_grouped(table, title, xlabel, fig_dir / figure)
            lines += [f"![{title}](figures/{figure})", ""]
    return lines, breakdowns


def _category_section(with_records: Mapping[str, StageResult], examples: Mapping[str, Any], rel_tol: float,
                      fig_dir: Path, figures: dict[str, Path]) -> tuple[list[str], dict[str, Counter], dict[str, int]]:
    categories: dict[str, Counter] = {}
    samples_by_stage: dict[str, dict[str, str]] = {}
    not_in_doc: dict[str, int] = {}
    for name, stage in with_records.items():
        categories[name], not_in_doc[name], samples_by_stage[name] = category_table(stage.records, examples, rel_tol)
    if not categories:
        return [], categories, not_in_doc
    figures["categories"] = plot_categories(categories, fig_dir / "error_categories.png")
    lines = ["## Error categories", "", "Each wrong answer gets the first category that applies, in this order:", ""]
    lines += [f"- **{CATEGORY_LABELS[name]}**: {text}." for name, text in CATEGORY_DEFINITIONS.items()]
    lines += ["", _md_table(
        ["category", *categories, "example id (last stage)"],
        [[CATEGORY_LABELS.get(cat, cat), *[categories[name].get(cat, 0) for name in categories],
          next((samples_by_stage[name][cat] for name in reversed(list(categories)) if cat in samples_by_stage[name]), "")]
         for cat in ["correct", *CATEGORY_DEFINITIONS]]), ""]
    lines.append("Wrong numbers that include a number written nowhere in the table or text: "
                 + ", ".join(f"{name} {count}" for name, count in not_in_doc.items()) + ".")
    if not examples:
        lines.append("The FinQA examples could not be loaded, so program errors are 'unclassified'.")
    return lines + ["", "![error categories](figures/error_categories.png)", ""], categories, not_in_doc


def _training_section(logs: Mapping[str, TrainingLog | None], out_dir: Path, fig_dir: Path,
                      figures: dict[str, Path]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    lines = ["## Training", ""]
    training: dict[str, dict[str, Any]] = {}
    for stage_name, panels, figure in (("sft", SFT_PANELS, "training_sft.png"), ("grpo", GRPO_PANELS, "training_grpo.png")):
        log = logs.get(stage_name)
        if log is None:
            lines += [f"- {stage_name.upper()}: no training log found (no step_log.jsonl, trainer_state.json or TensorBoard events under `{stage_name}/`).", ""]
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
    return lines, training


def build_report(
    where: Layout,
    stages: Mapping[str, StageResult],
    logs: Mapping[str, TrainingLog | None],
    examples: Mapping[str, Any],
    rel_tol: float,
    samples: int,
    seed: int,
    data_note: str = "",
    stale: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write report.md and figures/*.png under ``where``; return the numbers reported. ``stale``
    names trained stages whose weights started from since-replaced ones (training.stale_weights)."""
    fig_dir = where.figures
    figures: dict[str, Path] = {}
    missing = [name for name in STAGES if name not in stages]
    lines = ["# FinReason report", ""] + ([f"_{data_note}_", ""] if data_note else [])
    lines += _stages_section(stages, missing, stale or {})

    rows = [{
        "stage": name,
        "evidence": stage.evidence_mode,
        "retriever": retriever_labels.short_label(stage.retriever) if stage.evidence_mode == "retrieved" and stage.retriever else "",
        "n": stage.n,
        "strict": accuracy(stage, "strict", samples, seed),
        "lenient": accuracy(stage, "lenient", samples, seed),
        "program": stage.summary.get("program_accuracy"),
        "provenance": _stage_provenance(stage),
    } for name, stage in stages.items()]
    if rows:
        figures["accuracy"] = plot_accuracy(rows, fig_dir / "accuracy_by_stage.png")
        lines += _accuracy_section(rows, rel_tol)

    # paired comparison on the questions every pipeline stage answered (06_evaluate's own test)
    paired = [name for name in STAGES if name in stages and stages[name].records]
    comparison = compare_stages(where, paired) if len(paired) > 1 else {"shared_ids": 0, "stages": [], "pairs": []}
    lines += _comparison_section(comparison)

    with_records = {name: stage for name, stage in stages.items() if stage.records}
    section, breakdowns = _breakdown_sections(with_records, fig_dir, figures)
    lines += section
    section, categories, not_in_doc = _category_section(with_records, examples, rel_tol, fig_dir, figures)
    lines += section
    section, training = _training_section(logs, where.root, fig_dir, figures)
    lines += section

    report_path = storage.atomic_write_text(where.report, "\n".join(lines) + "\n")
    return {
        "report": str(report_path),
        "stages": [{**row, "strict": list(row["strict"]), "lenient": list(row["lenient"])} for row in rows],
        "missing_stages": missing,
        "stale_weights": dict(stale or {}),
        "comparison": comparison,
        "breakdowns": {key: {stage: {g: list(v) for g, v in t.items()} for stage, t in table.items()}
                       for key, table in breakdowns.items()},
        "error_categories": {name: dict(counter) for name, counter in categories.items()},
        "wrong_numbers_not_in_document": not_in_doc,
        "training": training,
        "figures": {name: str(path) for name, path in figures.items()},
    }
