"""SFT targets (finreason.trainset.format_target) on every vendored training example."""

from __future__ import annotations

import pytest

from finreason import trainset
from finreason.configuration import resolve_config
from finreason.scoring import score_completion


@pytest.mark.parametrize("style", trainset.TARGET_STYLES)  # every SFT_TARGET value the config allows
def test_every_target_style_is_strict_correct_for_all_of_train(finqa, style):
    failures = [e.id for e in finqa["train"] if not score_completion(trainset.format_target(e, style), e.exe_ans, e.table).strict]
    assert failures == []


def test_reasoning_target_cites_the_gold_evidence(finqa):
    example = finqa["train"][0]
    reasoning, program, answer = trainset.format_target(example).split("\n")
    assert reasoning.startswith("From the table:") and "114400" in reasoning and "329500" in reasoning
    assert program == f"Program: {example.program}"
    assert answer == "Answer: 0.34719"


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("program", "Program: {program}\nAnswer: 0.34719"),  # just the program and its value
        ("reasoning", "From the table: {citation}.\nProgram: {program}\nAnswer: 0.34719"),  # a citation first, then the same lines
    ],
)
def test_target_styles(finqa, style, expected):
    example = finqa["train"][0]
    citation = trainset.format_target(example).split("\n")[0].removeprefix("From the table: ").removesuffix(".")
    assert trainset.format_target(example, style) == expected.format(program=example.program, citation=citation)


@pytest.mark.parametrize("style", ["essay", "", "Program"])  # unknown, empty, wrong case: refused, not guessed
def test_unknown_target_style_is_refused(finqa, style):
    with pytest.raises(ValueError, match="target style"):
        trainset.format_target(finqa["train"][0], style)


@pytest.mark.parametrize(
    ("program", "numbers"),
    [
        ("subtract(5829, 5735), divide(#0, 5735)", [5829.0, 5735.0, 5735.0]),  # literals, not the #0 reference
        ("multiply(351, const_m1), add(#0, 538)", [351.0, 538.0]),  # constants are not cited numbers
        ("table_max(revenue, none), divide(#0, 25%)", [0.25]),  # a table op's row name is not a number
        ("not a program", []),  # unparseable: nothing to cite, no exception
    ],
)
def test_program_numbers(program, numbers):
    assert trainset._program_numbers(program) == numbers


@pytest.mark.parametrize(
    ("limit", "ids"),
    [
        (0, ["a", "b", "c", "a", "b", "c"]),  # 0 = every row
        (2, ["a", "b", "a", "b"]),  # the first 2 examples with both their views, not the first 2 rows
        (9, ["a", "b", "c", "a", "b", "c"]),  # more than there are
    ],
)
def test_first_examples_keeps_every_view_of_the_first_examples(limit, ids):
    given = [{"id": name} for name in "abc"] + [{"id": name, "view": "gold"} for name in "abc"]
    assert [row["id"] for row in trainset.first_examples(given, limit)] == ids


def test_commuted_program_views_are_strict_correct_second_targets(finqa, smollm2_tokenizer):
    cfg = resolve_config(["--PROFILE=cpu"])
    examples = finqa["train"][:40]
    plain = {row["id"]: row for row in trainset.sft_rows(examples, smollm2_tokenizer, cfg, "plain")}
    views = trainset.commuted_program_views(examples, smollm2_tokenizer, cfg)
    assert views and len(views) < len(examples)  # only examples with an add or multiply of two different arguments
    by_id = {example.id: example for example in examples}
    for view in views:
        original = plain[view["id"]]
        assert view["view"] == "commuted" and view["prompt"] == original["prompt"]  # the same question, the same evidence
        assert view["completion"] != original["completion"]  # another program ...
        assert score_completion(view["completion"], by_id[view["id"]].exe_ans, by_id[view["id"]].table).strict  # ... just as right
