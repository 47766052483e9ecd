"""score_file: official prediction JSON and completion JSONL, including hostile files."""

import json
import re

import pytest

from finreason import programs
from finreason.data import load_finqa
from finreason.programs import format_value, tokenize
from finreason.scorefile import MAX_LISTED, ScoreFileError, format_summary_table, score_file


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    cache = tmp_path_factory.mktemp("no_cache")
    return load_finqa(cache_dir=str(cache), download=False, splits=("dev",), verbose=False)


@pytest.fixture(scope="module")
def dev(bundle):
    return bundle["dev"][:5]


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8")
    return path


def test_official_gold_tokens_score_perfectly(tmp_path, bundle, dev):
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps([{"id": e.id, "predicted": tokenize(e.program)} for e in dev]), encoding="utf-8")
    summary, verdicts = score_file(path, "dev", bundle, 0.01)
    assert summary["format"] == "official"
    assert (summary["n"], summary["execution_accuracy"], summary["program_accuracy"], summary["lenient_accuracy"]) == (5, 1.0, 1.0, 1.0)
    assert summary["missing"] == len(bundle["dev"]) - 5
    assert summary["unknown_ids"] == [] and summary["malformed_rows"]["count"] == 0
    assert summary["data"]["source"] == "vendored"
    assert all(v["strict"] and v["program_correct"] for v in verdicts)


def test_official_with_unknown_malformed_and_hostile_rows(tmp_path, bundle, dev):
    rows = [
        {"id": dev[0].id, "predicted": tokenize(dev[0].program)},  # right
        {"id": dev[1].id, "predicted": tokenize("add(1, 2)")},  # executes, wrong value
        {"id": dev[2].id, "predicted": "subtract(303, 189)"},  # a string, not tokens: wrong, no crash
        {"id": dev[3].id, "predicted": [["nested"], 1, None]},  # garbage tokens
        {"id": "NOPE/2000/page_1.pdf-1", "predicted": ["EOF"]},  # unknown id: reported, not scored
        {"predicted": ["EOF"]},  # no id: malformed
        "not an object",  # malformed
        {"id": dev[0].id, "predicted": ["EOF"]},  # duplicate id: the first row counts
    ]
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    summary, verdicts = score_file(path, "dev", bundle, 0.01)
    assert summary["n"] == 4
    assert summary["execution_accuracy"] == 0.25 and summary["program_accuracy"] == 0.25
    assert summary["unknown_ids"] == ["NOPE/2000/page_1.pdf-1"]
    assert summary["malformed_rows"] == {"count": 2, "lines": [6, 7]}
    assert summary["duplicate_ids"] == [dev[0].id]
    assert [v["strict"] for v in verdicts] == [True, False, False, False]
    assert verdicts[2]["error"]


def test_official_lenient_is_on_the_executed_value(tmp_path, bundle):
    example = {e.id: e for e in bundle["dev"]}["AMAT/2013/page_18.pdf-2"]  # 7.22222
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps([{"id": example.id, "predicted": tokenize("divide(18, const_100), divide(1.3, #0), add(#1, 0.01)")}]))
    summary, _ = score_file(path, "dev", bundle, 0.01)
    assert (summary["execution_accuracy"], summary["lenient_accuracy"], summary["program_accuracy"]) == (0.0, 1.0, 0.0)


