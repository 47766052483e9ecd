"""The Streamlit app: upload parsing (table-driven) and the page itself through AppTest."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from finreason import training_record, uploads

ROOT = Path(__file__).resolve().parent.parent
OWN_REPORTS = ROOT / "tests" / "data" / "own_reports.jsonl"
MAX_KB = 4

# --- upload parsing ----------------------------------------------------------------------------

PIPE = "| ( in millions ) | 2019 | 2018 |\n|---|---|---|\n| Revenue | $ 5,829 | 5735 |\n| net income | 120 | 98 |\n"
CSV = "( in millions ),2019,2018\nRevenue,\"$ 5,829\",5735\nnet income,120,98\n"
CSV_SEMICOLON = "( in millions );2019;2018\nRevenue;$ 5,829;5735\nnet income;120;98\n"
EXPECTED = [["( in millions )", "2019", "2018"], ["revenue", "$ 5829", "5735"], ["net income", "120", "98"]]


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("t.md", PIPE.encode(), EXPECTED),  # markdown pipe table, separator row dropped, lowercased
        ("t.csv", CSV.encode(), EXPECTED),  # CSV with a quoted thousands separator, removed as in FinQA
        ("t.csv", CSV_SEMICOLON.encode(), EXPECTED),  # semicolon CSV (European Excel)
        ("t.txt", PIPE.encode(), EXPECTED),  # .txt holding a pipe table: detected by its '|'
        ("t.csv", ("\ufeff" + CSV).encode(), EXPECTED),  # UTF-8 BOM from Excel
        ("t.csv", b"a,b,c\nx,1\n", [["a", "b", "c"], ["x", "1", ""]]),  # ragged row padded
        ("T.CSV", CSV.encode(), EXPECTED),  # extension case does not matter
        ("t.csv", CSV.encode("utf-16"), EXPECTED),  # UTF-16 with its BOM (Excel's "Unicode text"): was "binary"
        ("t.csv", b"\xe9tat,2019\nrevenue,5\n", [["\xe9tat", "2019"], ["revenue", "5"]]),  # wholly Windows-1252: a spreadsheet's CSV
    ],
)
def test_parse_table_upload_accepts(name, data, expected):
    assert uploads.parse_table_upload(name, data, MAX_KB) == expected


@pytest.mark.parametrize(
    "line, cells",
    [
        ("| revenue | 5 |", ["revenue", "5"]),  # outer pipes open and close the line, they are not cells
        ("revenue | 5", ["revenue", "5"]),  # outer pipes are optional
        (r"| a \| b | 5 |", ["a | b", "5"]),  # an escaped pipe is a literal pipe inside the cell
        (r"| a | b \|", ["a", "b |"]),  # an escaped pipe at the end is text, not the closing pipe
        (r"| \|a\| | 5 |", ["|a|", "5"]),  # escaped pipes at both ends of a cell
        (r"| c:\\| 5 |", [r"c:\\", "5"]),  # an escaped backslash does not escape the pipe after it
        (r"| x\y | 5 |", [r"x\y", "5"]),  # other backslashes are kept as written
        ("| a || 5 |", ["a", "", "5"]),  # an empty cell between two pipes is kept
        ("|", []),  # a lone pipe has no cells
    ],
)
def test_pipe_cells(line, cells):
    assert uploads._pipe_cells(line) == cells


def test_escaped_pipe_in_an_uploaded_table():
    table = "| ( in millions ) | 2019 |\n|---|---|\n| revenue \\| net | 5 |\n"
    assert uploads.parse_table_upload("t.md", table.encode(), MAX_KB) == [["( in millions )", "2019"], ["revenue | net", "5"]]


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("big.csv", b"a,1\n" * 2000, "limit is 4 KB"),  # oversized: APP_MAX_UPLOAD_KB
        ("t.pdf", CSV.encode(), "not a table file"),  # wrong type
        ("t.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),  # binary content behind a .csv name
        ("t.csv", b"", "empty"),  # empty file
        ("t.csv", b"just one line of prose without separators\n", "header row and at least one data row"),  # not a table
        ("t.csv", b"name\nrevenue\ncosts\n", "at least two columns"),  # a single column
        ("t.csv", b"a,b\nx,y\nz,w\n", "no numbers"),  # nothing to calculate with
        ("t.md", b"| a | b |\nplain line\n| c | 1 |\n", "has no '|'"),  # broken markdown table
        ("t.csv", ("a," * 40 + "\n" + "b,1," * 20 + "\n").encode(), "columns; the limit"),  # far too wide
        ("t.csv", "€,2019\n".encode() + "€,5\n".encode("cp1252"), "line 2 is not UTF-8 while the rest"),  # mixed: was "â‚¬" silently
    ],
)
def test_parse_table_upload_refuses(name, data, message):
    with pytest.raises(uploads.UploadError, match=message):
        uploads.parse_table_upload(name, data, MAX_KB)


@pytest.mark.parametrize(
    "question, table, text, message",
    [
        ("", EXPECTED, "", "type a question"),  # empty question
        ("   ", EXPECTED, "", "type a question"),  # whitespace only
        ("what?", None, "", "give a table"),  # no evidence at all
        ("x" * 600, EXPECTED, "", "keep it under"),  # absurdly long question
        ("what?", None, "x" * 5000, "report text is"),  # report text over the size limit
        ("what?", None, "y" * 5000, r"the limit is 4 KB \(APP_MAX_UPLOAD_KB\)"),  # the app's limit named as the app's
    ],
)
def test_build_document_refuses(question, table, text, message):
    with pytest.raises(uploads.UploadError, match=message):
        uploads.build_document(question, table, text, MAX_KB)


def test_build_document_quacks_like_an_example():
    document = uploads.build_document("What was Revenue growth?", EXPECTED, "Revenue rose. Costs fell.\nNew paragraph", MAX_KB)
    assert document.question == "what was revenue growth?"
    assert document.text == ["revenue rose.", "costs fell.", "new paragraph"]
    assert document.table == EXPECTED


def test_pasted_table_text():
    assert uploads.parse_table_text(PIPE, MAX_KB) == EXPECTED
    assert uploads.parse_table_text(CSV, MAX_KB) == EXPECTED
    with pytest.raises(uploads.UploadError, match="empty"):
        uploads.parse_table_text("  \n", MAX_KB)


# --- the page (AppTest, the real embedded model, 8 answer tokens) -------------------------------

@pytest.fixture(scope="module")
def app_args(tmp_path_factory):
    """Overrides for every page test: cpu profile, a private OUTPUT_DIR (no adapters), no network."""
    out = tmp_path_factory.mktemp("app_out")
    args = ["--PROFILE=cpu", f"--OUTPUT_DIR={out}", "--MAX_NEW_TOKENS=8", "--DOWNLOAD_DATA=false",
            f"--FINQA_CACHE_DIR={out / 'no-cache'}", "--PROMPT_TOKEN_BUDGET=256"]
    return " ".join(shlex.quote(a) for a in args)


@pytest.fixture
def app(app_args, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FINREASON_ARGS", app_args)
    # the first run converts the embedded GGUF once (tens of seconds on 2 cores)
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)


def _texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


@pytest.mark.slow
def test_page_loads_and_answers_an_example(app):
    app.run()
    assert not app.exception, _texts(app.exception)
    assert "base model, no trained weights" in _texts(app.caption)  # says which model it loaded
    app.button(key="ask_example").click().run()
    assert not app.exception, _texts(app.exception)
    subheaders = _texts(app.subheader)
    for heading in ("Evidence the prompt kept", "Model reasoning", "Program", "Answer"):
        assert heading in subheaders
    assert app.metric[0].label == "model answer"
    # 8 tokens rarely finish a program: the verdict against the gold answer is still shown
    assert "gold answer" in _texts([*app.success, *app.warning, *app.error])


@pytest.mark.slow
@pytest.mark.parametrize(
    "completion, expected_alert, expected_steps",
    [
        # the gold program: every step traced, the verdict says correct
        ("From the table.\nProgram: {program}\nAnswer: {answer}", "Correct: gold answer", True),
        # a program that cannot run: a warning naming the reason, the Answer line still scored
        ("Guess.\nProgram: divide(#7, 2)\nAnswer: 1.5", "Wrong: gold answer", False),
    ],
)
def test_result_rendering(app, monkeypatch, completion, expected_alert, expected_steps):
    # AppTest runs app.py in this process, so a canned completion replaces generation
    from finreason import generation
    from finreason.data import load_finqa

    first = load_finqa(download=False, cache_dir="/nonexistent-finreason-cache", splits=("test",), verbose=False)["test"][0]
    text = completion.format(program=first.program, answer=first.exe_ans)
    monkeypatch.setattr(generation, "generate", lambda loaded, prompts, *args, **kwargs: [text for _ in prompts])
    app.run()
    app.button(key="ask_example").click().run()
    assert not app.exception, _texts(app.exception)
    assert expected_alert in _texts([*app.success, *app.warning, *app.error])
    if expected_steps:
        steps = app.dataframe[-1].value
        assert list(steps["step"]) == [f"#{i}" for i in range(first.num_steps)]
    else:
        assert "does not execute" in _texts(app.warning)


@pytest.mark.slow
@pytest.mark.parametrize(
    "upload, pasted, question, message",
    [
        (("big.csv", b"a,1\n" * 200_000, "text/csv"), "", "what?", "the limit is"),  # over APP_MAX_UPLOAD_KB
        (("t.csv", b"\x00\x01binary", "text/csv"), "", "what?", "binary"),  # not a table
        (None, PIPE, "", "type a question"),  # empty question
        (None, "", "what?", "give a table"),  # no evidence
    ],
)
def test_bad_uploads_give_messages(app, upload, pasted, question, message):
    app.run()
    app.radio(key="mode").set_value("Your own table and text").run()
    if upload is not None:
        app.file_uploader(key="table_file").set_value(upload)
    app.text_area(key="table_text").set_value(pasted)
    app.text_input(key="question").set_value(question)
    app.button(key="ask_upload").click().run()
    assert not app.exception, _texts(app.exception)
    assert message in _texts(app.error)


@pytest.mark.slow
def test_own_table_is_answered(app):
    app.run()
    app.radio(key="mode").set_value("Your own table and text").run()
    app.text_area(key="table_text").set_value(PIPE)
    app.text_input(key="question").set_value("what was the change in revenue from 2018 to 2019?")
    app.text_input(key="expected").set_value("94")
    app.button(key="ask_upload").click().run()
    assert not app.exception, _texts(app.exception)
    assert "Model reasoning" in _texts(app.subheader)
    # the typed expected answer gives a verdict (8 tokens: almost surely "Wrong", never an input error)
    assert "gold answer 94" in _texts([*app.success, *app.warning, *app.error])


@pytest.mark.slow
def test_question_file_gives_the_answers_table(app, monkeypatch):
    # the code path of 06_evaluate.py --questions; a canned completion replaces generation
    from finreason import generation

    completion = "Program: subtract(12450, 11020), divide(#0, 11020)\nAnswer: 0.12976"
    monkeypatch.setattr(generation, "generate", lambda loaded, prompts, *args, **kwargs: [completion for _ in prompts])
    app.run()
    app.radio(key="mode").set_value("A file of questions").run()
    app.file_uploader(key="questions_file").set_value(("own_reports.jsonl", OWN_REPORTS.read_bytes(), "application/jsonl"))
    app.button(key="ask_file").click().run()
    assert not app.exception, _texts(app.exception)
    answers = app.dataframe[-1].value
    assert len(answers) == 13 and list(answers["id"])[0] == "acme-1"
    assert str(list(answers["tolerant"])[0]) == "True"  # the 12.976% against gold 13.0%
    assert "7 invalid lines" in _texts(app.warning) and "duplicate id" in _texts(app.warning)
    assert app.get("download_button"), "the answers download as CSV"


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, uploader, button, data",
    [
        ("A file of questions", "questions_file", "ask_file", b"{}\n" * 300_000),  # a question file over APP_MAX_UPLOAD_KB
        ("Your own table and text", "table_file", "ask_upload", b"a,1\n" * 200_000),  # a table over it
    ],
)
def test_an_oversized_upload_is_refused_before_the_button(app, mode, uploader, button, data):
    app.run()
    app.radio(key="mode").set_value(mode).run()
    app.file_uploader(key=uploader).set_value(("big.csv" if uploader == "table_file" else "big.jsonl", data, "text/plain")).run()
    assert not app.exception, _texts(app.exception)
    assert "the limit is 512 KB (APP_MAX_UPLOAD_KB)" in _texts(app.error)  # said at once, no click needed
    assert app.button(key=button).disabled


@pytest.mark.slow
def test_question_file_refused_with_a_message(app):
    app.run()
    app.radio(key="mode").set_value("A file of questions").run()
    app.file_uploader(key="questions_file").set_value(("q.jsonl", b"not json\n", "application/jsonl"))
    app.button(key="ask_file").click().run()
    assert not app.exception, _texts(app.exception)
    assert "has no valid question" in _texts(app.error)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("files", "warnings"),
    [
        # a GRPO adapter folder without weights: the page says so and uses the next best model
        ({"adapter_config.json": "{}"}, ["GRPO weights at", "skipped"]),
        # GRPO weights whose SFT weights were replaced since (here: are gone) are named stale
        ({"adapter_config.json": "{}", "training_summary.json": json.dumps({"sft_weights_sha256": "a" * 64})},
         ["GRPO weights are stale: trained from SFT weights aaaaaaaaaaaa, but there are no SFT weights now"]),
    ],
)
def test_untrustworthy_grpo_weights_give_a_warning(app, app_args, files, warnings):
    out = Path(next(a.split("=", 1)[1] for a in shlex.split(app_args) if a.startswith("--OUTPUT_DIR=")))
    broken = out / "grpo" / "adapter"
    broken.mkdir(parents=True)
    try:
        for name, text in files.items():
            (broken / name).write_text(text)
        app.run()
        assert not app.exception, _texts(app.exception)
        assert all(warning in _texts(app.warning) for warning in warnings), _texts(app.warning)
        assert "base model, no trained weights" in _texts(app.caption)
    finally:
        import shutil

        shutil.rmtree(out / "grpo")


@pytest.mark.slow
def test_bad_override_is_a_message(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FINREASON_ARGS", "--NO_SUCH_KEY=1")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not app.exception
    assert "unknown config key" in _texts(app.error)


# --- the real app in headless Chromium ----------------------------------------------------------

def _browser_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("browser_check", ROOT / "tests" / "browser_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_app_in_headless_chromium(app_args, tmp_path):
    check = _browser_check()
    reason = check.missing_browser()
    if reason:
        pytest.skip(f"no browser for the end-to-end check: {reason}")
    screenshot = tmp_path / "app.png"
    seen = check.run_check(screenshot, shlex.split(app_args), timeout_s=400)
    assert "base model" in seen["caption"]
    assert "gold answer" in seen["verdict"]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, shown",
    [
        ("gold", "GOLD facts only"),  # the gold-facts setting is named on the page, with its caveat
        ("retrieved", "retrieved evidence (learned ranker, top 3)"),  # the standard setting, with its retriever and k
    ],
)
def test_page_names_the_evidence_mode(app_args, monkeypatch, mode, shown):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FINREASON_ARGS", f"{app_args} --EVIDENCE_MODE={mode}")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    assert not app.exception, _texts(app.exception)
    app.button(key="ask_example").click().run()
    assert not app.exception, _texts(app.exception)
    assert shown in _texts(app.caption)
    # ranked evidence shows each kept fact's rank and score, and any gold fact the retriever missed
    assert ("Kept facts, as the retriever ranked them" in _texts(app.markdown)) == (mode == "retrieved")
    if mode == "retrieved":
        ranked = [frame.value for frame in app.dataframe if list(frame.value.columns) == ["rank", "fact", "score", "text"]]
        assert ranked and list(ranked[0]["rank"]) == sorted(ranked[0]["rank"]) and 1 <= len(ranked[0]) <= 4  # k facts + header
    # your own table has no gold facts: in gold mode the page says it uses retrieved evidence
    app.radio(key="mode").set_value("Your own table and text").run()
    assert ("no gold facts" in _texts(app.info)) == (mode == "gold")


def test_python_app_py_binds_app_host_from_any_folder(tmp_path):
    """`python app.py` starts Streamlit with --server.address APP_HOST (checked without a server:
    the launcher's command line is what decides the bind address)."""
    import subprocess
    import sys

    probe = "\n".join([
        "import runpy, sys",
        "from finreason import console",
        "console.run_child = lambda command: print(' '.join(command)) or 0",
        "sys.argv = [sys.argv[1], '--APP_HOST=127.0.0.9', '--port', '8600', '--PROFILE=cpu']",
        "runpy.run_path(sys.argv[0], run_name='__main__')",
    ])
    done = subprocess.run([sys.executable, "-c", probe, str(ROOT / "app.py")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--server.address 127.0.0.9 --server.port 8600" in done.stdout
    assert "--server.maxUploadSize 1 " in done.stdout  # APP_MAX_UPLOAD_KB (512) in Streamlit's whole MB, not its 200 MB default
    assert "-- --APP_HOST=127.0.0.9 --PROFILE=cpu" in done.stdout


def test_python_app_py_refuses_a_bad_override(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "--APP_HOST="], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "--APP_HOST must be non-empty" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_app_py_stops_its_server_on_sigterm(tmp_path):
    # the case 8: SIGTERM to `python app.py` used to leave Streamlit serving the port
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--APP_HOST=127.0.0.1",
                                 "--PROFILE=cpu", f"--OUTPUT_DIR={tmp_path}"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not _listening(port):
            assert launcher.poll() is None and time.time() < deadline, "the server never listened"
            time.sleep(0.5)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
        # the launcher returned only after its server stopped: nothing serves the port any more
        assert not _listening(port)
    finally:
        launcher.kill()
        launcher.wait()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as client:
        return client.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    "summary, label",
    [
        ({"evidence_mode": "gold"}, "GOLD facts only"),  # the weights were trained on gold facts: the page says so
        ({"evidence_mode": "retrieved", "retriever": {"retriever": "learned", "top_k": 3}}, "retrieved evidence"),
        ({"evidence_mode": ""}, None),  # no mode recorded: unknown, not guessed
        ({"evidence_mode": ["gold"]}, None),  # a damaged record is unknown, not a crash
        ([1, 2], None),  # not an object
        ("{not json", None),  # not JSON
        (None, None),  # no training_summary.json at all
    ],
)
def test_trained_evidence_reads_the_summary_or_says_unknown(tmp_path, summary, label):
    from helpers import load_script

    app_module = load_script("app.py")
    if summary is not None:
        text = summary if isinstance(summary, str) else json.dumps(summary)
        (tmp_path / training_record.TRAINING_SUMMARY).write_text(text, encoding="utf-8")
    found = app_module.trained_evidence(str(tmp_path))
    assert found == label if label is None else label in found
    assert app_module.trained_evidence(None) is None


@pytest.mark.parametrize(
    "completion, reasoning",
    [
        ("From the table.\nProgram: add(1, 2)\nAnswer: 3", "From the table."),  # the taught format
        ("Because.\n**Answer**: 5", "Because."),  # markdown around the label
        ("Because.\nFinal Answer: 5", "Because."),  # differed: the scorer reads "Final Answer:", the app's own pattern showed it as reasoning
        ("Because.\nFinal Program: add(1, 2)", "Because."),  # differed the same way for "Final Program:"
        ("Because.\n• Answer: 5", "Because."),  # differed: a bullet the scorer allows
        ("Because.\nAnswer： 5", "Because."),  # differed: a full-width colon the scorer allows
        ("Because.\nAnswer\n: 5", "Because.\nAnswer\n: 5"),  # differed: a colon on the next line is no label to the scorer
        ("No labels at all.", "No labels at all."),  # everything is reasoning
    ],
)
def test_reasoning_stops_where_the_scorer_reads_a_label(completion, reasoning):
    from finreason import scoring
    from helpers import load_script

    assert load_script("app.py").reasoning_text(completion) == reasoning
    parsed = scoring.parse_completion(completion)
    # the page cuts the reasoning exactly where the verdict found its Program/Answer line
    assert (reasoning != completion.strip()) == bool(parsed.program or parsed.answer_text)
