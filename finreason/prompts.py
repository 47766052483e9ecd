"""The one prompt builder: evidence selection and chat messages (SFT targets: ``finreason.trainset``).

Zero-shot, SFT, GRPO, evaluation and the app all call ``prompt_from_cfg`` so a model is always
trained and tested on exactly the same text. Evidence comes one of two ways (EVIDENCE_MODE):

* ``retrieved`` (the standard setting): what a real document gets. ``RETRIEVER`` picks how:
  ``learned`` (the default) and ``bm25`` rank every table row and report sentence against the
  question (``finreason.retrieval``) and keep the ``RETRIEVER_TOP_K`` best in document order,
  with the table's header row whenever a row is kept; ``budget_fill`` (the earlier baseline)
  keeps the whole table (rendered as a pipe table, whole rows only) plus the BM25-best
  sentences. Either stays within ``PROMPT_TOKEN_BUDGET`` tokens of the model's own tokenizer;
* ``gold`` (FinQA's published "gold retriever" setting, an easier one): only the facts FinQA's
  annotators marked (``gold_inds``): the table's header row and the gold rows, and the gold
  sentences, rendered exactly as ``retrieved`` renders them, so a model trained on either sees
  one format. Results in this mode are labelled as such wherever they appear.

The question is never cut.

``example`` may be a ``finreason.data.Example`` or any object with ``question``, ``table``,
``pre_text`` and ``post_text`` (and optionally ``text``), e.g. an upload in the app.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from finreason import retrieval, retriever_labels
from finreason.document_facts import Ranking, rank_by_bm25, report_sentences

# Every token here is paid in every training step and every prefill, on every profile: the format
# and the program language are stated once, tersely.
SYSTEM_PROMPT = (
    "Answer the question from the report's table and text.\n"
    "Reply with a line 'Program:' holding the calculation in FinQA's program language, then a line "
    "'Answer:' holding its value; one sentence naming the numbers used may come first.\n"
    "A program is steps op(arg1, arg2) joined by ', '. Ops: add, subtract, multiply, divide, exp, greater; "
    "table_max, table_min, table_sum, table_average take a table row name and none. #0 is the first step's "
    "result. Constants: const_100, const_1000, const_m1 (-1). Percents: 5%.\n"
    "The answer is a number, a fraction rather than a percent (a 1.6% change is 0.016), or yes/no."
)
# The program language once more for models that must follow it zero-shot is ~150 SmolLM2 tokens
# that a fine-tuned model learns from its targets instead (PROMPT_INSTRUCTIONS=brief).
BRIEF_SYSTEM_PROMPT = (
    "Answer the question from the report's table and text: a line 'Program:' with the calculation in "
    "FinQA's program language, then a line 'Answer:' with its value."
)
INSTRUCTIONS = {"full": SYSTEM_PROMPT, "brief": BRIEF_SYSTEM_PROMPT}
EVIDENCE_MODES = ("retrieved", "gold")
# How every results table, model card and page names an evidence mode.
EVIDENCE_LABELS = {
    "retrieved": "retrieved evidence (the facts a retriever picks from the document)",
    "gold": "GOLD facts only (FinQA's gold-retriever setting: easier than retrieved evidence, not comparable to it)",
}

# One worked example: a small zero-shot model should fail on the maths, not on the format.
FEW_SHOT_TEXT = (
    "Example:\n"
    "Question: what was the percent change in revenue from 2007 to 2008?\n"
    "From the table: revenue is 5829 in 2008 and 5735 in 2007.\n"
    "Program: subtract(5829, 5735), divide(#0, 5735)\n"
    "Answer: 0.01639"
)

# Budget overshoot re-measurement stops after this many drops: each drop removes a whole part.
_MAX_TRIM_ROUNDS = 10_000


@dataclass(frozen=True)
class Evidence:
    """What went into the prompt: kept table rows and sentences (indices), their ids, text and
    size, and how they were chosen (``mode``: "retrieved" or "gold"; ``retriever``)."""

    table_rows: list[int]
    sentences: list[int]
    kept_ids: set[str] = field(default_factory=set)
    text: str = ""
    n_tokens: int = 0
    mode: str = "retrieved"
    retriever: str = "budget_fill"  # "learned" | "bm25" | "budget_fill" | "gold"
    scores: dict[str, float] = field(default_factory=dict)  # every fact's ranker score (rankers only)
    ranking: list[str] = field(default_factory=list)  # every fact id, best first (rankers only)


# --- text helpers -------------------------------------------------------------------------


def render_row(row: Sequence[str]) -> str:
    return "| " + " | ".join(str(cell).strip() for cell in row) + " |"


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens per text with the model's tokenizer, in one batched call."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)
    return [len(ids) for ids in encoded["input_ids"]]


# --- evidence selection -------------------------------------------------------------------


def _render_evidence(table: Sequence[Sequence[str]], rows: Sequence[int], sentences: Sequence[str], kept: Sequence[int]) -> str:
    parts = []
    if rows:
        parts.append("Table:")
        parts.extend(render_row(table[index]) for index in sorted(rows))
    if kept:
        parts.append("Text:")
        parts.extend(sentences[index] for index in sorted(kept))
    return "\n".join(parts)


def _greedy_fill(order: Sequence[int], costs: Sequence[int], budget: int) -> tuple[list[int], int]:
    """Take items in ``order`` while they fit (skipping, not stopping at, one that does not)."""
    taken, used = [], 0
    for index in order:
        if used + costs[index] <= budget:
            taken.append(index)
            used += costs[index]
    return taken, used


def rank_rows(question: str, table: Sequence[Sequence[str]]) -> list[int]:
    """Row indices: the header first, then body rows by BM25 against the question."""
    if not table:
        return []
    body = rank_by_bm25(question, [" ".join(row) for row in table[1:]])
    return [0, *[index + 1 for index in body]]


def _choose_rows(row_order: list[int], row_costs: list[int], budget: int) -> list[int]:
    """The whole table when it fits; otherwise the header plus the best-ranked rows that fit."""
    if sum(row_costs) <= budget:
        return list(range(len(row_costs)))
    rows, _ = _greedy_fill(row_order, row_costs, budget)
    return rows


def _trim_once(rows: list[int], kept: list[int], sentence_order: list[int], row_order: list[int]) -> bool:
    """Drop the lowest-ranked kept sentence, else the lowest-ranked body row; False if nothing left."""
    for index in reversed(sentence_order):
        if index in kept:
            kept.remove(index)
            return True
    for index in reversed(row_order):
        if index in rows:
            rows.remove(index)
            return True
    return False


def select_evidence(example: Any, tokenizer: Any, budget: int) -> Evidence:
    """Table rows and report sentences for ``example`` within ``budget`` tokens (measured).

    Every row and sentence is tokenized once; a part costs its tokens plus one for its newline.
    The joined text is then measured exactly and, in the rare case tokens merge differently
    across lines, trimmed from the lowest-ranked end until it fits.
    """
    question = str(example.question)
    table = [list(row) for row in (getattr(example, "table", None) or [])]  # indices stay FinQA's table_i
    sentences = report_sentences(example)
    header_cost = max(count_tokens(tokenizer, ["Table:", "Text:"]) or [0]) + 1
    row_costs = [cost + 1 for cost in count_tokens(tokenizer, [render_row(row) for row in table])]
    sentence_costs = [cost + 1 for cost in count_tokens(tokenizer, sentences)]

    row_order = rank_rows(question, table)
    rows = _choose_rows(row_order, row_costs, budget - header_cost) if table else []
    used = sum(row_costs[index] for index in rows) + (header_cost if rows else 0)
    sentence_order = rank_by_bm25(question, sentences)
    kept, _ = _greedy_fill(sentence_order, sentence_costs, budget - used - header_cost)

    text = _render_evidence(table, rows, sentences, kept)
    n_tokens = count_tokens(tokenizer, [text])[0] if text else 0
    for _ in range(_MAX_TRIM_ROUNDS):
        if n_tokens <= budget or not _trim_once(rows, kept, sentence_order, row_order):
            break
        text = _render_evidence(table, rows, sentences, kept)
        n_tokens = count_tokens(tokenizer, [text])[0] if text else 0
    return _evidence(rows, kept, text, n_tokens, "retrieved", "budget_fill")


def _evidence(rows: Sequence[int], kept: Sequence[int], text: str, n_tokens: int, mode: str, retriever: str,
              ranking: Ranking | None = None) -> Evidence:
    kept_ids = {f"table_{index}" for index in rows} | {f"text_{index}" for index in kept}
    scores, order = (dict(ranking.scores), list(ranking.order)) if ranking is not None else ({}, [])
    return Evidence(sorted(rows), sorted(kept), kept_ids, text, n_tokens, mode, retriever, scores, order)


def ranked_evidence(example: Any, tokenizer: Any, budget: int, ranking: Ranking, top_k: int, retriever: str) -> Evidence:
    """The ``top_k`` best-ranked facts in document order, with the header row whenever a table row
    is kept (it names the columns), within ``budget`` tokens: while the text is over, the
    lowest-ranked kept fact goes."""
    table = [list(row) for row in (getattr(example, "table", None) or [])]
    sentences = report_sentences(example)
    chosen = _facts_here(ranking, len(table), len(sentences))[:top_k]
    while True:
        rows, kept = _kept_parts(chosen, len(table), len(sentences))
        text = _render_evidence(table, rows, sentences, kept)
        n_tokens = count_tokens(tokenizer, [text])[0] if text else 0
        if n_tokens <= budget or not chosen:
            return _evidence(rows, kept, text, n_tokens, "retrieved", retriever, ranking)
        chosen.pop()


def redrawn_distractors(example: Any, ranking: Ranking, top_k: int, rng: random.Random) -> Ranking:
    """``ranking`` with the gold facts among its ``top_k`` best first, then distractors drawn by
    ``rng`` from the ``2 * top_k`` best-ranked facts that are neither gold nor already among the
    ``top_k``: ``ranked_evidence`` over it shows the same gold facts (and misses the same ones) as
    the ranking itself, beside other near misses (SFT_DISTRACTOR_VIEWS). Drawn facts keep their
    rank order, so a prompt over the token budget drops the lowest-ranked distractor first."""
    facts = _facts_here(ranking, len(getattr(example, "table", None) or []), len(report_sentences(example)))
    gold = set(getattr(example, "gold_inds", {}) or {})
    shown = facts[:top_k]
    kept_gold = [fact_id for fact_id in shown if fact_id in gold]
    near_misses = [fact_id for fact_id in facts if fact_id not in gold and fact_id not in shown][:2 * top_k]
    drawn = set(rng.sample(near_misses, min(len(near_misses), top_k - len(kept_gold))))
    return Ranking(kept_gold + [fact_id for fact_id in near_misses if fact_id in drawn], dict(ranking.scores))


def _facts_here(ranking: Ranking, n_rows: int, n_sentences: int) -> list[str]:
    """The ranking's fact ids, best first, that name a row or sentence of this document."""
    return [fact_id for fact_id in ranking.order if _fact_index(fact_id, n_rows, n_sentences) is not None]