def test_completions_jsonl(tmp_path, bundle, dev):
    rows = [
        {"id": dev[0].id, "completion": f"Program: {dev[0].program}\nAnswer: {format_value(dev[0].exe_ans)}"},  # right (program)
        {"id": dev[1].id, "completion": f"Answer: {format_value(dev[1].exe_ans * 100)}%"},  # right (answer, percent rule)
        {"id": dev[2].id, "completion": f"Answer: {dev[2].exe_ans * 1.005}"},  # lenient only
        {"id": dev[3].id, "completion": None},  # hostile: not a string
        {"id": dev[4].id, "completion": "x" * 1_000_000},  # hostile: a megabyte of garbage
        {"id": "NOPE/2000/page_1.pdf-1", "completion": "Answer: 1"},  # unknown id
        "{not json",  # malformed line
        "[1, 2]",  # JSON but not an object
        {"completion": "Answer: 1"},  # no id
        {"id": 7, "completion": "Answer: 1"},  # id not a string
        "",  # a blank line is skipped, not malformed
    ]
    path = write_jsonl(tmp_path / "completions.jsonl", rows)
    summary, verdicts = score_file(path, "dev", bundle, 0.01)
    assert summary["format"] == "completions"
    assert summary["n"] == 5
    assert summary["execution_accuracy"] == 0.4 and summary["lenient_accuracy"] == 0.6
    assert "program_accuracy" not in summary
    assert summary["unknown_ids"] == ["NOPE/2000/page_1.pdf-1"]
    assert summary["malformed_rows"] == {"count": 4, "lines": [7, 8, 9, 10]}
    assert [v["source"] for v in verdicts] == ["program", "answer", "answer", "none", "none"]
    assert "not a string" in verdicts[3]["error"]
    table = format_summary_table(summary)
    assert "execution accuracy" in table and "40.00%" in table and "NOPE/2000/page_1.pdf-1" in table


def test_completions_as_json_list(tmp_path, bundle, dev):
    path = tmp_path / "completions.json"
    path.write_text(json.dumps([{"id": dev[0].id, "completion": f"Answer: {format_value(dev[0].exe_ans)}"}]))
    summary, _ = score_file(path, "dev", bundle, 0.01)
    assert (summary["format"], summary["n"], summary["execution_accuracy"]) == ("completions", 1, 1.0)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "neither"),  # empty file
        ('{"id": "a", "predicted": ["EOF"]}', "none of its 1 ids is in the 'dev' split"),  # one JSONL line in the official shape, but no dev id
        ('{"foo": 1}\n{"bar": 2}\n', "neither"),  # JSONL of something else
        ("just some text\n", "neither"),  # not JSON at all
        ("[1, 2, 3]", "neither"),  # a JSON list of numbers
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # a list too deep for the JSON parser: a message, no RecursionError
        ('[{"id": "a", "predicted": ' + "[" * 100_000 + "]" * 100_000 + "}]", "nested too deeply"),  # one deep row sinks the whole list
        ('{"predicted": ["EOF"]}\n{"id": 7, "predicted": ["EOF"]}\n', "no row has a string id"),  # the format, but nothing to score
    ],
)
def test_unusable_file_is_a_clear_error(tmp_path, bundle, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ScoreFileError, match=re.escape(message)):
        score_file(path, "dev", bundle, 0.01)


def test_wrong_split_names_the_split_and_the_right_one(tmp_path):
    # Test predictions scored with --split dev used to exit 0 with n = 0.
    both = load_finqa(cache_dir=str(tmp_path / "no_cache"), download=False, splits=("dev", "test"), verbose=False)
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps([{"id": e.id, "predicted": tokenize(e.program)} for e in both["test"][:20]]), encoding="utf-8")
    with pytest.raises(ScoreFileError, match=r"none of its 20 ids is in the 'dev' split .*score with --split test"):
        score_file(path, "dev", both, 0.01)
    summary, _ = score_file(path, "test", both, 0.01)
    assert (summary["n"], summary["execution_accuracy"]) == (20, 1.0)


def test_wrong_split_without_the_other_split_loaded(tmp_path, bundle):
    # 06_evaluate.py loads only the split it scores: the message still names it and hints at --split.
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": f"NOPE/{k}", "completion": "Answer: 1"} for k in range(3)])
    with pytest.raises(ScoreFileError, match=r"none of its 3 ids is in the 'dev' split .*another split\? \(--split\)"):
        score_file(path, "dev", bundle, 0.01)


