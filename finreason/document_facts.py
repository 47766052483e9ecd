"""The facts of a FinQA document and BM25 over them: what every ranker ranks.

A *fact* is one table row (``table_i``, FinQA's row index, the header included) or one report
sentence (``text_j``, the index into pre_text + post_text), the units FinQA's ``gold_inds`` mark.
BM25 matches a question against each fact's text (row name, header and cells; or the sentence);
a ``Ranking`` is the order a ranker puts an example's facts in (``finreason.retrieval``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rank_bm25 import BM25Okapi

# Function words that match everywhere and would drown the informative terms in BM25.
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or that the "
    "this to was were what which with who whom why will would than then there these those".split()
)
_TERM = re.compile(r"[a-z]+|\d+(?:\.\d+)?")
YEAR = re.compile(r"\b(?:19[5-9]\d|20[0-4]\d)\b")


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


# Characters a figure cell ("$ 1,234.5", "( 12 )", "5%") may hold besides digits and spaces.
_FIGURE_MARKS = frozenset("$%()-.,")


def _is_figure(cell: str) -> bool:
    """A cell of digits, spaces and figure marks only (a character test: no regex that could
    backtrack on a long hostile cell from a user's own table)."""
    text = cell.strip()
    return any(char.isdigit() for char in text) and all(char.isdigit() or char.isspace() or char in _FIGURE_MARKS for char in text)


def header_is_data(row: Sequence[str]) -> bool:
    """Row 0 is data, not column headers, when one of its value cells is a figure (years and year ranges are headers)."""
    return any(_is_figure(cell) and any(char.isdigit() for char in YEAR.sub("", cell)) for cell in row[1:])


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


@dataclass(frozen=True)
class Ranking:
    """Fact ids best first, with the score each got (the ranker's own scale)."""

    order: list[str]
    scores: dict[str, float] = field(default_factory=dict)


def ranking_of(facts: Sequence[Fact], scores: Sequence[float]) -> Ranking:
    """Facts best score first; ties keep document order."""
    order = sorted(range(len(facts)), key=lambda index: (-scores[index], index))
    return Ranking([facts[index].id for index in order], {fact.id: float(scores[index]) for index, fact in enumerate(facts)})