def _fact_index(fact_id: str, n_rows: int, n_sentences: int) -> int | None:
    """The row or sentence index of a fact id ("table_3", "text_0"), None when it names nothing here."""
    kind, _, raw_index = fact_id.partition("_")
    if not raw_index.isdigit():
        return None
    index = int(raw_index)
    limit = n_rows if kind == "table" else n_sentences if kind == "text" else 0
    return index if index < limit else None


def _kept_parts(fact_ids: Iterable[str], n_rows: int, n_sentences: int) -> tuple[list[int], list[int]]:
    """The table rows and sentences ``fact_ids`` name in this document (ids naming nothing here are
    skipped), with the header row whenever a row is kept: it names the columns the cells sit in."""
    rows, kept = set(), set()
    for fact_id in fact_ids:
        index = _fact_index(fact_id, n_rows, n_sentences)
        if index is not None:
            (rows if fact_id.startswith("table_") else kept).add(index)
    if rows:
        rows.add(0)
    return sorted(rows), sorted(kept)


def gold_evidence(example: Any, tokenizer: Any) -> Evidence:
    """FinQA's gold facts only: the header row and the gold rows, then the gold sentences."""
    table = [list(row) for row in (getattr(example, "table", None) or [])]
    sentences = report_sentences(example)
    rows, kept = _kept_parts(getattr(example, "gold_inds", {}) or {}, len(table), len(sentences))
    text = _render_evidence(table, rows, sentences, kept)
    return _evidence(rows, kept, text, count_tokens(tokenizer, [text])[0] if text else 0, "gold", "gold")


