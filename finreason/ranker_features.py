"""The learned fact ranker's features: cheap numbers about each (question, fact) pair.

BM25 score and rank, question words in the row name, years shared with the sentence or the column
headers, numbers shared with the question, fact kind and position, ... Each feature is named in
``_FEATURES`` beside the expression that computes it, and ``FEATURE_NAMES`` (the LightGBM column
names, in column order) is read off that table, so a name cannot drift from its column. The values
and their order are what the cached rankers under ``outputs/retriever/`` were fit on: change either
and bump ``FEATURE_VERSION``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from finreason.document_facts import YEAR, Fact, bm25_scores, bm25_terms, header_is_data

# Bump whenever a feature changes: cached rankers of another version are never reused.
FEATURE_VERSION = 2

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# How a sentence announces the table under it ("the following table summarizes ...").
_INTRO = re.compile(r"following table|table below|as follows|following (?:is a|summar|present)|summarized below|\bare as follows|:\s*\.?$")
# Question words that say what kind of calculation is asked; the trees combine them with the fact's kind.
_ASKS = {
    "percent": ("percent", "percentage", "%"),
    "change": ("change", "increase", "decrease", "growth", "grew", "declined"),
    "total": ("total", "sum", "combined", "aggregate"),
    "average": ("average", "mean"),
    "ratio": ("ratio", "portion", "proportion", "share", "fraction"),
}
_KINDS = ("table", "text")


# --- text helpers -------------------------------------------------------------------------


def _stem(term: str) -> str:
    """A crude plural/tense strip that maps each form to one stem: "revenue" and "revenues" both
    become "revenu", "increase", "increased" and "increasing" all "increas"."""
    if term.isdigit() or len(term) <= 3:
        return term
    if term.endswith("ies") and len(term) > 4:
        return term[:-3] + "y"
    if term.endswith("s") and not term.endswith("ss"):
        term = term[:-1]
    for suffix in ("ing", "ed"):
        if term.endswith(suffix) and len(term) > len(suffix) + 3:
            term = term[: -len(suffix)]
            break
    return term[:-1] if term.endswith("e") and len(term) > 3 else term


def _stems(text: str) -> set[str]:
    """The stems of ``text``'s words (numbers left out)."""
    return {_stem(term) for term in bm25_terms(text) if not term.replace(".", "").isdigit()}


def _numbers(text: str) -> set[str]:
    """Numbers as written without separators, years excluded ("1,234.50" -> "1234.5")."""
    found = set()
    for raw in _NUMBER.findall(text.replace(",", "")):
        if YEAR.fullmatch(raw.lstrip("-")):
            continue
        value = float(raw)
        found.add(f"{abs(value):g}")
    return found


def _years(text: str) -> set[str]:
    return set(YEAR.findall(text))


def _bigrams(text: str) -> set[tuple[str, str]]:
    terms = [_stem(term) for term in bm25_terms(text)]
    return set(zip(terms, terms[1:]))


