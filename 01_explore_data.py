"""Explore FinQA: split sizes, operations, program lengths, where the evidence is, context and answer lengths.

Command:
    .venv/bin/python 01_explore_data.py [--tokens] [--KEY=value ...]

Reads FinQA (finreason.data). Writes OUTPUT_DIR/explore/summary.json (with provenance) and
OUTPUT_DIR/explore/overview.png, and prints the tables. ``--tokens`` also counts context tokens
with the configured model's tokenizer (finreason.models.load_tokenizer; cheap for SmolLM2 and
any cached model).
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from finreason import configuration, console, models, outputlock, storage
from finreason.data import SPLITS, Example, load_from_config
from finreason.layout import Layout
from finreason.provenance import provenance
from finreason.prompts import render_row

_LOG = logging.getLogger("explore")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", action="store_true", help="also count context tokens with the model's tokenizer")


def context_text(example: Example) -> str:
    """Everything a model could read: text and the whole table, as the prompt renders rows."""
    return "\n".join([*example.pre_text, *(render_row(row) for row in example.table), *example.post_text])


def describe_numbers(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "mean": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def answer_length(example: Example) -> int:
    return len(str(example.answer or example.exe_ans))


def summarize_split(examples: list[Example], token_counts: list[int] | None) -> dict[str, Any]:
    operations = Counter(op for example in examples for op in example.operations)
    summary = {
        "examples": len(examples),
        "operations": dict(operations.most_common()),
        "steps": dict(sorted(Counter(example.num_steps for example in examples).items())),
        "evidence_source": dict(Counter(example.evidence_source for example in examples).most_common()),
        "yes_no_answers": sum(isinstance(example.exe_ans, str) for example in examples),
        "context_chars": describe_numbers([len(context_text(example)) for example in examples]),
        "table_rows": describe_numbers([len(example.table) for example in examples]),
        "sentences": describe_numbers([len(example.text) for example in examples]),
        "answer_chars": describe_numbers([answer_length(example) for example in examples]),
        "gold_facts": describe_numbers([len(example.gold_inds) for example in examples]),
    }
    if token_counts is not None:
        summary["context_tokens"] = describe_numbers(token_counts)
    return summary


def count_context_tokens(examples: list[Example], tokenizer: Any, label: str) -> list[int]:
    counts = []
    for example in tqdm(examples, desc=f"tokens {label}", leave=False):
        counts.append(len(tokenizer(context_text(example), add_special_tokens=False)["input_ids"]))
    return counts


def print_tables(summary: dict[str, dict[str, Any]]) -> None:
    splits = list(summary)

    def show(title: str, label: str, keys: Any, value: Any) -> None:
        print("\n" + console.table([[key, *(value(s, key) for s in splits)] for key in keys], [label, *splits], title=title))

    show("examples", "", ["examples"], lambda s, key: summary[s]["examples"])
    show("operations (count of steps)", "operation", sorted({op for s in splits for op in summary[s]["operations"]}),
         lambda s, op: summary[s]["operations"].get(op, 0))
    show("program steps (examples)", "steps", sorted({n for s in splits for n in summary[s]["steps"]}),
         lambda s, n: summary[s]["steps"].get(n, 0))
    show("evidence from (examples)", "evidence", ("table", "text", "both", "none"),
         lambda s, kind: summary[s]["evidence_source"].get(kind, 0))
    lengths = [key for key in ("context_chars", "context_tokens", "table_rows", "sentences", "answer_chars") if key in summary[splits[0]]]
    show("lengths (median / p95 / max)", "length", lengths, lambda s, key: _triple(summary[s][key]))


def _triple(stats: dict[str, float]) -> str:
    return f"{stats['median']:g}/{stats['p95']:g}/{stats['max']:g}"


def plot_overview(bundle_splits: dict[str, list[Example]], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or in CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    splits = list(summary)
    ops = sorted({op for s in splits for op in summary[s]["operations"]})
    width = 0.8 / max(1, len(splits))
    for offset, split in enumerate(splits):
        positions = [index + offset * width for index in range(len(ops))]
        axes[0][0].bar(positions, [summary[split]["operations"].get(op, 0) for op in ops], width, label=split)
    axes[0][0].set_xticks([index + 0.4 - width / 2 for index in range(len(ops))], ops, rotation=45, ha="right")
    axes[0][0].set_title("operations")
    axes[0][0].legend()
    for split in splits:
        steps = summary[split]["steps"]
        axes[0][1].plot(list(steps), list(steps.values()), marker="o", label=split)
    axes[0][1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][1].set_title("program steps per question")
    axes[0][1].legend()
    for split, examples in bundle_splits.items():
        axes[1][0].hist([len(context_text(example)) for example in examples], bins=40, alpha=0.5, label=split)
    axes[1][0].set_title("context length (characters)")
    axes[1][0].legend()
    kinds = ("table", "text", "both", "none")
    bottoms = [0] * len(splits)
    for kind in kinds:
        counts = [summary[split]["evidence_source"].get(kind, 0) for split in splits]
        axes[1][1].bar(splits, counts, bottom=bottoms, label=kind)
        bottoms = [bottom + count for bottom, count in zip(bottoms, counts)]
    axes[1][1].set_title("where the gold evidence is")
    axes[1][1].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> dict[str, Any]:
    args, cfg = configuration.parse_args(__doc__, argv, add_arguments)
    # one writer per output folder: a second run on it stops here with the holder's PID
    with outputlock.hold(cfg.OUTPUT_DIR):
        return run(args, cfg)


def run(args, cfg) -> dict[str, Any]:
    out_dir = Layout.of(cfg).explore_dir

    # data
    bundle = load_from_config(cfg, splits=SPLITS)

    # tokenizer (optional: only for token counts)
    tokenizer = None
    if args.tokens:
        tokenizer = models.load_tokenizer(cfg)

    # summarize
    summary = {}
    for split in SPLITS:
        examples = bundle[split]
        tokens = count_context_tokens(examples, tokenizer, split) if tokenizer is not None else None
        summary[split] = summarize_split(examples, tokens)

    # report
    print_tables(summary)
    plot_overview(bundle.splits, summary, out_dir / "overview.png")
    report = {
        "splits": summary,
        "tokenizer": cfg.MODEL_NAME if tokenizer is not None else None,
        "provenance": provenance(cfg, data=bundle.describe()),
    }
    storage.atomic_write_json(out_dir / "summary.json", report)
    _LOG.info("wrote %s and %s", out_dir / "summary.json", out_dir / "overview.png")
    return report


if __name__ == "__main__":
    console.run_main(main)