def evidence_label(mode: str | None, retriever: Mapping[str, Any] | None = None) -> str:
    """The words a report or page uses for ``mode`` and, for retrieved evidence, the retriever and k
    (``retrieval.describe``'s record; results without a mode were retrieved)."""
    label = EVIDENCE_LABELS.get(mode or "retrieved", str(mode))
    if (mode or "retrieved") == "retrieved" and retriever:
        return f"retrieved evidence ({retriever_labels.short_label(retriever)})"
    return label


def evidence_for(example: Any, tokenizer: Any, budget: int, mode: str, ranker: Any = None, top_k: int = 3) -> Evidence:
    """The evidence ``mode`` picks (see the module docstring): with a ``ranker``
    (``finreason.retrieval``), its ``top_k`` facts; without one, the budget-filling selection."""
    if mode not in EVIDENCE_MODES:
        raise ValueError(f"evidence mode must be one of {EVIDENCE_MODES}, got {mode!r}")
    if mode == "gold":
        return gold_evidence(example, tokenizer)
    if ranker is None:
        return select_evidence(example, tokenizer, budget)
    return ranked_evidence(example, tokenizer, budget, ranker.rank(example), top_k, ranker.name)


def evidence_from_cfg(example: Any, tokenizer: Any, cfg: Any, mode: str | None = None) -> Evidence:
    """The evidence every stage uses: EVIDENCE_MODE (or ``mode``), RETRIEVER, RETRIEVER_TOP_K, PROMPT_TOKEN_BUDGET."""
    mode = mode or cfg.EVIDENCE_MODE
    ranker = retrieval.ranker_for(cfg) if mode == "retrieved" else None
    return evidence_for(example, tokenizer, cfg.PROMPT_TOKEN_BUDGET, mode, ranker, cfg.RETRIEVER_TOP_K)


