"""The fact ranker (finreason.retrieval) and the ranked evidence built from it (finreason.prompts)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest

from finreason import document_facts, prompts, ranker_features, retrieval, retriever_labels
from finreason.configuration import resolve_config
from finreason.data import VENDORED_DIR, load_finqa
from helpers import load_script


@pytest.fixture(scope="module")
def finqa():
    return load_finqa(data_dir=str(VENDORED_DIR), verbose=False)


@pytest.fixture(scope="module")
def learned(finqa, tmp_path_factory):
    """The learned ranker fit on the vendored train split (seconds; memoised for the session)."""
    return retrieval.load_or_fit(finqa["train"], 42, tmp_path_factory.mktemp("retriever"))


def toy(question="what was revenue in 2009?", gold=None, example_id="toy-1"):
    return SimpleNamespace(
        id=example_id, question=question,
        table=[["", "2009", "2008"], ["revenue", "$ 120", "$ 100"], ["net income", "12", "10"], ["total assets", "900", "800"]],
        pre_text=["revenue rose in 2009 .", "the company sells widgets ."], post_text=["net income was flat ."],
        gold_inds=gold if gold is not None else {"table_1": "the revenue of 2009 is $ 120 ;"},
    )


def recall_at_3(ranker, examples):
    return float(np.mean([len(set(e.gold_inds) & set(ranker.rank(e).order[:3])) / len(e.gold_inds) for e in examples]))


# --- facts and features -------------------------------------------------------------------------


def test_facts_are_every_row_and_sentence_in_finqa_indexing():
    facts = document_facts.facts_of(toy())
    assert [fact.id for fact in facts] == ["table_0", "table_1", "table_2", "table_3", "text_0", "text_1", "text_2"]
    revenue = facts[1]
    # a row reads with its column headers, so "2009 revenue" meets the row under the 2009 column
    assert "revenue" in revenue.text and "2009" in revenue.text and revenue.name == "revenue"


def test_features_are_one_finite_row_per_fact():
    facts = document_facts.facts_of(toy())
    features = ranker_features.fact_features("what was revenue in 2009?", facts)
    assert features.shape == (len(facts), len(ranker_features.FEATURE_NAMES))
    assert np.isfinite(features).all()
    column = dict(zip(ranker_features.FEATURE_NAMES, features.T))
    assert column["row_name_stems_in_question"][1] == 1.0  # "revenue" is all of the row's name
    assert column["row_name_stems_in_question"][2] == 0.0  # "net income" is not in the question
    assert column["is_table"].tolist() == [1, 1, 1, 1, 0, 0, 0]


def test_features_of_a_document_without_facts_are_empty():
    assert ranker_features.fact_features("anything?", []).shape == (0, len(ranker_features.FEATURE_NAMES))


def test_feature_names_are_the_columns_the_cached_rankers_were_fit_on():
    # the cached LightGBM models name their columns: same names, same order, none twice
    names = ranker_features.FEATURE_NAMES
    assert len(names) == len(set(names)) == 59 and ranker_features.FEATURE_VERSION == 2
    assert hashlib.sha256(",".join(names).encode()).hexdigest()[:16] == "8fa6522a53959110"


@pytest.mark.parametrize(
    "example, shape, sha256",
    [
        # SHA-256 of the float32 features, computed before the features had a module of their own:
        # the cached rankers and the recorded recalls were fit and measured on exactly these values
        (toy(), (7, 59), "83fa9550d854bd4d"),  # a year and a row name in the question
        (toy("what was the percentage change in net income from 2008 to 2009?"), (7, 59), "c43baeb4c886b333"),  # a year range, asks percent and change
        (toy("what is the total of assets due after 2008 and thereafter?"), (7, 59), "7e4b3558070c2e18"),  # asks total, after/thereafter
        ("dev:0", (72, 59), "bb0661af459f7292"),  # a long FinQA document: many rows and sentences
        ("dev:17", (33, 59), "879db683cd423c79"),  # another table layout
        ("test:3", (17, 59), "bd647c345d76a632"),  # a test example
    ],
)
def test_feature_values_stay_those_the_rankers_were_fit_on(finqa, example, shape, sha256):
    if isinstance(example, str):
        split, index = example.split(":")
        example = finqa[split][int(index)]
    features = ranker_features.fact_features(str(example.question), document_facts.facts_of(example))
    assert features.shape == shape and features.dtype == np.float32
    assert hashlib.sha256(features.tobytes()).hexdigest()[:16] == sha256


@pytest.mark.parametrize(
    "text, terms",
    [
        ("Revenues increased", {"revenu", "increas"}),  # plural and tense stripped...
        ("revenue increase increasing", {"revenu", "increas"}),  # ...to the same stems as the plain forms
        ("taxes tax liabilities liability", {"tax", "liability"}),  # "es" plurals and "ies" plurals
        ("the 2009 total", {"total"}),  # numbers are not stems
    ],
)
def test_stems(text, terms):
    assert ranker_features._stems(text) == terms


@pytest.mark.parametrize(
    "row, is_data",
    [
        (["2008", "$ 4935"], True),  # a headerless table: its first row holds figures
        (["", "2009", "2008"], False),  # years are column headers
        (["", "2008 - 2009"], False),  # so are year ranges
        (["in millions", "( in millions )"], False),  # words are headers
        (["rate", "( 5.5 ) %"], True),  # a negative percent is a figure
        (["hostile", "1" * 200_000 + "x"], False),  # a huge non-figure cell from a user's table: linear, no backtracking
    ],
)
def test_header_is_data(row, is_data):
    assert document_facts.header_is_data(row) is is_data


# --- fitting ------------------------------------------------------------------------------------


def test_fit_is_deterministic(finqa):
    train = finqa["train"][:80]
    first, second = retrieval.fit_learned(train, 42), retrieval.fit_learned(train, 42)
    assert first[0].model_to_string() == second[0].model_to_string()
    assert [b.model_to_string() for b in first[1]] == [b.model_to_string() for b in second[1]]
    assert first[2] == second[2]


def test_folds_are_balanced_and_seeded(finqa):
    train = finqa["train"]
    folds = retrieval.fold_assignment(train, retrieval.CROSS_FIT_FOLDS, 42)
    sizes = np.bincount(list(folds.values()))
    assert len(folds) == len(train) and sizes.max() - sizes.min() <= 1
    assert folds == retrieval.fold_assignment(train, retrieval.CROSS_FIT_FOLDS, 42)
    assert folds != retrieval.fold_assignment(train, retrieval.CROSS_FIT_FOLDS, 7)


def test_each_fold_model_never_sees_its_fold(finqa, monkeypatch):
    train = finqa["train"][:50]
    seen = []
    monkeypatch.setattr(retrieval, "_fit_booster", lambda blocks, seed: seen.append({id(b) for b in blocks}) or len(seen) - 1)
    blocks = retrieval._training_blocks(train)
    monkeypatch.setattr(retrieval, "_training_blocks", lambda examples: blocks)
    full, folds, fold_of = retrieval.fit_learned(train, 42)
    block_ids = {key: id(block) for key, block in blocks.items()}
    assert seen[full] == set(block_ids.values())  # the full model learns from every train example
    for fold, booster in enumerate(folds):
        held_out = {block_ids[key] for key, f in fold_of.items() if f == fold and key in block_ids}
        assert held_out and not held_out & seen[booster]  # ...a fold model from none of its fold


def test_train_examples_are_ranked_by_the_model_that_did_not_see_them(finqa, learned):
    example = finqa["train"][0]
    booster, cross_fitted = learned.booster_for(example)
    assert cross_fitted and booster is learned.folds[learned.fold_of[retrieval.example_key(example)]]
    # the same id with another question is another example: the full model ranks it
    other = dataclasses.replace(example, question=example.question + " in total")
    assert learned.booster_for(other) == (learned.full, False)
    assert learned.booster_for(finqa["dev"][0]) == (learned.full, False)


def test_learned_ranker_beats_bm25_on_dev(finqa, learned):
    # recall@3 on the vendored dev split: a broken feature or label would fall back toward BM25 (~0.70)
    learned_recall, bm25_recall = recall_at_3(learned, finqa["dev"]), recall_at_3(retrieval.BM25Ranker(), finqa["dev"])
    assert learned_recall >= 0.80 and learned_recall > bm25_recall + 0.08


def test_cross_fitted_train_recall_is_like_dev_not_like_memorised(finqa, learned):
    memorised = retrieval.LearnedRanker(learned.full, [], {}, {})  # the full model ranking examples it trained on
    train = finqa["train"]
    assert recall_at_3(learned, train) < recall_at_3(memorised, train)
    assert abs(recall_at_3(learned, train) - recall_at_3(learned, finqa["dev"])) < 0.06


def test_cache_is_keyed_and_read_back(finqa, tmp_path, monkeypatch):
    train = finqa["train"][:40]
    first = retrieval.load_or_fit(train, 42, tmp_path)
    stored = list(tmp_path.glob("ranker-*.json"))
    assert [path.name for path in stored] == [f"ranker-{first.info['key']}.json"]
    monkeypatch.setattr(retrieval, "_FITTED", {})  # a new process
    monkeypatch.setattr(retrieval, "fit_learned", lambda *a: pytest.fail("refit although the cache holds this ranker"))
    again = retrieval.load_or_fit(train, 42, tmp_path)
    example = finqa["dev"][3]
    assert again.rank(example) == first.rank(example) and again.info["key"] == first.info["key"]
    # a new feature version, other train data or another seed is another key
    monkeypatch.setattr(ranker_features, "FEATURE_VERSION", ranker_features.FEATURE_VERSION + 1)
    fingerprint = retrieval.train_fingerprint(train)
    assert retrieval.cache_key(fingerprint, 42) != first.info["key"]
    assert retrieval.cache_key(retrieval.train_fingerprint(train[:39]), 42) != retrieval.cache_key(fingerprint, 42)
    assert retrieval.cache_key(fingerprint, 7) != retrieval.cache_key(fingerprint, 42)


def test_damaged_cache_is_refit_not_fatal(finqa, tmp_path, monkeypatch):
    train = finqa["train"][:30]
    key = retrieval.cache_key(retrieval.train_fingerprint(train), 42)
    (tmp_path / f"ranker-{key}.json").write_text("{not json", encoding="utf-8")
    monkeypatch.setattr(retrieval, "_FITTED", {})
    ranker = retrieval.load_or_fit(train, 42, tmp_path)
    assert ranker.name == "learned" and ranker.rank(finqa["dev"][0]).order


def test_train_without_gold_facts_falls_back_to_bm25_and_says_so(tmp_path):
    train = [toy(gold={}, example_id=f"t{i}") for i in range(5)]
    ranker = retrieval.load_or_fit(train, 42, tmp_path)
    assert ranker.name == "bm25" and "no gold_inds" in ranker.describe()["note"]
    assert "fallback" in retriever_labels.short_label({"retriever": "learned", "top_k": 3, **ranker.describe()})
    assert not list(tmp_path.iterdir())  # nothing learned, nothing cached


# --- evidence from a ranking ---------------------------------------------------------------------


def ranking(*order):
    return document_facts.Ranking(list(order), {fact_id: float(-i) for i, fact_id in enumerate(order)})


@pytest.mark.parametrize(
    "order, k, rows, sentences",
    [
        (("table_2", "text_1", "table_1"), 3, [0, 1, 2], [1]),  # header added; rows and sentences in document order
        (("text_2", "text_0", "table_3"), 2, [], [0, 2]),  # no row kept: no header either
        (("table_0", "table_3"), 1, [0], []),  # the header itself ranked first: kept once
        (("table_9", "text_7", "table_2"), 2, [0, 2], []),  # ids naming nothing in this document are skipped
        (("table_1",), 5, [0, 1], []),  # fewer facts than k
    ],
)
def test_ranked_evidence_keeps_top_k_in_document_order(smollm2_tokenizer, order, k, rows, sentences):
    evidence = prompts.ranked_evidence(toy(), smollm2_tokenizer, 512, ranking(*order), k, "learned")
    assert evidence.table_rows == rows and evidence.sentences == sentences
    assert evidence.retriever == "learned" and evidence.ranking == list(order)
    assert evidence.text.splitlines()[0] == ("Table:" if rows else "Text:")


def test_ranked_evidence_drops_the_lowest_ranked_fact_to_fit_the_budget(smollm2_tokenizer):
    example = toy()
    full = prompts.ranked_evidence(example, smollm2_tokenizer, 512, ranking("text_1", "table_1", "text_0"), 3, "learned")
    budget = full.n_tokens - 1
    trimmed = prompts.ranked_evidence(example, smollm2_tokenizer, budget, ranking("text_1", "table_1", "text_0"), 3, "learned")
    assert trimmed.n_tokens <= budget and trimmed.sentences == [1] and trimmed.table_rows == [0, 1]
    nothing = prompts.ranked_evidence(example, smollm2_tokenizer, 1, ranking("text_1"), 3, "learned")
    assert nothing.text == "" and nothing.n_tokens == 0


def test_ranked_evidence_renders_like_gold_evidence(smollm2_tokenizer, finqa):
    # a ranker that happens to pick exactly the gold facts gives the gold prompt: one format to learn
    example = next(e for e in finqa["dev"] if e.evidence_source == "both")
    gold = prompts.gold_evidence(example, smollm2_tokenizer)
    picked = prompts.ranked_evidence(example, smollm2_tokenizer, 4096, ranking(*sorted(example.gold_inds)), len(example.gold_inds), "learned")
    assert picked.text == gold.text


@pytest.mark.parametrize(
    "retriever, expected",
    [
        ("learned", "learned"),  # the default of EVIDENCE_MODE=retrieved
        ("bm25", "bm25"),  # BM25 fact ranking
        ("budget_fill", "budget_fill"),  # the earlier whole-table selection, kept as a baseline
    ],
)
def test_evidence_from_cfg_follows_retriever(smollm2_tokenizer, finqa, tmp_path, retriever, expected):
    cfg = resolve_config(["--PROFILE=cpu", "--EVIDENCE_MODE=retrieved", f"--RETRIEVER={retriever}", f"--OUTPUT_DIR={tmp_path}",
                          "--DOWNLOAD_DATA=false", "--PROMPT_TOKEN_BUDGET=384"])
    example = finqa["dev"][5]
    evidence = prompts.evidence_from_cfg(example, smollm2_tokenizer, cfg)
    assert evidence.retriever == expected and evidence.mode == "retrieved"
    if expected != "budget_fill":
        assert len(evidence.kept_ids - {"table_0"}) <= cfg.RETRIEVER_TOP_K
        assert evidence.scores and set(evidence.ranking) == {fact.id for fact in document_facts.facts_of(example)}
    assert prompts.prompt_from_cfg(example, smollm2_tokenizer, cfg).count(evidence.text) == 1


def test_gold_mode_fits_no_ranker(smollm2_tokenizer, finqa, tmp_path, monkeypatch):
    monkeypatch.setattr(retrieval, "load_or_fit", lambda *a: pytest.fail("gold evidence needs no ranker"))
    cfg = resolve_config(["--PROFILE=cpu", "--EVIDENCE_MODE=gold", f"--OUTPUT_DIR={tmp_path}", "--DOWNLOAD_DATA=false"])
    assert prompts.evidence_from_cfg(finqa["dev"][0], smollm2_tokenizer, cfg).retriever == "gold"
    assert "note" in retrieval.describe(cfg)


def test_describe_names_retriever_k_and_the_fitted_ranker(tmp_path):
    cfg = resolve_config(["--PROFILE=cpu", "--EVIDENCE_MODE=retrieved", f"--OUTPUT_DIR={tmp_path}", "--DOWNLOAD_DATA=false",
                          "--RETRIEVER_TOP_K=4"])
    info = retrieval.describe_in_use(cfg)
    assert info["retriever"] == "learned" and info["top_k"] == 4 and len(info["key"]) == 16 and info["train_examples"] == 419
    assert (tmp_path / "retriever" / f"ranker-{info['key']}.json").is_file()
    assert retriever_labels.short_label(info) == "learned ranker, top 4"
    assert prompts.evidence_label("retrieved", info) == "retrieved evidence (learned ranker, top 4)"
    assert retriever_labels.short_label(retrieval.describe(cfg.replace(RETRIEVER="budget_fill"))).startswith("budget fill")



BASE_RECORD = {"retriever", "label", "token_budget"}


@pytest.mark.parametrize(
    "overrides, ranker, keys, label",
    [
        ([], None, BASE_RECORD | {"top_k"}, "learned fact ranker (LightGBM lambdarank)"),  # no ranker loaded yet: the configuration only
        ([], retrieval.BM25Ranker("fallback: no gold"), BASE_RECORD | {"top_k", "ranker", "note"}, "BM25 fact ranking (fallback: no gold)"),  # the caller's ranker
        (["--RETRIEVER=bm25"], None, BASE_RECORD | {"top_k"}, "BM25 fact ranking"),  # BM25 is never loaded, so never named
        (["--RETRIEVER=budget_fill"], None, BASE_RECORD, "whole table + BM25-ranked sentences filling the token budget"),  # no k
        (["--EVIDENCE_MODE=gold"], None, BASE_RECORD | {"top_k", "note"}, "learned fact ranker (LightGBM lambdarank)"),  # says no retriever chose
    ],
)
def test_describe_never_loads_data_nor_fits(tmp_path, monkeypatch, overrides, ranker, keys, label):
    monkeypatch.setattr(retrieval, "load_from_config", lambda *a, **k: pytest.fail("describe loaded the train split"))
    monkeypatch.setattr(retrieval, "load_or_fit", lambda *a: pytest.fail("describe fit a ranker"))
    monkeypatch.setattr(retrieval, "_RANKERS", {})  # a process that built no prompt
    cfg = resolve_config(["--PROFILE=cpu", "--EVIDENCE_MODE=retrieved", f"--OUTPUT_DIR={tmp_path}", "--DOWNLOAD_DATA=false", *overrides])
    info = retrieval.describe(cfg, ranker)
    assert set(info) == keys and info["label"] == label

# --- the benchmark -------------------------------------------------------------------------------


def test_evidence_recall_benchmark_reports_every_retriever_per_split(finqa, tmp_path, capsys):
    records = []
    for split in ("dev", "test"):
        raw = json.loads(__import__("gzip").decompress((VENDORED_DIR / f"{split}.json.gz").read_bytes()))[:6]
        records += [{**record, "split": split} for record in raw]
    path = tmp_path / "examples.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    bench = load_script("benchmarks/evidence_recall.py")
    report = bench.main(["--examples", str(path), "--tokenizer", "smollm2", "--ks", "1,3", f"--OUTPUT_DIR={tmp_path / 'out'}",
                         "--PROFILE=cpu", "--DOWNLOAD_DATA=false"])
    rows = {(row["retriever"], row["split"]): row for row in report["results"]}
    assert set(rows) == {(r, s) for r in ("bm25", "learned", "budget_fill") for s in ("dev", "test")}
    for row in rows.values():
        assert row["n"] == 6
        for key in ("recall_at_1", "recall_at_3", "recall_at_5", "all_gold_at_3", "all_gold_at_5", "mean_evidence_tokens"):
            assert key in row
    assert rows[("budget_fill", "dev")]["recall_at_3"] is None  # it ranks no facts
    learned_dev = rows[("learned", "dev")]
    assert 0 <= learned_dev["all_gold_at_3"] <= learned_dev["all_gold_at_5"] <= 1
    assert learned_dev["recall_at_1"] <= learned_dev["recall_at_3"] <= learned_dev["recall_at_5"]
    assert set(learned_dev["by_k"]) == {"1", "3"}
    saved = json.loads((tmp_path / "out" / "bench" / "evidence_recall.json").read_text())
    assert saved["ranker"]["train_examples"] == 419  # fit on the configured train split, not on the measured file
    assert "learned" in capsys.readouterr().out


@pytest.mark.parametrize(
    "results, met",
    [
        ([], False),  # no learned rows at all: no target is met
        ([{"retriever": "learned", "split": s, "recall_at_3": 0.9, "all_gold_at_3": 0.8} for s in ("dev", "test")], True),  # both above both goals
        ([{"retriever": "learned", "split": s, "recall_at_3": None, "all_gold_at_3": None} for s in ("dev", "test")], False),  # not measured
        ([{"retriever": "bm25", "split": s, "recall_at_3": 0.9, "all_gold_at_3": 0.8} for s in ("dev", "test")], False),  # another retriever's numbers never count
    ],
)
def test_evidence_recall_targets_are_false_when_missing(results, met):
    bench = load_script("benchmarks/evidence_recall.py")
    flags = bench.targets_met(results)
    assert len(flags) == 4 and all(flag is met for flag in flags.values())


def test_evidence_recall_rejects_a_missing_examples_file(tmp_path, capsys):
    bench = load_script("benchmarks/evidence_recall.py")
    from finreason import console

    with pytest.raises(SystemExit) as stop:
        console.run_main(bench.main, ["--examples", str(tmp_path / "none.json"), f"--OUTPUT_DIR={tmp_path}"])
    assert stop.value.code == 1 and "no such file" in capsys.readouterr().err


def test_a_data_folder_without_train_ranks_with_bm25_and_says_so(smollm2_tokenizer, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "dev.json.gz").write_bytes((VENDORED_DIR / "dev.json.gz").read_bytes())
    cfg = resolve_config(["--PROFILE=cpu", "--EVIDENCE_MODE=retrieved", f"--DATA_DIR={folder}", f"--OUTPUT_DIR={tmp_path / 'out'}"])
    example = load_finqa(data_dir=str(VENDORED_DIR), verbose=False)["dev"][0]
    assert prompts.evidence_from_cfg(example, smollm2_tokenizer, cfg).retriever == "bm25"
    info = retrieval.describe(cfg)
    assert info["ranker"] == "bm25" and "no train split" in info["note"] and "fallback" in retriever_labels.short_label(info)


def test_ranking_a_question_never_reads_its_gold_facts(finqa, learned):
    # a dev or test prompt must not depend on the annotations being graded: strip them, same ranking
    for example in finqa["dev"][:20]:
        blind = dataclasses.replace(example, gold_inds={}, program="", exe_ans="", answer="")
        assert learned.rank(blind) == learned.rank(example)
        assert retrieval.BM25Ranker().rank(blind) == retrieval.BM25Ranker().rank(example)


# --- distractor views: the gold facts a ranking shows, other near misses beside them ------------------------


class LastOf:
    """An rng whose draw is the last ``k`` of the population: rows below name what is drawn."""

    def sample(self, population, k):
        return list(population)[len(population) - k:]


@pytest.mark.parametrize(
    "order, k, gold, expected",
    [
        # the gold fact stays; two near misses from outside the top 3 replace text_0 and table_2
        (("table_1", "text_0", "table_2", "text_1", "table_3", "text_2", "table_0"), 3, {"table_1"},
         ["table_1", "text_2", "table_0"]),
        # a gold fact the ranker left out of the top 3 stays out: the view misses what the prompt misses
        (("text_0", "table_2", "text_1", "table_1", "table_3", "text_2", "table_0"), 3, {"table_1"},
         ["table_3", "text_2", "table_0"]),
        # every shown fact is gold: nothing to redraw
        (("table_1", "text_0", "table_2"), 1, {"table_1"}, ["table_1"]),
        # near misses come from the 2k best after the shown ones only (text_1 and later are too far down)
        (("table_1", "text_0", "table_2", "text_1", "table_3", "text_2"), 1, {"text_2"}, ["table_2"]),
        # ids naming nothing in this document neither show nor get drawn
        (("table_9", "table_1", "text_0", "text_7", "table_2", "table_3"), 2, {"table_1"}, ["table_1", "table_3"]),
        # fewer near misses than empty slots: the view shows fewer facts
        (("table_1", "text_0"), 3, {"table_1"}, ["table_1"]),
        # two gold facts kept in rank order, one slot redrawn
        (("text_2", "table_3", "table_1", "text_0", "table_2"), 3, {"table_1", "text_2"}, ["text_2", "table_1", "table_2"]),
    ],
)
def test_redrawn_distractors_keep_the_shown_gold_facts(order, k, gold, expected):
    redrawn = prompts.redrawn_distractors(toy(gold={fact_id: "" for fact_id in gold}), ranking(*order), k, LastOf())
    assert redrawn.order == expected


def test_redrawn_distractor_views_show_the_same_gold_facts_beside_other_facts(smollm2_tokenizer, finqa):
    ranker = retrieval.BM25Ranker()
    changed = 0
    for example in finqa["dev"][:40]:
        plain_ranking = ranker.rank(example)
        plain = prompts.ranked_evidence(example, smollm2_tokenizer, 4096, plain_ranking, 3, "bm25")
        views = [prompts.ranked_evidence(example, smollm2_tokenizer, 4096,
                                         prompts.redrawn_distractors(example, plain_ranking, 3, random.Random(f"42:{example.id}:{view}")),
                                         3, "bm25") for view in (1, 2)]
        again = prompts.redrawn_distractors(example, plain_ranking, 3, random.Random(f"42:{example.id}:1"))
        assert again.order == views[0].ranking  # seeded: a rerun writes the same rows
        for view in views:
            assert view.kept_ids & set(example.gold_inds) == plain.kept_ids & set(example.gold_inds)
            assert len(view.kept_ids - {"table_0"}) <= 3  # k facts at most, beside the header a kept row brings
        changed += any(view.kept_ids != plain.kept_ids for view in views)
    assert changed >= 30  # most prompts have distractors to redraw
