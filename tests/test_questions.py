"""Question files over your own documents: cell normalisation (measured on FinQA's table/table_ori
pairs), the file format and its invalid lines, and 06_evaluate.py --questions / --compare end to
end with the tiny random model (tests/data/own_reports.jsonl, written by hand)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib
import io
import json
import os
import time
from pathlib import Path

import pytest

from finreason import generation, prompts, questions, retrieval, uploads
from finreason.errors import FinReasonError
from helpers import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
OWN_REPORTS = ROOT / "tests" / "data" / "own_reports.jsonl"
FINQA = ROOT / "data" / "finqa"
evaluate_script = importlib.import_module("06_evaluate")

# --- cells as FinQA wrote them ------------------------------------------------------------------


@pytest.mark.parametrize(
    "published, finqa",
    [
        ("$1,452.4", "$ 1452.4"),  # thousands separator removed, "$" its own token
        ("$ 93,500", "$ 93500"),  # the issue's example, already spaced
        ("1,310.0", "1310.0"),  # decimals kept as written
        ("(1,234)", "-1234 ( 1234 )"),  # accounting negative, written out as FinQA does
        ("$(1.10)", "$ -1.10 ( 1.10 )"),  # a negative with a currency sign
        ("12.5%", "12.5% ( 12.5 % )"),  # percent, as FinQA writes it
        ("50.3<i></i>", "50.3"),  # empty HTML tags from the published page go
        ("Visa Inc.<sup>(1)</sup>", "visa inc . ( 1 )"),  # footnote marker spaced, never a negative
        ("Payments Volume  (billions)", "payments volume ( billions )"),  # runs of spaces, parentheses spaced
        ("Property, plant, and equipment", "property plant and equipment"),  # FinQA drops every comma
        ("Add: stock-based compensation", "add : stock-based compensation"),  # a ":" before a space stands apart
        ("—", "-"),  # deliberately not FinQA's "2014" (the dash's code point, a year-like number)
        ("Revenue", "revenue"),  # plain text: only lowercased
        ("2019", "2019"),  # a year is not touched
        ("", ""),  # an empty cell stays empty
    ],
)
def test_normalise_cell(published, finqa):
    assert uploads.normalise_cell(published) == finqa


@pytest.mark.parametrize(
    "cell, wrong",
    [
        ("Other<sup>(1)</sup>", "-1"),  # a footnote marker is never an accounting negative
        ("(3) million", "-3"),  # only a whole cell "(3)" is a negative, not a parenthesis in text
        ("FY2019", "fy 2019"),  # letters glued to a number are left glued
        ("Tranche A-1", "a -1"),  # a hyphen in a name is not a minus sign
        ("1,5", "1,5"),  # every comma goes, as in FinQA's tables
    ],
)
def test_normalise_cell_leaves_alone(cell, wrong):
    assert wrong not in uploads.normalise_cell(cell)


def _finqa_cell_pairs() -> list[tuple[str, str]]:
    pairs = []
    for split in ("train", "dev", "test"):
        with gzip.open(FINQA / f"{split}.json.gz", "rt", encoding="utf-8") as handle:
            for record in json.load(handle):
                original, table = record.get("table_ori"), record.get("table")
                if not original or len(original) != len(table):
                    continue
                for original_row, row in zip(original, table):
                    if len(original_row) == len(row):
                        pairs.extend(zip(original_row, row))
    return pairs


def test_normaliser_reproduces_finqa_tables_from_table_ori():
    """Measured on every vendored cell pair: 96.6% of 24,427 cells map exactly; 99.2% of those
    without a typographic dash or quote (FinQA wrote those as code points, "—" -> "2014", which
    is deliberately not copied). The rest are FinQA quirks ("2008<sup>1</sup>" -> "20081")."""
    pairs = _finqa_cell_pairs()
    assert len(pairs) > 20_000
    exact = [uploads.normalise_cell(original) == cell for original, cell in pairs]
    assert sum(exact) / len(pairs) >= 0.96
    plain = [ok for (original, _), ok in zip(pairs, exact) if not any(ch in original for ch in "\u2014\u2013\u2019\u2212\u20ac")]
    assert sum(plain) / len(plain) >= 0.99


def test_report_text_drops_thousands_separators():
    assert uploads.split_sentences("Headcount was 3,400.\n\nCapex was $310.5 million.") == ["headcount was 3400.", "capex was $ 310.5 million."]


# --- the file format ------------------------------------------------------------------------------


def test_hand_made_file_parses_and_names_every_invalid_line():
    found = questions.read_questions(OWN_REPORTS)
    assert len(found.questions) == 13
    assert sum(q.answer is not None for q in found.questions) == 12
    reasons = {bad["line"]: bad["reason"] for bad in found.invalid}
    assert sorted(reasons) == [14, 15, 16, 17, 18, 19, 20]
    assert "not valid JSON" in reasons[14]
    assert "duplicate id 'acme-1'" in reasons[15]
    assert "no question" in reasons[16]
    assert "not a number or yes/no" in reasons[17]
    assert "scale 'percentage'" in reasons[18]
    assert "give a table" in reasons[19]  # an empty table and no text
    assert "not a JSON object" in reasons[20]
    by_id = {q.id: q for q in found.questions}
    assert by_id["acme-1"].table[1] == ["net revenue", "$ 12450", "$ 11020"]  # the issue's table, normalised
    assert by_id["acme-1"].table[2] == ["cost of revenue", "-7310 ( 7310 )", "-6540 ( 6540 )"]
    assert by_id["beta-1"].table[:2] == [["", "year ended december 31", ""], ["", "2021", "2020"]]  # two header rows kept
    assert (by_id["beta-1"].answer, by_id["beta-1"].scale) == ("12.7", "percent")  # "12.7%" read as percent
    assert by_id["gamma-1"].table[1] == ["north", "1204", "1150"]  # a markdown table as one string
    assert by_id["gamma-3"].table[1] == ["north", "1204", "1150"]  # a CSV table as one string
    assert by_id["gamma-2"].table == [] and by_id["gamma-2"].text[1].startswith("capital expenditures were $ 310.5")
    assert by_id["gamma-3"].answer is None  # no answer: answered, not scored


TABLE = [["", "2019"], ["revenue", "5"]]


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"question": "q?", "table": TABLE}, "no id"),  # an id is required
        ({"id": "", "question": "q?", "table": TABLE}, "no id"),  # and not empty
        ({"id": True, "question": "q?", "table": TABLE}, "no id"),  # a boolean is not an id
        ({"id": "a", "question": "  ", "table": TABLE}, "type a question"),  # a blank question
        ({"id": "a", "question": "q?", "table": "just prose"}, "header row"),  # a table string that is no table
        ({"id": "a", "question": "q?", "table": [["a"], "b"]}, "list of rows"),  # rows must be lists
        ({"id": "a", "question": "q?", "table": [["a", {"x": 1}], ["b", "1"]]}, "text or numbers"),  # cells are scalars
        ({"id": "a", "question": "q?", "table": TABLE, "text": [1, 2]}, "list of strings"),  # text items are strings
        ({"id": "a", "question": "q?", "table": TABLE, "answer": [1]}, "answer must be"),  # answer is a scalar
        ({"id": "a", "question": "q?", "table": TABLE, "answer": True}, "answer must be"),  # a boolean is no answer
        ({"id": "a", "question": "q?", "table": TABLE, "answer": "5%", "scale": "million"}, "is a percent"),  # conflicting units
        ({"id": "a", "question": "q?", "table": [["a", "b"], ["c", "d"]]}, "no numbers"),  # nothing to calculate with
        ({"id": "a", "question": "q?", "table": TABLE, "answer": 10**400}, "is not a number"),  # too large for a float: was OverflowError
        ({"id": "a", "question": "q?", "table": TABLE, "answer": "0x10"}, "is not a number"),  # hex: was read as 0.0
        ({"id": "a", "question": "q?", "table": TABLE, "answer": "12abc"}, "is not a number"),  # trailing letters: was 12
        ({"id": "a", "question": "q?", "table": TABLE, "answer": "1.2.3"}, "is not a number"),  # two points: was 1.2
        ({"id": "a", "question": "q?", "table": TABLE, "scale": 0}, "scale '0' is not one of"),  # a falsy scale was silently ""
        ({"id": "a", "question": "q?", "table": TABLE, "scale": False}, "scale 'False' is not one of"),  # and so was false
        ({"id": "a", "question": "q?", "table": TABLE, "scale": []}, "scale '[]' is not one of"),  # and []
        ({"id": "a", "question": "q?", "text": "x" * 6000 + " 5."}, "a sentence of the report text is 6003 characters"),  # no prompt holds it
        ({"id": "a", "question": "q?", "table": "a,1\n" * 300_000}, "a question file's limit"),  # a table string names this limit
    ],
)
def test_invalid_records_are_named(record, reason):
    found = questions.parse_questions(json.dumps(record) + "\n" + json.dumps({"id": "ok", "question": "q?", "table": TABLE}))
    assert [q.id for q in found.questions] == ["ok"]  # the rest is answered
    assert len(found.invalid) == 1 and reason in found.invalid[0]["reason"] and found.invalid[0]["line"] == 1


@pytest.mark.parametrize(
    "record, answer, scale",
    [
        ({"answer": 12.6}, 12.6, ""),  # a JSON number
        ({"answer": "12.6"}, "12.6", ""),  # a numeric string keeps its written decimals
        ({"answer": "yes"}, "yes", ""),  # yes/no
        ({"answer": "12.5%"}, "12.5", "percent"),  # a percent string is the number in percent
        ({"answer": 12.5, "scale": "percent"}, 12.5, "percent"),  # scale given
        ({"answer": 1452, "scale": "million"}, 1452, "million"),  # a unit scale
        ({}, None, ""),  # no answer at all
        ({"answer": ""}, None, ""),  # an empty answer is no answer
    ],
)
def test_answers_and_scales(record, answer, scale):
    found = questions.parse_questions(json.dumps({"id": "a", "question": "q?", "table": TABLE, **record}))
    assert (found.questions[0].answer, found.questions[0].scale) == (answer, scale)


def test_json_list_and_ids_as_numbers():
    text = json.dumps([{"id": 1, "question": "q?", "table": TABLE}, {"id": 2, "question": "q?", "text": "Revenue was 5."}, 7])
    found = questions.parse_questions(text)
    assert [q.id for q in found.questions] == ["1", "2"]
    assert found.invalid == [{"line": 3, "id": None, "reason": "not a JSON object"}]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"[{\"id\": 1,", "not one JSON list"),  # a broken JSON list cannot be read line by line
        (b"", "it is empty"),  # nothing at all
        (b"\x00\x01\x02", "binary"),  # not text
        (b"{\"id\": 1}\nnot json\n", "has no valid question"),  # every line invalid: say why, in one line
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path, data, message):
    path = tmp_path / "q.jsonl"
    path.write_bytes(data)
    with pytest.raises(questions.QuestionFileError, match=message):
        questions.read_questions(path)


def test_a_5000_row_table_is_answered_in_bounded_time(smollm2_tokenizer):
    rows = [["", "2019", "2018"]] + [[f"item {i}", f"$ {3 * i:,}", f"{2 * i:,}"] for i in range(5000)]
    record = {"id": "big", "question": "what was the change in item 4321 from 2018 to 2019?", "table": rows, "answer": 4321}
    started = time.perf_counter()
    question = questions.parse_questions(json.dumps(record)).questions[0]
    evidence = prompts.evidence_for(question, smollm2_tokenizer, 384, "retrieved", retrieval.BM25Ranker(), 3)
    assert time.perf_counter() - started < 30
    assert question.table[4322] == ["item 4321", "$ 12963", "8642"]
    assert "table_4322" in evidence.kept_ids and evidence.n_tokens <= 384


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"id": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than"),  # was RecursionError
        (b'{"id": "big", "question": "q?", "text": "5.", "answer": ' + b"9" * 400 + b"}", "is not a number"),  # was OverflowError
        (b'{"id": "inf", "question": "q?", "text": "5.", "answer": 1e400}', "is not a number"),  # JSON's 1e400 reads as inf
        ('{"id": "latin", "question": "q?", "text": "5 €."}'.encode("cp1252"), "not UTF-8 text"),  # one Latin-1 line: named, not guessed
    ],
)
def test_hostile_lines_cost_only_their_line(line, reason):
    good = json.dumps({"id": "ok", "question": "costs 5 €?", "table": TABLE}).encode()
    found = questions._parse_stream(io.BytesIO(line + b"\n" + good + b"\n"), "q.jsonl", "q.jsonl")
    assert [q.id for q in found.questions] == ["ok"] and "€" in found.questions[0].question  # the UTF-8 line decodes as UTF-8
    assert len(found.invalid) == 1 and reason in found.invalid[0]["reason"]


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(tmp_path / "q.jsonl")
        return tmp_path / "q.jsonl"
    return Path(kind)


@pytest.mark.parametrize(
    "data, message",
    [
        ("/dev/zero", "is a device"),  # endless zeros with st_size 0: grew to 18 GB before
        ("fifo", "is a FIFO"),  # a named pipe: hung before
        (b"\xff\xfe" + '{"id": 1}\n'.encode("utf-16-le"), "is UTF-16 text: save it as UTF-8"),  # was called binary
        (b"\xef\xbb\xbf" + json.dumps({"id": 1, "question": "q?", "table": TABLE}).encode(), None),  # a UTF-8 BOM is fine
    ],
)
def test_question_files_that_are_not_files_or_not_utf8(tmp_path, data, message):
    if isinstance(data, bytes):
        path = tmp_path / "q.jsonl"
        path.write_bytes(data)
    else:
        path = _special(tmp_path, data)
    if message is None:
        assert [q.id for q in questions.read_questions(path).questions] == ["1"]
    else:
        with pytest.raises(questions.QuestionFileError, match=message):
            questions.read_questions(path)


def test_limit_stops_parsing_but_the_hash_covers_the_whole_file(tmp_path, monkeypatch):
    lines = [json.dumps({"id": f"q{i}", "question": "q?", "table": TABLE}) for i in range(5)]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join([lines[0], "not json", lines[1], lines[2], "not json either", *lines[3:]]) + "\n")
    whole = questions.read_questions(path)
    parsed = []
    monkeypatch.setattr(questions, "parse_record", lambda raw, parse=questions.parse_record: parsed.append(raw) or parse(raw))
    found = questions.read_questions(path, limit=2)
    assert [q.id for q in found.questions] == ["q0", "q1"] and len(parsed) == 2  # nothing after the second valid question
    assert [bad["line"] for bad in found.invalid] == [2] and len(whole.invalid) == 2
    assert found.sha256 == whole.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # one file, one hash


@pytest.mark.parametrize(
    "cell, written",
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),  # a formula: shown as text
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),  # DDE: would start a program
        ("+1+cmd", "'+1+cmd"),  # a plus starts a formula too
        ("-2+3+cmd", "'-2+3+cmd"),  # and a minus
        ("@SUM(A1)", "'@SUM(A1)"),  # and an at sign
        ("\t=1", "'\t=1"),  # a tab before one
        ("\r=1", "'\r=1"),  # a carriage return before one
        ("-12.5", "-12.5"),  # a negative number stays a number
        ("1,234.5", "1,234.5"),  # a number with a thousands separator too
        ("what was revenue?", "what was revenue?"),  # ordinary text is as written
    ],
)
def test_answers_csv_is_safe_to_open_in_a_spreadsheet(cell, written):
    record = {"id": cell, "question": cell, "answer": None, "predicted": -0.5}
    rows = list(csv.DictReader(io.StringIO(questions.answers_csv([record]))))
    assert rows[0]["id"] == written and rows[0]["question"] == written
    assert rows[0]["predicted"] == "-0.5"  # numbers stay numbers


def test_a_table_over_the_row_limit_is_an_invalid_line():
    rows = [["", "2019"]] + [[f"item {i}", "1"] for i in range(questions.MAX_TABLE_ROWS + 1)]
    found = questions.parse_questions(json.dumps({"id": "huge", "question": "q?", "table": rows}))
    assert not found.questions and "the limit is" in found.invalid[0]["reason"]


def test_answers_csv_has_one_row_per_question():
    records = [{"id": "a", "question": "q", "predicted": 0.12976, "answer": 13.0, "scale": "percent", "strict": False, "tolerant": True,
                "lenient": True, "program": "divide(1, 2)", "source": "program", "error": None}]
    lines = questions.answers_csv(records).splitlines()
    assert lines[0] == ",".join(questions.CSV_COLUMNS)
    assert lines[1] == "a,q,0.12976,13.0,percent,False,True,True,\"divide(1, 2)\",program,"


# --- 06_evaluate.py --questions / --compare (tiny random model) ------------------------------------

ISSUE_COMPLETION = "Net revenue rose.\nProgram: subtract(12450, 11020), divide(#0, 11020)\nAnswer: 0.12976"


def _run(capsys, *args):
    summary = evaluate_script.main(list(args))
    out = capsys.readouterr().out
    return summary, out


def test_questions_command_answers_scores_resumes_and_compares(tiny_qwen2_dir, tmp_path, capsys, monkeypatch):
    base = tiny_overrides(tiny_qwen2_dir, tmp_path / "out", "--RETRIEVER=bm25")
    summary, out = _run(capsys, "--questions", str(OWN_REPORTS), "--stage", "zero_shot", "--json", *base)
    printed = json.loads(out)
    for key in ("n", "n_with_answer", "execution_accuracy", "tolerant_accuracy", "execution_accuracy_ci95",
                "tolerant_accuracy_ci95", "invalid_lines", "evidence_mode", "retriever"):
        assert key in printed
    assert (printed["n"], printed["n_with_answer"], printed["invalid_lines"]) == (13, 12, 7)
    assert printed["evidence_mode"] == "retrieved" and printed["retriever"]["retriever"] == "bm25"
    records = [json.loads(line) for line in Path(summary["records"]).read_text().splitlines()]
    assert [r["id"] for r in records] == [q.id for q in questions.read_questions(OWN_REPORTS).questions]  # the file's order
    assert set(questions.RECORD_FIELDS) <= set(records[0])
    assert all(r["evidence"] for r in records)
    unanswered = next(r for r in records if r["id"] == "gamma-3")
    assert unanswered["strict"] is None and unanswered["tolerant"] is None  # no answer given: no verdict

    # a rerun resumes: nothing is generated again
    again, _ = _run(capsys, "--questions", str(OWN_REPORTS), "--stage", "zero_shot", *base)
    assert again["generated_this_run"] == 0 and again["n"] == 13

    # the issue's program, canned as the "sft" model's completion: traced, not strict, tolerant
    monkeypatch.setattr(generation, "generate", lambda loaded, prompts_, *args, **kwargs: [ISSUE_COMPLETION for _ in prompts_])
    sft, _ = _run(capsys, "--questions", str(OWN_REPORTS), "--stage", "sft", "--weights", str(tiny_qwen2_dir), "--limit", "3", *base)
    assert sft["n"] == 3 and sft["generated_this_run"] == 3
    first = json.loads(Path(sft["records"]).read_text().splitlines()[0])
    assert first["id"] == "acme-1" and first["predicted"] == 0.12976
    assert [step["value"] for step in first["steps"]] == [1430.0, pytest.approx(1430 / 11020)]
    assert (first["strict"], first["tolerant"]) == (False, True)  # gold 13.0% to one decimal

    table, out = _run(capsys, "--compare", "zero_shot", "sft", "--questions", str(OWN_REPORTS), "--json", *base)
    assert json.loads(out)["shared_ids"] == 3 == table["shared_ids"]
    assert {"a", "b", "a_only", "b_only", "p_value"} <= set(table["tolerant"]["pairs"][0])
    assert [row["tolerant_accuracy"] for row in table["tolerant"]["stages"]][1] >= 1 / 3  # sft's canned program: acme-1 at least

    # a changed file starts afresh (the old records are archived, not mixed in)
    changed = tmp_path / "own_reports.jsonl"
    changed.write_text(OWN_REPORTS.read_text().replace("What was the change in headcount", "What was the headcount change"))
    fresh, _ = _run(capsys, "--questions", str(changed), "--stage", "zero_shot", "--limit", "2", *base)
    assert fresh["generated_this_run"] == 2
    with pytest.raises(FinReasonError, match="changed since sft"):
        evaluate_script.main(["--compare", "zero_shot", "sft", "--questions", str(changed), *base])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--questions", "missing.jsonl", "--stage", "zero_shot"], "cannot read the questions file"),  # no such file
        (["--questions", str(OWN_REPORTS)], "needs --stage"),  # nothing to run
        (["--compare", "zero_shot", "sft"], "add --questions"),  # a comparison needs the file
        (["--questions", str(OWN_REPORTS), "--compare", "sft", "sft"], "two different stages"),  # one stage twice
        (["--questions", str(OWN_REPORTS), "--compare", "zero_shot", "sft"], "no results of zero_shot"),  # nothing run yet
        (["--questions", str(OWN_REPORTS), "--stage", "zero_shot", "--split", "dev"], "drop --split"),  # FinQA options
    ],
)
def test_questions_usage_errors_are_one_line(tmp_path, args, message):
    with pytest.raises(FinReasonError, match=message):
        evaluate_script.main([*args, "--PROFILE=cpu", f"--OUTPUT_DIR={tmp_path}", "--DOWNLOAD_DATA=false"])


@pytest.mark.parametrize(
    "completion, steps, program_error, source",
    [
        ("Program: subtract(12450, 11020), divide(#0, 11020)\nAnswer: 0.1", 2, None, "program"),  # traced step by step
        ("Program: subtract(12, 11, 11), divide(#0, 11, 11)\nAnswer: 0.08888", 0, "program: ", "answer"),  # the issue's broken program
        ("Program: divide(1, 0)", 0, "program: ", "none"),  # division by zero: named, not raised
        ("Program: " + "divide(" * 100_000, 0, None, "none"),  # hostile megabyte: only its tail is scanned, no program
        ("Program: " + "divide(" * 200 + "\nAnswer: x", 0, "program: ", "none"),  # a deep nest of steps: named, not raised
        ("no markers at all", 0, None, "none"),  # nothing to trace
    ],
)
def test_answer_record_traces_only_programs_that_ran(completion, steps, program_error, source):
    question = questions.read_questions(OWN_REPORTS).questions[0]
    record = questions.answer_record(question, {"table_1"}, "Table: ...", completion, 0.01)
    assert len(record["steps"]) == steps and record["source"] == source
    assert (record["program_error"] or "").startswith(program_error) if program_error else record["program_error"] is None
    json.dumps(record)  # every value is JSON