def test_lists_are_capped_and_counts_complete(tmp_path, bundle, dev):
    rows = [{"id": dev[0].id, "completion": "Answer: 1"}]
    rows += [{"id": f"NOPE/{k}", "completion": "Answer: 1"} for k in range(5_001)]  # unknown ids
    rows += [{"id": dev[0].id, "completion": "Answer: 2"}] * 60  # duplicates
    rows += ["{not json"] * 70  # malformed
    summary, verdicts = score_file(write_jsonl(tmp_path / "c.jsonl", rows), "dev", bundle, 0.01)
    assert summary["n"] == len(verdicts) == 1
    assert (summary["unknown_count"], len(summary["unknown_ids"])) == (5_001, MAX_LISTED)
    assert summary["unknown_ids"][:2] == ["NOPE/0", "NOPE/1"]
    assert (summary["duplicate_count"], len(summary["duplicate_ids"])) == (60, MAX_LISTED)
    assert (summary["malformed_rows"]["count"], len(summary["malformed_rows"]["lines"])) == (70, MAX_LISTED)
    assert len(summary["missing_ids"]) == MAX_LISTED and summary["missing"] == len(bundle["dev"]) - 1
    table = format_summary_table(summary)
    assert "5001" in table and "NOPE/9 ..." in table


def test_deep_jsonl_line_is_only_that_line(tmp_path, bundle, dev):
    rows = [{"id": dev[0].id, "completion": "Answer: 1"}, "[" * 100_000 + "]" * 100_000, {"id": dev[1].id, "completion": "Answer: 1"}]
    summary, _ = score_file(write_jsonl(tmp_path / "c.jsonl", rows), "dev", bundle, 0.01)
    assert summary["n"] == 2 and summary["malformed_rows"] == {"count": 1, "lines": [2]}


def _first_number(program):
    steps = programs.split_steps(tokenize(program)[:-1])
    return next(arg for op, arg1, arg2 in steps for arg in (arg1, arg2) if "#" not in arg and op not in programs.TABLE_OPS)


def _padded(program, pairs):
    # The gold program, then pairs of add n / subtract n around its result: symbolically the gold, but long.
    steps = programs.split_steps(tokenize(program)[:-1])
    number = _first_number(program)
    out = [programs.render(steps)]
    last = len(steps) - 1
    for _ in range(pairs):
        out += [f"add(#{last}, {number})", f"subtract(#{last + 1}, {number})"]
        last += 2
    return ", ".join(out)


def test_official_program_verdicts_record_the_bound(tmp_path, bundle, dev):
    number = _first_number(dev[2].program)
    long_chain = ", ".join([f"add({number}, {number})"] + [f"add(#{k - 1}, {number})" for k in range(1, 200)])
    rows = [
        {"id": dev[0].id, "predicted": tokenize(dev[0].program)},  # the gold: decided officially, no note
        {"id": dev[1].id, "predicted": tokenize(_padded(dev[1].program, 100))},  # equal but 200+ steps: the bound decides and says so
        {"id": dev[2].id, "predicted": tokenize(long_chain)},  # 200 steps over the gold's own number: unequal for certain, no note
    ]
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    summary, verdicts = score_file(path, "dev", bundle, 0.01)
    assert [v["program_correct"] for v in verdicts] == [True, False, False]
    assert verdicts[0]["program_compare_note"] is None and verdicts[2]["program_compare_note"] is None
    assert "too large to compare symbolically" in verdicts[1]["program_compare_note"]
    assert verdicts[1]["strict"]  # execution accuracy is unaffected: the padded program still runs to the answer
    assert summary["program_compare_notes"] == 1
    assert "not compared officially" in format_summary_table(summary)


def test_missing_file_and_unknown_split(tmp_path, bundle):
    with pytest.raises(ScoreFileError, match="no such file"):
        score_file(tmp_path / "absent.jsonl", "dev", bundle, 0.01)
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "x", "completion": "Answer: 1"}])
    with pytest.raises(ScoreFileError, match="unknown split"):
        score_file(path, "test", bundle, 0.01)


def test_binary_file_is_a_clear_error(tmp_path, bundle):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScoreFileError, match="not UTF-8"):
        score_file(path, "dev", bundle, 0.01)
