"""Fact ranking: which table rows and report sentences of a document answer its question.

A ranker scores every fact (``finreason.document_facts``) of an example for its question;
``finreason.prompts`` keeps the top ``RETRIEVER_TOP_K`` (``RETRIEVER``: ``learned`` or ``bm25``)
or fills the token budget the old way (``budget_fill``).

* ``bm25``: BM25 of the question against each fact (row name, header and cells; or the sentence).
* ``learned``: LightGBM's lambdarank over cheap features of each (question, fact) pair
  (``finreason.ranker_features``), fit on the train split's ``gold_inds`` only, never dev or test.
  The fit is seeded and deterministic (one thread, LightGBM's ``deterministic`` mode), takes
  seconds, and is cached under ``outputs/retriever/`` keyed by the train data's hash,
  ``FEATURE_VERSION`` and the fit settings.

Cross-fitting: a ranker fit on an example ranks it almost perfectly, so a train example's prompt
would hold its gold facts far more often than a dev prompt does. The learned ranker therefore also
fits ``CROSS_FIT_FOLDS`` fold models, each on the train examples outside one fold, and ranks a
train example (recognised by its id and question) with the model that did not see it.

With train data that has no ``gold_inds`` there is nothing to learn from: ``ranker_for`` falls
back to BM25 and says so in ``describe`` (which every results file records). ``describe`` only
reports what is known: the configuration and the ranker handed to it or already loaded in this
process; ``used_by`` and ``describe_in_use`` load the ranker the prompts rank with first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finreason import ranker_features, storage
from finreason.data import DataError, load_from_config
from finreason.document_facts import Ranking, bm25_scores, example_table, facts_of, ranking_of, report_sentences
from finreason.layout import Layout
from finreason.retriever_labels import RETRIEVER_LABELS

_LOG = logging.getLogger(__name__)

RETRIEVERS = ("learned", "bm25", "budget_fill")
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


# --- rankers --------------------------------------------------------------------------------


def example_key(example: Any) -> str:
    """Id and question: how a ranker recognises a train example it must not have seen."""
    raw = f"{getattr(example, 'id', '')}\x00{getattr(example, 'question', '')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class BM25Ranker:
    name = "bm25"

    def __init__(self, note: str = "") -> None:
        self.note = note

    def rank(self, example: Any) -> Ranking:
        facts = facts_of(example)
        return ranking_of(facts, bm25_scores(str(example.question), [fact.text for fact in facts]))

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
        return ranking_of(facts, booster.predict(ranker_features.fact_features(str(example.question), facts), num_threads=1))

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
        blocks[example_key(example)] = (ranker_features.fact_features(str(example.question), facts), labels)
    return blocks


def _fit_booster(blocks: Sequence[tuple[np.ndarray, np.ndarray]], seed: int) -> Any:
    import lightgbm  # only a learned ranker needs it, and importing it costs a second


    features = np.concatenate([block[0] for block in blocks])
    labels = np.concatenate([block[1] for block in blocks])
    dataset = lightgbm.Dataset(features, labels, group=[len(block[1]) for block in blocks],
                               feature_name=list(ranker_features.FEATURE_NAMES), free_raw_data=True)
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
    parts = {"train": fingerprint, "features": ranker_features.FEATURE_VERSION, "folds": CROSS_FIT_FOLDS, "params": LGBM_PARAMS,
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
    import lightgbm  # only a learned ranker needs it, and importing it costs a second

    if not has_gold_facts(train):
        return BM25Ranker("fallback: the train split has no gold_inds to learn from")
    fingerprint = train_fingerprint(train)
    key = cache_key(fingerprint, seed)
    info = {"key": key, "train_sha256": fingerprint, "train_examples": len(train), "feature_version": ranker_features.FEATURE_VERSION,
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
    return (cfg.RETRIEVER, str(Layout.of(cfg).retriever_dir), cfg.SEED, cfg.DATA_DIR, cfg.FINQA_CACHE_DIR)


def describe(cfg: Any, ranker: BM25Ranker | LearnedRanker | None = None) -> dict[str, Any]:
    """What chooses retrieved evidence, for provenance: the retriever, k, the budget and, for
    ``ranker`` or else the ranker this process already loaded for ``cfg``, its key and train-data
    hash. Never loads data nor fits: a script that never builds a prompt records no ranker."""
    name = cfg.RETRIEVER
    out: dict[str, Any] = {"retriever": name, "label": RETRIEVER_LABELS[name], "token_budget": cfg.PROMPT_TOKEN_BUDGET}
    if cfg.EVIDENCE_MODE == "gold":
        out["note"] = "EVIDENCE_MODE=gold: FinQA's gold facts, no retriever"
    if name == "budget_fill":
        return out
    out["top_k"] = cfg.RETRIEVER_TOP_K
    ranker = ranker if ranker is not None else _RANKERS.get(_ranker_key(cfg))
    if ranker is not None:
        out.update(ranker.describe())
        if ranker.name != name:
            out["label"] = f"{RETRIEVER_LABELS[ranker.name]} ({ranker.note})"
    return out


def describe_in_use(cfg: Any) -> dict[str, Any]:
    """``describe`` with the ranker ``cfg``'s prompts rank with when its evidence is retrieved
    (``ranker_for``: loaded, or fit, once per process, as building those prompts does), so a
    results file names the fitted ranker even when it reused every answer and built no prompt."""
    return describe(cfg, ranker_for(cfg) if cfg.EVIDENCE_MODE == "retrieved" else None)


def used_by(cfg: Any) -> dict[str, Any] | None:
    """``describe_in_use(cfg)`` when the prompts get retrieved evidence, None for gold facts: what
    a results file records under ``retriever``."""
    return describe_in_use(cfg) if cfg.EVIDENCE_MODE == "retrieved" else None