def _longest_run(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the longest run of consecutive terms both sequences contain."""
    best = 0
    previous = [0] * (len(second) + 1)
    for term in first:
        current = [0] * (len(second) + 1)
        for position, other in enumerate(second):
            if term == other:
                current[position + 1] = previous[position] + 1
                best = max(best, current[position + 1])
        previous = current
    return best


def _tfidf_cosines(question: str, facts: Sequence[Fact]) -> list[float]:
    """Cosine of stemmed term counts weighted by the example's own inverse document frequency."""
    documents = [[_stem(term) for term in bm25_terms(fact.text)] for fact in facts]
    frequency: dict[str, int] = {}
    for terms in documents:
        for term in set(terms):
            frequency[term] = frequency.get(term, 0) + 1
    idf = {term: math.log((1 + len(documents)) / (1 + count)) + 1 for term, count in frequency.items()}

    def vector(terms: Sequence[str]) -> dict[str, float]:
        counts: dict[str, float] = {}
        for term in terms:
            counts[term] = counts.get(term, 0.0) + idf.get(term, math.log(1 + len(documents)) + 1)
        return counts

    query = vector([_stem(term) for term in bm25_terms(question)])
    query_norm = math.sqrt(sum(value * value for value in query.values())) or 1.0
    cosines = []
    for terms in documents:
        doc = vector(terms)
        norm = math.sqrt(sum(value * value for value in doc.values())) or 1.0
        cosines.append(sum(value * doc.get(term, 0.0) for term, value in query.items()) / (norm * query_norm))
    return cosines


def _positions(order: Sequence[int]) -> dict[int, int]:
    return {index: position for position, index in enumerate(order)}


def _positions_in_kind(order: Sequence[int], facts: Sequence[Fact]) -> dict[int, int]:
    """Each fact's place in ``order`` among the facts of its own kind."""
    found: dict[int, int] = {}
    for kind in _KINDS:
        found.update(_positions([index for index in order if facts[index].kind == kind]))
    return found


def _best_of_kind(values: Sequence[float], facts: Sequence[Fact]) -> dict[str, float]:
    return {kind: max([values[i] for i, fact in enumerate(facts) if fact.kind == kind], default=0.0) for kind in _KINDS}


# --- what the features read -----------------------------------------------------------------


@dataclass(frozen=True)
class _Document:
    """What every fact's features share: the question's words, years and numbers, and each
    fact's BM25 and TF-IDF scores and ranks among the document's facts."""

    facts: Sequence[Fact]
    lowered_question: str
    question_stems: set[str]
    question_bigrams: set[tuple[str, str]]
    question_years: set[str]
    question_numbers: set[str]
    asks: dict[str, float]
    asks_after: bool
    spaced_question: str
    question_run_terms: list[str]
    scores: list[float]
    best: float
    third: float
    rank: dict[int, int]
    rank_in_kind: dict[int, int]
    counts: dict[str, int]
    kind_best: dict[str, float]
    best_stems: set[str]
    header_years: set[str]
    first_row_is_data: float
    year_low: int
    year_high: int
    tfidf: list[float]
    tfidf_best: dict[str, float]
    tfidf_rank: dict[int, int]
    name_scores: dict[int, float]
    name_best: float
    name_rank: dict[int, int]
    name_counts: dict[str, int]
    body_scores: dict[int, float]
    body_best: float

    @classmethod
    def of(cls, question: str, facts: Sequence[Fact]) -> _Document:
        lowered_question = question.lower()
        question_years = _years(question)
        scores = bm25_scores(question, [fact.text for fact in facts])
        order = sorted(range(len(facts)), key=lambda index: (-scores[index], index))
        tfidf = _tfidf_cosines(question, facts)
        row_indices = [index for index, fact in enumerate(facts) if fact.kind == "table"]
        name_scores = dict(zip(row_indices, bm25_scores(question, [facts[index].name for index in row_indices])))
        body_scores = dict(zip(row_indices, bm25_scores(question, [facts[index].body for index in row_indices])))
        name_counts: dict[str, int] = {}
        for index in row_indices:
            key = facts[index].name.strip().lower()
            name_counts[key] = name_counts.get(key, 0) + 1
        low, high = (int(min(question_years)), int(max(question_years))) if question_years else (0, -1)
        return cls(
            facts=facts,
            lowered_question=lowered_question,
            question_stems=_stems(question),
            question_bigrams=_bigrams(question),
            question_years=question_years,
            question_numbers=_numbers(question),
            asks={kind: float(any(word in lowered_question for word in words)) for kind, words in _ASKS.items()},
            asks_after=bool(re.search(r"\b(?:after|thereafter|beyond|later)\b", lowered_question)),
            spaced_question=" " + re.sub(r"[^a-z0-9]+", " ", lowered_question) + " ",
            question_run_terms=[_stem(term) for term in bm25_terms(question)],
            scores=scores,
            best=max(scores) if scores else 0.0,
            third=sorted(scores, reverse=True)[min(2, len(scores) - 1)],
            rank=_positions(order),
            rank_in_kind=_positions_in_kind(order, facts),
            counts={kind: sum(fact.kind == kind for fact in facts) for kind in _KINDS},
            kind_best=_best_of_kind(scores, facts),
            best_stems=_stems(facts[order[0]].text),
            header_years=_years(facts[0].text) if facts[0].kind == "table" else set(),
            # a header row whose cells are figures (not years) is data: FinQA keeps headerless tables as-is
            first_row_is_data=float(facts[0].kind == "table" and header_is_data((facts[0].name, *facts[0].cells))),
            year_low=low,
            year_high=high,
            tfidf=tfidf,
            tfidf_best=_best_of_kind(tfidf, facts),
            tfidf_rank=_positions_in_kind(sorted(range(len(facts)), key=lambda index: (-tfidf[index], index)), facts),
            name_scores=name_scores,
            name_best=max(name_scores.values(), default=0.0),
            name_rank=_positions(sorted(row_indices, key=lambda index: (-name_scores[index], index))),
            name_counts=name_counts,
            body_scores=body_scores,
            body_best=max(body_scores.values(), default=0.0),
        )

    def neighbour_share(self, index: int, kind: str) -> float:
        """A neighbour's BM25 as a share of its kind's best (-1 when there is no neighbour of that kind)."""
        if not 0 <= index < len(self.facts) or self.facts[index].kind != kind:
            return -1.0
        return self.scores[index] / self.kind_best[kind] if self.kind_best[kind] > 0 else 0.0


@dataclass(frozen=True)
class _Seen:
    """One fact as its features read it: its words, numbers and the longest word run it shares
    with the question (a row is matched by its name, a sentence by itself)."""

    index: int
    fact: Fact
    is_table: bool
    stems: set[str]
    name_stems: set[str]
    numbers: set[str]
    lowered: str
    in_kind: int
    own_terms: list[str]
    run: int
    plain_name: str

    @classmethod
    def of(cls, document: _Document, index: int, fact: Fact) -> _Seen:
        is_table = fact.kind == "table"
        own_terms = [_stem(term) for term in bm25_terms(fact.name if is_table else fact.text)]
        return cls(
            index=index,
            fact=fact,
            is_table=is_table,
            stems=_stems(fact.text),
            name_stems=_stems(fact.name) if is_table else set(),
            numbers=_numbers(fact.body[len(fact.name):] if is_table else fact.body),
            lowered=fact.text.lower(),
            in_kind=document.counts[fact.kind],
            own_terms=own_terms,
            run=_longest_run(document.question_run_terms, own_terms),
            plain_name=re.sub(r"[^a-z0-9]+", " ", fact.name.lower()).strip(),
        )

    @property
    def name_is_year(self) -> bool:
        return bool(YEAR.fullmatch(self.fact.name.strip()))


# --- the features, each named where it is computed ---------------------------------------------

# Each feature reads the document ``d`` (a ``_Document``) and the fact ``f`` (a ``_Seen``); the short
# names keep the table one feature a line.
_Feature = Callable[[_Document, _Seen], Any]

_FEATURES: tuple[tuple[str, _Feature], ...] = (
    ("bm25", lambda d, f: d.scores[f.index]),
    ("bm25_share_of_max", lambda d, f: d.scores[f.index] / d.best if d.best > 0 else 0.0),
    ("bm25_rank", lambda d, f: d.rank[f.index]),
    ("bm25_rank_in_kind", lambda d, f: d.rank_in_kind[f.index]),
    ("is_table", lambda d, f: float(f.is_table)),
    ("is_header_row", lambda d, f: float(f.is_table and f.fact.index == 0)),
    ("position", lambda d, f: f.fact.index / max(1, f.in_kind - 1)),
    ("position_from_end", lambda d, f: f.in_kind - 1 - f.fact.index),
    ("question_stems_in_fact", lambda d, f: len(d.question_stems & f.stems) / max(1, len(d.question_stems))),
    ("fact_stems_in_question", lambda d, f: len(d.question_stems & f.stems) / max(1, len(f.stems))),
    ("question_stems_in_row_name", lambda d, f: len(d.question_stems & f.name_stems) / max(1, len(d.question_stems))),
    ("row_name_stems_in_question",
     lambda d, f: len(d.question_stems & f.name_stems) / max(1, len(f.name_stems)) if f.name_stems else 0.0),
    ("bigrams_shared", lambda d, f: len(d.question_bigrams & _bigrams(f.fact.text))),
    ("question_years_in_fact", lambda d, f: len(d.question_years & _years(f.fact.text))),
    ("question_years_in_header", lambda d, f: len(d.question_years & d.header_years) if f.is_table else 0.0),
    ("question_has_years", lambda d, f: float(bool(d.question_years))),
    ("question_numbers_in_fact", lambda d, f: len(d.question_numbers & f.numbers)),
    ("numbers_in_fact", lambda d, f: len(f.numbers)),
    ("has_number", lambda d, f: float(bool(f.numbers))),
    ("fact_terms", lambda d, f: len(f.fact.text.split())),
    ("n_facts", lambda d, f: len(d.facts)),
    ("n_rows", lambda d, f: d.counts["table"]),
    ("n_sentences", lambda d, f: d.counts["text"]),
    ("asks_percent", lambda d, f: d.asks["percent"]),
    ("asks_change", lambda d, f: d.asks["change"]),
    ("asks_total", lambda d, f: d.asks["total"]),
    ("asks_average", lambda d, f: d.asks["average"]),
    ("asks_ratio", lambda d, f: d.asks["ratio"]),
    ("fact_has_percent", lambda d, f: float("%" in f.lowered or "percent" in f.lowered)),
    ("fact_has_money", lambda d, f: float("$" in f.lowered or "million" in f.lowered or "billion" in f.lowered)),
    ("row_is_total", lambda d, f: float(f.is_table and "total" in f.fact.name.lower())),
    ("tfidf_cosine", lambda d, f: d.tfidf[f.index]),
    ("bm25_share_of_kind_max",
     lambda d, f: d.scores[f.index] / d.kind_best[f.fact.kind] if d.kind_best[f.fact.kind] > 0 else 0.0),
    ("row_name_bm25_share", lambda d, f: d.name_scores.get(f.index, 0.0) / d.name_best if d.name_best > 0 else 0.0),
    ("row_name_all_in_question", lambda d, f: float(bool(f.name_stems) and f.name_stems <= d.question_stems)),
    ("previous_bm25_share", lambda d, f: d.neighbour_share(f.index - 1, f.fact.kind)),
    ("next_bm25_share", lambda d, f: d.neighbour_share(f.index + 1, f.fact.kind)),
    ("overlap_with_best", lambda d, f: len(f.stems & d.best_stems) / max(1, len(f.stems | d.best_stems))),
    ("fact_years", lambda d, f: len(_years(f.fact.text))),
    ("question_terms", lambda d, f: len(d.question_stems)),
    ("row_name_is_year", lambda d, f: float(f.name_is_year) if f.is_table else 0.0),
    ("row_name_year_in_question_range",
     lambda d, f: float(f.name_is_year and d.year_low <= int(f.fact.name.strip()) <= d.year_high) if f.is_table else 0.0),
    ("fact_years_in_question_range", lambda d, f: sum(d.year_low <= int(year) <= d.year_high for year in _years(f.fact.text))),
    ("row_body_bm25_share", lambda d, f: d.body_scores.get(f.index, 0.0) / d.body_best if d.body_best > 0 else 0.0),
    ("question_has_year_range", lambda d, f: float(d.year_high - d.year_low > 1)),
    ("longest_shared_run", lambda d, f: f.run),
    ("longest_run_share_of_name", lambda d, f: f.run / max(1, len(f.own_terms))),
    ("row_name_in_question",
     lambda d, f: float(len(f.plain_name) > 3 and f" {f.plain_name} " in d.spaced_question) if f.is_table else 0.0),
    ("header_row_is_data", lambda d, f: d.first_row_is_data),
    ("row_name_repeats", lambda d, f: d.name_counts.get(f.fact.name.strip().lower(), 0) if f.is_table else 0.0),
    ("bm25_minus_third", lambda d, f: d.scores[f.index] - d.third),
    ("tfidf_share_of_kind_max",
     lambda d, f: d.tfidf[f.index] / d.tfidf_best[f.fact.kind] if d.tfidf_best[f.fact.kind] > 0 else 0.0),
    ("row_name_bm25_rank", lambda d, f: d.name_rank.get(f.index, -1)),
    ("question_years", lambda d, f: len(d.question_years)),
    ("question_numbers", lambda d, f: len(d.question_numbers)),
    ("tfidf_rank_in_kind", lambda d, f: d.tfidf_rank[f.index]),
    ("sentence_from_table", lambda d, f: -99.0 if f.fact.from_table is None else float(f.fact.from_table)),
    ("sentence_introduces_table", lambda d, f: float(f.fact.kind == "text" and bool(_INTRO.search(f.lowered)))),
    ("thereafter_asked", lambda d, f: float(d.asks_after and "thereafter" in f.lowered)),
)

FEATURE_NAMES = tuple(name for name, _ in _FEATURES)


def fact_features(question: str, facts: Sequence[Fact]) -> np.ndarray:
    """One row of ``FEATURE_NAMES`` per fact (float32)."""
    if not facts:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    document = _Document.of(question, facts)
    rows = []
    for index, fact in enumerate(facts):
        seen = _Seen.of(document, index, fact)
        rows.append([compute(document, seen) for _, compute in _FEATURES])
    return np.asarray(rows, dtype=np.float32)
