"""The prompt builder on real FinQA examples, measured with the real SmolLM2 tokenizer (from its GGUF)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from finreason import document_facts, prompts
from finreason.configuration import resolve_config
from finreason.data import VENDORED_DIR, load_finqa
from finreason.scoring import score_completion


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def finqa():
    return load_finqa(data_dir=str(VENDORED_DIR), verbose=False)


def measured(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


EXAMPLES = [
    ("dev", "V/2008/page_17.pdf-1"),  # evidence in the table only
    ("dev", "STT/2011/page_83.pdf-1"),  # evidence in the text only
    ("dev", "DVN/2014/page_85.pdf-1"),  # evidence in both
    ("dev", "MS/2014/page_292.pdf-2"),  # the largest table (18 rows)
    ("dev", "CME/2012/page_70.pdf-1"),  # 130 sentences: text must be cut
    ("dev", "PNC/2009/page_46.pdf-3"),  # a yes/no question
    ("dev", "ABMD/2009/page_56.pdf-1"),  # a table operation on a whole row
]
BUDGETS = [
    64,  # smaller than most tables: whole rows only, no text
    512,  # the cpu-profile-sized budget
    1024,  # the rtx4060 default
]


@pytest.mark.parametrize("split, example_id", EXAMPLES)
@pytest.mark.parametrize("budget", BUDGETS)
def test_evidence_is_whole_rows_within_the_measured_budget(tokenizer, finqa, split, example_id, budget):
    example = finqa.by_id(split)[example_id]
    evidence = prompts.select_evidence(example, tokenizer, budget)
    assert measured(tokenizer, evidence.text) == evidence.n_tokens <= budget
    rendered_rows = {prompts.render_row(row) for row in example.table}
    table_lines = [line for line in evidence.text.splitlines() if line.startswith("| ")]
    assert all(line in rendered_rows for line in table_lines)  # never a row cut in the middle
    assert len(table_lines) == len(evidence.table_rows)
    for index in evidence.sentences:
        assert example.text[index] in evidence.text
    assert evidence.kept_ids == {f"table_{i}" for i in evidence.table_rows} | {f"text_{i}" for i in evidence.sentences}


@pytest.mark.parametrize("split, example_id", EXAMPLES)
@pytest.mark.parametrize("budget", BUDGETS)
def test_question_is_always_in_the_prompt(tokenizer, finqa, split, example_id, budget):
    example = finqa.by_id(split)[example_id]
    prompt = prompts.build_prompt(example, tokenizer, budget)
    assert f"Question: {example.question}" in prompt
    assert prompt.rstrip().endswith("assistant")  # generation prompt: the model answers next


@pytest.mark.parametrize("split, example_id", EXAMPLES)
def test_gold_facts_kept_at_default_budget(tokenizer, finqa, split, example_id):
    example = finqa.by_id(split)[example_id]
    assert set(example.gold_inds) <= prompts.select_evidence(example, tokenizer, 1024).kept_ids


def test_gold_fact_recall_on_dev_meets_the_target(tokenizer, finqa):
    dev = finqa["dev"]
    hits = sum(set(e.gold_inds) <= prompts.select_evidence(e, tokenizer, 1024).kept_ids for e in dev)
    assert hits / len(dev) >= 0.98


def test_sentences_keep_their_original_order(tokenizer, finqa):
    example = finqa.by_id("dev")["CME/2012/page_70.pdf-1"]
    evidence = prompts.select_evidence(example, tokenizer, 512)
    text_lines = evidence.text.split("Text:\n", 1)[1].splitlines()
    assert evidence.sentences == sorted(evidence.sentences) and len(evidence.sentences) < len(example.text)
    assert text_lines == [example.text[index] for index in evidence.sentences]


def huge_table_example(rows: int = 400) -> SimpleNamespace:
    table = [["", "2019", "2018"]] + [[f"segment {i} expenses", f"{i}1", f"{i}2"] for i in range(rows)]
    table.append(["net income", "5829", "5735"])
    return SimpleNamespace(question="what was the change in net income from 2018 to 2019?", table=table, pre_text=["intro ."], post_text=[])


@pytest.mark.parametrize("budget", [40, 300, 900])  # header + a few rows, dozens of rows, hundreds of rows
def test_huge_table_keeps_header_and_best_whole_rows(tokenizer, budget):
    example = huge_table_example()
    evidence = prompts.select_evidence(example, tokenizer, budget)
    assert measured(tokenizer, evidence.text) <= budget
    assert 0 in evidence.table_rows  # the header (column names) comes first
    assert len(example.table) - 1 in evidence.table_rows  # the row the question names
    assert len(evidence.table_rows) < len(example.table)
    lines = [line for line in evidence.text.splitlines() if line.startswith("| ")]
    assert all(line in {prompts.render_row(row) for row in example.table} for line in lines)


@pytest.mark.parametrize(
    "pre_text, post_text, table, expect_table, expect_text",
    [
        ([], [], [["", "2019"], ["revenue", "10"]], True, False),  # empty text: table only, no "Text:" section
        (["revenue was $ 10 million ."], [], [], False, True),  # no table (e.g. an upload of text only)
        ([], [], [], False, False),  # nothing at all: the question alone
    ],
)
def test_missing_parts_are_left_out(tokenizer, pre_text, post_text, table, expect_table, expect_text):
    example = SimpleNamespace(question="what was revenue?", table=table, pre_text=pre_text, post_text=post_text)
    evidence = prompts.select_evidence(example, tokenizer, 256)
    assert ("Table:" in evidence.text) is expect_table
    assert ("Text:" in evidence.text) is expect_text
    messages = prompts.build_messages(example, tokenizer, 256)
    assert messages[-1]["content"].endswith("Question: what was revenue?")


def test_build_prompt_is_the_chat_template_of_build_messages(tokenizer, finqa):
    example = finqa["dev"][0]
    messages = prompts.build_messages(example, tokenizer, 512)
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompts.build_prompt(example, tokenizer, 512) == expected
    assert [m["role"] for m in messages] == ["system", "user"]


@pytest.mark.parametrize("few_shot", [True, False])  # with and without the worked example
def test_few_shot_example_is_optional(tokenizer, finqa, few_shot):
    system = prompts.build_messages(finqa["dev"][0], tokenizer, 256, few_shot=few_shot)[0]["content"]
    assert system.startswith(prompts.SYSTEM_PROMPT)
    assert ("Example:" in system) is few_shot


def test_few_shot_example_is_itself_strict_correct():
    completion = prompts.FEW_SHOT_TEXT.split("\n", 2)[2]  # after "Example:" and the question
    assert score_completion(completion, round((5829 - 5735) / 5735, 5), None).strict  # golds are 5-decimal


def test_prompt_from_cfg_uses_the_configured_budget(tokenizer, finqa):
    cfg = resolve_config(["--PROFILE=cpu", "--PROMPT_TOKEN_BUDGET=128", "--FEW_SHOT_EXAMPLE=false", "--EVIDENCE_MODE=retrieved",
                          "--PROMPT_INSTRUCTIONS=full", "--RETRIEVER=budget_fill"])
    example = finqa["dev"][0]
    assert prompts.prompt_from_cfg(example, tokenizer, cfg) == prompts.build_prompt(example, tokenizer, 128, few_shot=False)
    gold = cfg.replace(EVIDENCE_MODE="gold")
    assert prompts.prompt_from_cfg(example, tokenizer, gold) == prompts.build_prompt(example, tokenizer, 128, False, "gold")
    # the app's own tables have no gold facts: it asks for retrieved evidence whatever the mode
    assert prompts.prompt_from_cfg(example, tokenizer, gold, "retrieved") == prompts.prompt_from_cfg(example, tokenizer, cfg)


@pytest.mark.parametrize(
    "text, terms",
    [
        ("Revenue was $ 5,829 in 2008.", ["revenue", "5829", "2008"]),  # thousands separator and $ dropped
        ("the change of 12.5%", ["change", "12.5"]),  # decimals stay whole
        ("", []),  # nothing to match
        ("of the and", []),  # only stopwords
    ],
)
def test_bm25_terms(text, terms):
    assert document_facts.bm25_terms(text) == terms


# --- gold evidence (EVIDENCE_MODE=gold) ---------------------------------


def test_gold_evidence_is_exactly_the_gold_facts_rendered_as_retrieved(tokenizer, finqa):
    for example in finqa["dev"][:60]:
        gold = prompts.gold_evidence(example, tokenizer)
        table_ids = {key for key in example.gold_inds if key.startswith("table_")}
        text_ids = {key for key in example.gold_inds if key.startswith("text_")}
        # every gold fact, the header row when any row is kept, and nothing else
        assert gold.kept_ids == table_ids | text_ids | ({"table_0"} if table_ids else set()), example.id
        assert gold.mode == "gold"
        # the same pipe rows and text block the retrieved mode renders
        for index in gold.table_rows:
            assert prompts.render_row(example.table[index]) in gold.text
        for index in gold.sentences:
            assert example.text[index] in gold.text
        if gold.table_rows and gold.sentences:
            assert gold.text.index("Table:") < gold.text.index("Text:")


@pytest.mark.parametrize(
    "gold_inds, kept",
    [
        ({}, set()),  # no gold facts: only the question goes in
        ({"text_0": "x"}, {"text_0"}),  # text only: no table header
        ({"table_2": "x"}, {"table_0", "table_2"}),  # a gold row brings the header row along
        ({"table_99": "x", "text_99": "x"}, set()),  # indices outside the document are ignored, not an error
        ({"foo": "x", "table_x": "y"}, set()),  # malformed keys are ignored
    ],
)
def test_gold_evidence_edge_cases(tokenizer, gold_inds, kept):
    from types import SimpleNamespace

    example = SimpleNamespace(question="q?", table=[["", "2019"], ["a", "1"], ["b", "2"]], text=["first.", "second."], gold_inds=gold_inds)
    assert prompts.gold_evidence(example, tokenizer).kept_ids == kept


def test_evidence_mode_changes_only_the_evidence(tokenizer, finqa):
    example = finqa["dev"][0]
    retrieved = prompts.build_messages(example, tokenizer, 384, few_shot=False, mode="retrieved")
    gold = prompts.build_messages(example, tokenizer, 384, few_shot=False, mode="gold")
    assert retrieved[0] == gold[0]  # the same system prompt
    assert gold[1]["content"].endswith(f"Question: {example.question}")
    with pytest.raises(ValueError):
        prompts.build_messages(example, tokenizer, 384, mode="oracle")


def test_evidence_labels_mark_gold_as_not_comparable():
    assert "GOLD" in prompts.evidence_label("gold") and "not comparable" in prompts.evidence_label("gold")
    assert prompts.evidence_label(None) == prompts.evidence_label("retrieved")


@pytest.mark.parametrize(
    "instructions, few_shot, has_language, has_example",
    [
        ("full", True, True, True),  # the GPU profiles: the program language explained, a worked example
        ("full", False, True, False),  # no worked example
        ("brief", False, False, False),  # the cpu profile: the format named, learned from the targets
        ("brief", True, False, True),  # brief, with the worked example
    ],
)
def test_system_prompt_variants(instructions, few_shot, has_language, has_example):
    text = prompts.system_prompt(few_shot, instructions)
    assert "'Program:'" in text and "'Answer:'" in text  # every variant names the format
    assert ("table_average" in text) == has_language
    assert ("Example:" in text) == has_example
    with pytest.raises(ValueError):
        prompts.system_prompt(True, "verbose")


def test_brief_instructions_shorten_every_prompt(tokenizer, finqa):
    cfg = resolve_config(["--PROFILE=cpu", "--EVIDENCE_MODE=gold", "--FEW_SHOT_EXAMPLE=false"])
    example = finqa["dev"][0]
    full = len(tokenizer(prompts.prompt_from_cfg(example, tokenizer, cfg.replace(PROMPT_INSTRUCTIONS="full")))["input_ids"])
    brief = len(tokenizer(prompts.prompt_from_cfg(example, tokenizer, cfg.replace(PROMPT_INSTRUCTIONS="brief")))["input_ids"])
    assert full - brief > 100
