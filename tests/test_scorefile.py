"""score_file: official prediction JSON and completion JSONL, including hostile files."""

import json

import pytest

from finreason.data import load_finqa
from finreason.programs import format_value, tokenize
from finreason.scorefile import ScoreFileError, format_summary_table, score_file


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
        ('{"id": "a", "predicted": ["EOF"]}', "neither"),  # one JSON object per file is not a list...
        ('{"foo": 1}\n{"bar": 2}\n', "neither"),  # JSONL of something else
        ("just some text\n", "neither"),  # not JSON at all
        ("[1, 2, 3]", "neither"),  # a JSON list of numbers
    ],
)
def test_neither_format_is_a_clear_error(tmp_path, bundle, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    if content.startswith('{"id"'):
        # ... but it is also one valid JSONL line in the official shape, so it scores (and misses everything).
        summary, _ = score_file(path, "dev", bundle, 0.01)
        assert summary["n"] == 0 and summary["unknown_ids"] == ["a"] and summary["execution_accuracy"] is None
        return
    with pytest.raises(ScoreFileError, match=message):
        score_file(path, "dev", bundle, 0.01)


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
