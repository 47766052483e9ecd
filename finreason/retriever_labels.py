"""How a results table, model card or page names a retriever (``finreason.retrieval``'s records)."""

from __future__ import annotations

from typing import Any

RETRIEVER_LABELS = {
    "learned": "learned fact ranker (LightGBM lambdarank)",
    "bm25": "BM25 fact ranking",
    "budget_fill": "whole table + BM25-ranked sentences filling the token budget",
}


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
