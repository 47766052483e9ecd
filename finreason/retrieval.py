"""Fact ranking: which table rows and report sentences of a document answer its question.

A *fact* is one table row (``table_i``, FinQA's row index, the header included) or one report
sentence (``text_j``, the index into pre_text + post_text), the units FinQA's ``gold_inds`` mark.
A ranker scores every fact of an example for its question; ``finreason.prompts`` keeps the top
``RETRIEVER_TOP_K`` (``RETRIEVER``: ``learned`` or ``bm25``) or fills the token budget the old way
(``budget_fill``).

* ``bm25``: BM25 of the question against each fact (row name, header and cells; or the sentence).
* ``learned``: LightGBM's lambdarank over cheap features of each (question, fact) pair (BM25 score
  and rank, question words in the row name, years shared with the sentence or the column headers,
  numbers shared with the question, fact kind and position, ...), fit on the train split's
  ``gold_inds`` only, never dev or test. The fit is seeded and deterministic (one thread,
  LightGBM's ``deterministic`` mode), takes seconds, and is cached under ``outputs/retriever/``
  keyed by the train data's hash, ``FEATURE_VERSION`` and the fit settings.

Cross-fitting: a ranker fit on an example ranks it almost perfectly, so a train example's prompt
would hold its gold facts far more often than a dev prompt does. The learned ranker therefore also
fits ``CROSS_FIT_FOLDS`` fold models, each on the train examples outside one fold, and ranks a
train example (recognised by its id and question) with the model that did not see it.

With train data that has no ``gold_inds`` there is nothing to learn from: ``ranker_for`` falls
back to BM25 and says so in ``describe`` (which every results file records).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rank_bm25 import BM25Okapi

_LOG = logging.getLogger(__name__)

RETRIEVERS = ("learned", "bm25", "budget_fill")
# How a results table, model card or page names a retriever.
RETRIEVER_LABELS = {
    "learned": "learned fact ranker (LightGBM lambdarank)",
    "bm25": "BM25 fact ranking",
    "budget_fill": "whole table + BM25-ranked sentences filling the token budget",
}
# Bump whenever a feature changes: cached rankers of another version are never reused.
FEATURE_VERSION = 2
CROSS_FIT_FOLDS = 5
# LightGBM settings: small trees on ~12k (fact, question) rows; one thread and deterministic mode
# so a fit is bit-identical on every run and machine with the same LightGBM.
LGBM_PARAMS = {
    "objective": "lambdarank",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 1.0,
    "lambdarank_truncation_level": 10,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}
LGBM_ROUNDS = 300

# Function words that match everywhere and would drown the informative terms in BM25.
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or that the "
    "this to was were what which with who whom why will would than then there these those".split()
)
_TERM = re.compile(r"[a-z]+|\d+(?:\.\d+)?")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_YEAR = re.compile(r"\b(?:19[5-9]\d|20[0-4]\d)\b")
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


# --- text helpers -------------------------------------------------------------------------


def report_sentences(example: Any) -> list[str]:
    """example.text when present (FinQA's text_N indexing), else pre_text + post_text."""
    text = getattr(example, "text", None)
    if text is None:
        text = list(getattr(example, "pre_text", []) or []) + list(getattr(example, "post_text", []) or [])
    return [str(sentence) for sentence in text]


def example_table(example: Any) -> list[list[str]]:
    return [[str(cell) for cell in row] for row in (getattr(example, "table", None) or [])]


def bm25_terms(text: str) -> list[str]:
    """Lowercase words and numbers; "5,829" and "$5829" both become "5829" so figures match."""
    lowered = text.lower().replace(",", "")
    return [term for term in _TERM.findall(lowered) if term not in _STOPWORDS]


def rank_by_bm25(query: str, documents: Sequence[str]) -> list[int]:
    """Document indices, best match first; ties (and no match at all) keep document order."""
    scores = bm25_scores(query, documents)
    return sorted(range(len(documents)), key=lambda index: (-scores[index], index))


def bm25_scores(query: str, documents: Sequence[str]) -> list[float]:
    if not documents:
        return []
    corpus = [bm25_terms(document) or ["<empty>"] for document in documents]
    return [float(score) for score in BM25Okapi(corpus).get_scores(bm25_terms(query))]


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
    return {_stem(term) for term in bm25_terms(text) if not term.replace(".", "").isdigit()}


def _numbers(text: str) -> set[str]:
    """Numbers as written without separators, years excluded ("1,234.50" -> "1234.5")."""
    found = set()
    for raw in _NUMBER.findall(text.replace(",", "")):
        if _YEAR.fullmatch(raw.lstrip("-")):
            continue
        value = float(raw)
        found.add(f"{abs(value):g}")
    return found


def _years(text: str) -> set[str]:
    return set(_YEAR.findall(text))


def _bigrams(text: str) -> set[tuple[str, str]]:
    terms = [_stem(term) for term in bm25_terms(text)]
    return set(zip(terms, terms[1:]))


# --- facts and their features --------------------------------------------------------------


# Characters a figure cell ("$ 1,234.5", "( 12 )", "5%") may hold besides digits and spaces.
_FIGURE_MARKS = frozenset("$%()-.,")


def _is_figure(cell: str) -> bool:
    """A cell of digits, spaces and figure marks only (a character test: no regex that could
    backtrack on a long hostile cell from a user's own table)."""
    text = cell.strip()
    return any(char.isdigit() for char in text) and all(char.isdigit() or char.isspace() or char in _FIGURE_MARKS for char in text)


def header_is_data(row: Sequence[str]) -> bool:
    """Row 0 is data, not column headers, when one of its value cells is a figure (years and year ranges are headers)."""
    return any(_is_figure(cell) and any(char.isdigit() for char in _YEAR.sub("", cell)) for cell in row[1:])


@dataclass(frozen=True)
class Fact:
    """One table row or report sentence; ``text`` is what BM25 and the features read."""

    id: str
    kind: str  # "table" | "text"
    index: int
    text: str
    name: str = ""  # a table row's first cell
    body: str = ""  # a table row's own cells without the shared column headers; a sentence itself
    cells: tuple[str, ...] = ()  # a table row's value cells (all but the name)
    # A sentence's distance from the table: -1 is the last sentence before it, 0 the first after it
    # (None when the example does not say where the table sits).
    from_table: int | None = None


def facts_of(example: Any) -> list[Fact]:
    """Every table row (the header included) and every report sentence, in document order.

    A row reads as its name, the column headers and its cells, so a question about "2009
    revenue" meets the row "revenue" under the column "2009"."""
    table = example_table(example)
    # A headerless table (row 0 holds figures) has no column headers to share: prefixing its first
    # row's figures to every row would make all rows look alike.
    header = " ".join(table[0][1:]) if table and not header_is_data(table[0]) else ""
    facts = []
    for index, row in enumerate(table):
        name = row[0] if row else ""
        cells = " ".join(row[1:])
        text = " ".join(part for part in (name, header, cells) if part) if index else " ".join(row)
        facts.append(Fact(f"table_{index}", "table", index, text, name, " ".join(row), tuple(row[1:])))
    before = len(example.pre_text) if _split_known(example) else None
    for index, sentence in enumerate(report_sentences(example)):
        facts.append(Fact(f"text_{index}", "text", index, sentence, "", sentence, (), None if before is None else index - before))
    return facts


def _split_known(example: Any) -> bool:
    """Whether example.text is pre_text + post_text, so pre_text's length places the table."""
    pre_text, post_text = getattr(example, "pre_text", None), getattr(example, "post_text", None)
    text = getattr(example, "text", None)
    return pre_text is not None and post_text is not None and (text is None or len(text) == len(pre_text) + len(post_text))


FEATURE_NAMES = (
    "bm25", "bm25_share_of_max", "bm25_rank", "bm25_rank_in_kind", "is_table", "is_header_row",
    "position", "position_from_end", "question_stems_in_fact", "fact_stems_in_question",
    "question_stems_in_row_name", "row_name_stems_in_question", "bigrams_shared",
    "question_years_in_fact", "question_years_in_header", "question_has_years", "question_numbers_in_fact",
    "numbers_in_fact", "has_number", "fact_terms", "n_facts", "n_rows", "n_sentences",
    "asks_percent", "asks_change", "asks_total", "asks_average", "asks_ratio", "fact_has_percent",
    "fact_has_money", "row_is_total", "tfidf_cosine", "bm25_share_of_kind_max", "row_name_bm25_share",
    "row_name_all_in_question", "previous_bm25_share", "next_bm25_share", "overlap_with_best",
    "fact_years", "question_terms", "row_name_is_year", "row_name_year_in_question_range",
    "fact_years_in_question_range", "row_body_bm25_share", "question_has_year_range",
    "longest_shared_run", "longest_run_share_of_name", "row_name_in_question", "header_row_is_data",
    "row_name_repeats", "bm25_minus_third", "tfidf_share_of_kind_max", "row_name_bm25_rank", "question_years",
    "question_numbers", "tfidf_rank_in_kind", "sentence_from_table", "sentence_introduces_table",
    "thereafter_asked",
)


def fact_features(question: str, facts: Sequence[Fact]) -> np.ndarray:
    """One row of ``FEATURE_NAMES`` per fact (float32)."""
    if not facts:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    lowered_question = question.lower()
    question_stems = _stems(question)
    question_bigrams = _bigrams(question)
    question_years = _years(question)
    question_numbers = _numbers(question)
    asks = {kind: float(any(word in lowered_question for word in words)) for kind, words in _ASKS.items()}
    scores = bm25_scores(question, [fact.text for fact in facts])
    best = max(scores) if scores else 0.0
    order = sorted(range(len(facts)), key=lambda index: (-scores[index], index))
    rank = {index: position for position, index in enumerate(order)}
    rank_in_kind: dict[int, int] = {}
    for kind in ("table", "text"):
        members = [index for index in order if facts[index].kind == kind]
        rank_in_kind.update({index: position for position, index in enumerate(members)})
    counts = {kind: sum(fact.kind == kind for fact in facts) for kind in ("table", "text")}
    header_years = _years(facts[0].text) if facts[0].kind == "table" else set()
    tfidf = _tfidf_cosines(question, facts)
    kind_best = {kind: max([scores[i] for i, fact in enumerate(facts) if fact.kind == kind], default=0.0) for kind in ("table", "text")}
    row_indices = [index for index, fact in enumerate(facts) if fact.kind == "table"]
    name_scores = dict(zip(row_indices, bm25_scores(question, [facts[index].name for index in row_indices])))
    name_best = max(name_scores.values(), default=0.0)
    best_stems = _stems(facts[order[0]].text)
    low, high = (int(min(question_years)), int(max(question_years))) if question_years else (0, -1)
    body_scores = dict(zip(row_indices, bm25_scores(question, [facts[index].body for index in row_indices])))
    body_best = max(body_scores.values(), default=0.0)
    question_run_terms = [_stem(term) for term in bm25_terms(question)]
    third = sorted(scores, reverse=True)[min(2, len(scores) - 1)]
    tfidf_best = {kind: max([tfidf[i] for i, fact in enumerate(facts) if fact.kind == kind], default=0.0) for kind in ("table", "text")}
    tfidf_order = sorted(range(len(facts)), key=lambda index: (-tfidf[index], index))
    tfidf_rank: dict[int, int] = {}
    for kind in ("table", "text"):
        members = [index for index in tfidf_order if facts[index].kind == kind]
        tfidf_rank.update({index: position for position, index in enumerate(members)})
    name_order = sorted(row_indices, key=lambda index: (-name_scores[index], index))
    name_rank = {index: position for position, index in enumerate(name_order)}
    name_counts: dict[str, int] = {}
    for index in row_indices:
        key = facts[index].name.strip().lower()
        name_counts[key] = name_counts.get(key, 0) + 1
    # A header row whose cells are figures (not years) is data: FinQA keeps headerless tables as-is.
    first_row_is_data = float(facts[0].kind == "table" and header_is_data((facts[0].name, *facts[0].cells)))
    asks_after = bool(re.search(r"\b(?:after|thereafter|beyond|later)\b", lowered_question))
    spaced_question = " " + re.sub(r"[^a-z0-9]+", " ", lowered_question) + " "

    rows = []
    for index, fact in enumerate(facts):
        stems = _stems(fact.text)
        name_stems = _stems(fact.name) if fact.kind == "table" else set()
        fact_numbers = _numbers(fact.body[len(fact.name):] if fact.kind == "table" else fact.body)
        lowered = fact.text.lower()
        in_kind = counts[fact.kind]
        # A row is matched by its name, a sentence by itself: the longest word run both share.
        own_terms = [_stem(term) for term in bm25_terms(fact.name if fact.kind == "table" else fact.text)]
        run = _longest_run(question_run_terms, own_terms)
        plain_name = re.sub(r"[^a-z0-9]+", " ", fact.name.lower()).strip()
        rows.append([
            scores[index],
            scores[index] / best if best > 0 else 0.0,
            rank[index],
            rank_in_kind[index],
            float(fact.kind == "table"),
            float(fact.kind == "table" and fact.index == 0),
            fact.index / max(1, in_kind - 1),
            in_kind - 1 - fact.index,
            len(question_stems & stems) / max(1, len(question_stems)),
            len(question_stems & stems) / max(1, len(stems)),
            len(question_stems & name_stems) / max(1, len(question_stems)),
            len(question_stems & name_stems) / max(1, len(name_stems)) if name_stems else 0.0,
            len(question_bigrams & _bigrams(fact.text)),
            len(question_years & _years(fact.text)),
            len(question_years & header_years) if fact.kind == "table" else 0.0,
            float(bool(question_years)),
            len(question_numbers & fact_numbers),
            len(fact_numbers),
            float(bool(fact_numbers)),
            len(fact.text.split()),
            len(facts),
            counts["table"],
            counts["text"],
            asks["percent"], asks["change"], asks["total"], asks["average"], asks["ratio"],
            float("%" in lowered or "percent" in lowered),
            float("$" in lowered or "million" in lowered or "billion" in lowered),
            float(fact.kind == "table" and "total" in fact.name.lower()),
            tfidf[index],
            scores[index] / kind_best[fact.kind] if kind_best[fact.kind] > 0 else 0.0,
            name_scores.get(index, 0.0) / name_best if name_best > 0 else 0.0,
            float(bool(name_stems) and name_stems <= question_stems),
            _share(scores, index - 1, facts, fact.kind, kind_best),
            _share(scores, index + 1, facts, fact.kind, kind_best),
            len(stems & best_stems) / max(1, len(stems | best_stems)),
            len(_years(fact.text)),
            len(question_stems),
            float(bool(_YEAR.fullmatch(fact.name.strip()))) if fact.kind == "table" else 0.0,
            float(bool(_YEAR.fullmatch(fact.name.strip())) and low <= int(fact.name.strip()) <= high) if fact.kind == "table" else 0.0,
            sum(low <= int(year) <= high for year in _years(fact.text)),
            body_scores.get(index, 0.0) / body_best if body_best > 0 else 0.0,
            float(high - low > 1),
            run,
            run / max(1, len(own_terms)),
            float(len(plain_name) > 3 and f" {plain_name} " in spaced_question) if fact.kind == "table" else 0.0,
            first_row_is_data,
            name_counts.get(fact.name.strip().lower(), 0) if fact.kind == "table" else 0.0,
            scores[index] - third,
            tfidf[index] / tfidf_best[fact.kind] if tfidf_best[fact.kind] > 0 else 0.0,
            name_rank.get(index, -1),
            len(question_years),
            len(question_numbers),
            tfidf_rank[index],
            -99.0 if fact.from_table is None else float(fact.from_table),
            float(fact.kind == "text" and bool(_INTRO.search(lowered))),
            float(asks_after and "thereafter" in lowered),
        ])
    return np.asarray(rows, dtype=np.float32)


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


def _share(scores: Sequence[float], index: int, facts: Sequence[Fact], kind: str, best: dict[str, float]) -> float:
    """A neighbour's BM25 as a share of its kind's best (-1 when there is no neighbour of that kind)."""
    if not 0 <= index < len(facts) or facts[index].kind != kind:
        return -1.0
    return scores[index] / best[kind] if best[kind] > 0 else 0.0


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


# --- rankers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranking:
    """Fact ids best first, with the score each got (the ranker's own scale)."""

    order: list[str]
    scores: dict[str, float] = field(default_factory=dict)


def example_key(example: Any) -> str:
    """Id and question: how a ranker recognises a train example it must not have seen."""
    raw = f"{getattr(example, 'id', '')}\x00{getattr(example, 'question', '')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _ranking(facts: Sequence[Fact], scores: Sequence[float]) -> Ranking:
    """Facts best score first; ties keep document order."""
    order = sorted(range(len(facts)), key=lambda index: (-scores[index], index))
    return Ranking([facts[index].id for index in order], {fact.id: float(scores[index]) for index, fact in enumerate(facts)})


class BM25Ranker:
    name = "bm25"

    def __init__(self, note: str = "") -> None:
        self.note = note

    def rank(self, example: Any) -> Ranking:
        facts = facts_of(example)
        return _ranking(facts, bm25_scores(str(example.question), [fact.text for fact in facts]))

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "note": self.note} if self.note else {"ranker": self.name}