# --- prompts ------------------------------------------------------------------------------


def system_prompt(few_shot: bool = True, instructions: str = "full") -> str:
    """The system message: the task and format (``instructions``: "full" also explains the program
    language, "brief" only names it), then the worked example when ``few_shot``."""
    if instructions not in INSTRUCTIONS:
        raise ValueError(f"instructions must be one of {tuple(INSTRUCTIONS)}, got {instructions!r}")
    text = INSTRUCTIONS[instructions]
    return f"{text}\n\n{FEW_SHOT_TEXT}" if few_shot else text


def build_messages(example: Any, tokenizer: Any, budget: int, few_shot: bool = True, mode: str = "retrieved",
                   instructions: str = "full", evidence: Evidence | None = None) -> list[dict[str, str]]:
    """System (task, format, optional worked example) + user (evidence, then the whole question);
    ``evidence`` when already chosen, else the budget-filling selection or the gold facts (``mode``)."""
    evidence = evidence if evidence is not None else evidence_for(example, tokenizer, budget, mode)
    question = f"Question: {str(example.question).strip()}"
    user = f"{evidence.text}\n\n{question}" if evidence.text else question
    return [{"role": "system", "content": system_prompt(few_shot, instructions)}, {"role": "user", "content": user}]


def build_prompt(example: Any, tokenizer: Any, budget: int, few_shot: bool = True, mode: str = "retrieved",
                 instructions: str = "full", evidence: Evidence | None = None) -> str:
    """The rendered chat prompt, ending where the assistant starts writing."""
    return tokenizer.apply_chat_template(
        build_messages(example, tokenizer, budget, few_shot, mode, instructions, evidence), tokenize=False, add_generation_prompt=True
    )


def system_prompt_from_cfg(cfg: Any) -> str:
    return system_prompt(cfg.FEW_SHOT_EXAMPLE, cfg.PROMPT_INSTRUCTIONS)


def prompt_from_cfg(example: Any, tokenizer: Any, cfg: Any, mode: str | None = None, evidence: Evidence | None = None) -> str:
    """The prompt every stage uses; ``mode`` overrides EVIDENCE_MODE (the app's own tables have no
    gold facts); ``evidence`` when the caller already chose it with ``evidence_from_cfg``."""
    mode = mode or cfg.EVIDENCE_MODE
    evidence = evidence if evidence is not None else evidence_from_cfg(example, tokenizer, cfg, mode)
    return build_prompt(example, tokenizer, cfg.PROMPT_TOKEN_BUDGET, cfg.FEW_SHOT_EXAMPLE, mode, cfg.PROMPT_INSTRUCTIONS, evidence)