class LearnedRanker:
    """The full model for any example; for a train example, the fold model that did not see it."""

    name = "learned"

    def __init__(self, full: Any, folds: Sequence[Any], fold_of: dict[str, int], info: dict[str, Any]) -> None:
        self.full, self.folds, self.fold_of, self.info = full, list(folds), dict(fold_of), dict(info)

    def booster_for(self, example: Any) -> tuple[Any, bool]:
        fold = self.fold_of.get(example_key(example))
        return (self.full, False) if fold is None else (self.folds[fold], True)

    def rank(self, example: Any) -> Ranking:
        facts = facts_of(example)
        if not facts:
            return Ranking([], {})
        booster, _ = self.booster_for(example)
        return _ranking(facts, booster.predict(fact_features(str(example.question), facts), num_threads=1))

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, **self.info}


def _training_blocks(examples: Sequence[Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Features and gold labels per example key, computed once and shared by the full and fold fits;
    an example with no gold fact among its facts teaches nothing and is left out."""
    blocks = {}
    for example in examples:
        facts = facts_of(example)
        gold = set(getattr(example, "gold_inds", {}) or {})
        if not facts or not gold & {fact.id for fact in facts}:
            continue
        labels = np.asarray([float(fact.id in gold) for fact in facts], dtype=np.float32)
        blocks[example_key(example)] = (fact_features(str(example.question), facts), labels)
    return blocks


def _fit_booster(blocks: Sequence[tuple[np.ndarray, np.ndarray]], seed: int) -> Any:
    import lightgbm

    features = np.concatenate([block[0] for block in blocks])
    labels = np.concatenate([block[1] for block in blocks])
    dataset = lightgbm.Dataset(features, labels, group=[len(block[1]) for block in blocks],
                               feature_name=list(FEATURE_NAMES), free_raw_data=True)
    return lightgbm.train({**LGBM_PARAMS, "seed": seed}, dataset, num_boost_round=LGBM_ROUNDS)


def fold_assignment(examples: Sequence[Any], folds: int, seed: int) -> dict[str, int]:
    """Each train example's fold: a seeded shuffle dealt round-robin, so fold sizes differ by at most one."""
    keys = sorted({example_key(example) for example in examples})
    order = np.random.default_rng(seed).permutation(len(keys))
    return {keys[index]: position % folds for position, index in enumerate(order)}


def train_fingerprint(examples: Sequence[Any]) -> str:
    """SHA-256 of what a fit reads from the train split: ids, questions, tables, text, gold_inds."""
    digest = hashlib.sha256()
    for example in examples:
        record = [getattr(example, "id", ""), str(example.question), example_table(example), report_sentences(example),
                  sorted(getattr(example, "gold_inds", {}) or {})]
        digest.update(json.dumps(record, ensure_ascii=False).encode())
    return digest.hexdigest()


def has_gold_facts(examples: Sequence[Any]) -> bool:
    return any(getattr(example, "gold_inds", None) for example in examples)


def fit_learned(examples: Sequence[Any], seed: int) -> tuple[Any, list[Any], dict[str, int]]:
    """The full booster and the cross-fitted fold boosters (fold i trained without fold i)."""
    fold_of = fold_assignment(examples, CROSS_FIT_FOLDS, seed)
    blocks = _training_blocks(examples)
    full = _fit_booster(list(blocks.values()), seed)
    folds = []
    for fold in range(CROSS_FIT_FOLDS):
        folds.append(_fit_booster([block for key, block in blocks.items() if fold_of[key] != fold], seed))
    return full, folds, fold_of


def cache_key(fingerprint: str, seed: int) -> str:
    parts = {"train": fingerprint, "features": FEATURE_VERSION, "folds": CROSS_FIT_FOLDS, "params": LGBM_PARAMS,
             "rounds": LGBM_ROUNDS, "seed": seed, "lightgbm": _lightgbm_version()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _lightgbm_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lightgbm")
    except metadata.PackageNotFoundError:
        return "missing"


def load_or_fit(train: Sequence[Any], seed: int, cache_dir: Path | None) -> BM25Ranker | LearnedRanker:
    """The learned ranker for ``train``: from this process's memory or ``cache_dir`` when fit
    before, else fit (and cached there)."""
    import lightgbm

    from finreason import storage

    if not has_gold_facts(train):
        return BM25Ranker("fallback: the train split has no gold_inds to learn from")
    fingerprint = train_fingerprint(train)
    key = cache_key(fingerprint, seed)
    info = {"key": key, "train_sha256": fingerprint, "train_examples": len(train), "feature_version": FEATURE_VERSION,
            "cross_fit_folds": CROSS_FIT_FOLDS, "seed": seed, "lightgbm": _lightgbm_version()}
    path = cache_dir / f"ranker-{key}.json" if cache_dir is not None else None
    ranker = _FITTED.get(key)
    if ranker is None and path is not None and path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            full = lightgbm.Booster(model_str=stored["full"])
            folds = [lightgbm.Booster(model_str=text) for text in stored["folds"]]
            ranker = LearnedRanker(full, folds, stored["fold_of"], info)
        except (OSError, ValueError, KeyError, TypeError, lightgbm.basic.LightGBMError) as error:
            _LOG.warning("cached ranker %s unreadable (%s); fitting again", path, error)
    if ranker is None:
        full, folds, fold_of = fit_learned(train, seed)
        ranker = LearnedRanker(full, folds, fold_of, info)
        _LOG.info("fact ranker fit on %d train examples (key %s)", len(train), key)
    if path is not None and not path.is_file():
        storage.atomic_write_json(path, {
            **info, "full": ranker.full.model_to_string(), "folds": [fold.model_to_string() for fold in ranker.folds],
            "fold_of": ranker.fold_of,
        })
    _FITTED[key] = ranker
    return LearnedRanker(ranker.full, ranker.folds, ranker.fold_of, {**info, "cache": str(path) if path else None})


# Fitted rankers by cache key: tests and long processes that change OUTPUT_DIR fit once.
_FITTED: dict[str, LearnedRanker] = {}


# --- from the configuration -----------------------------------------------------------------

_RANKERS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def ranker_for(cfg: Any) -> BM25Ranker | LearnedRanker | None:
    """The ranker ``cfg.RETRIEVER`` names (None for ``budget_fill``), loaded once per process."""
    name = cfg.RETRIEVER
    if name == "budget_fill":
        return None
    if name == "bm25":
        return BM25Ranker()
    from finreason.data import DataError, load_from_config
    from finreason.layout import Layout

    with _LOCK:
        key = _ranker_key(cfg)
        if key not in _RANKERS:
            try:
                train = load_from_config(cfg, splits=("train",), verbose=False)["train"]
            except DataError as error:
                # evaluating a folder that holds only dev/test: rank, but say that nothing was learned
                _LOG.warning("no train split to fit the fact ranker on (%s); ranking with BM25", error)
                _RANKERS[key] = BM25Ranker(f"fallback: no train split to learn from ({error})")
                return _RANKERS[key]
            _RANKERS[key] = load_or_fit(train, cfg.SEED, Layout.of(cfg).retriever_dir)
        return _RANKERS[key]


def _ranker_key(cfg: Any) -> tuple:
    from finreason.layout import Layout

    return (cfg.RETRIEVER, str(Layout.of(cfg).retriever_dir), cfg.SEED, cfg.DATA_DIR, cfg.FINQA_CACHE_DIR)


def describe(cfg: Any, fit: bool = True) -> dict[str, Any]:
    """What chooses retrieved evidence, for provenance: the retriever, k, the budget and the fitted
    ranker's key and train-data hash. With ``fit=False`` the ranker is described only when this
    process already loaded it (a script that never builds a prompt does not fit one to say so)."""
    name = cfg.RETRIEVER
    out: dict[str, Any] = {"retriever": name, "label": RETRIEVER_LABELS[name], "token_budget": cfg.PROMPT_TOKEN_BUDGET}
    if cfg.EVIDENCE_MODE == "gold":
        out["note"] = "EVIDENCE_MODE=gold: FinQA's gold facts, no retriever"
    if name == "budget_fill":
        return out
    out["top_k"] = cfg.RETRIEVER_TOP_K
    ranker = ranker_for(cfg) if fit and cfg.EVIDENCE_MODE == "retrieved" else _RANKERS.get(_ranker_key(cfg))
    if ranker is not None:
        out.update(ranker.describe())
        if ranker.name != name:
            out["label"] = f"{RETRIEVER_LABELS[ranker.name]} ({ranker.note})"
    return out


def used_by(cfg: Any) -> dict[str, Any] | None:
    """``describe(cfg)`` when the prompts get retrieved evidence, None for gold facts: what a results
    file records under ``retriever``."""
    return describe(cfg) if cfg.EVIDENCE_MODE == "retrieved" else None


def short_label(info: dict[str, Any] | None) -> str:
    """"learned ranker, top 3" / "BM25 ranking, top 3 (fallback: ...)" / "budget fill" for tables."""
    if not info:
        return "budget fill"
    name = info.get("retriever")
    if name == "gold":
        return "gold facts"
    if name == "budget_fill":
        return f"budget fill ({info.get('token_budget')} tokens)"
    ranker = info.get("ranker", name)
    text = f"{'learned ranker' if ranker == 'learned' else 'BM25 ranking'}, top {info.get('top_k')}"
    return f"{text} ({info['note']})" if info.get("note") else text
