"""FinReason demo: ask a FinQA question, your own table + text, or a whole file of questions.

    python app.py [--port 8501] [--KEY=value ...]        # binds APP_HOST (127.0.0.1), from any folder
    python app.py --PROFILE=cpu --MAX_NEW_TOKENS=128
    FINREASON_ARGS="--PROFILE=cpu" streamlit run app.py --server.address 127.0.0.1

``python app.py`` starts Streamlit on APP_HOST itself, so the demo stays private wherever it is
started; started with ``streamlit run`` on any other address, the page refuses to serve and
says how to start it. Config overrides (any config.py constant as --KEY=value) come after ``--``
on the streamlit command line, or from the FINREASON_ARGS environment variable, which takes
precedence (tests use it: streamlit's AppTest has no command line).

Reads  OUTPUT_DIR/grpo/, else OUTPUT_DIR/sft/ trained weights (an adapter or a whole model), else
       the base model; with --MODEL_NAME=outputs/export/merged (08_export.py) that model alone (the page says which, and which evidence mode it was trained with); FinQA's
       test split for the examples (evidence as EVIDENCE_MODE picks); uploaded tables (CSV or
       markdown, at most APP_MAX_UPLOAD_KB; always retrieved evidence: they have no gold facts);
       uploaded question files (JSONL or a JSON list, finreason.questions; answered by
       evaluation.answer_questions, the code of ``06_evaluate.py --questions``; the answers table
       downloads as CSV).
Writes nothing (the model conversion cache under OUTPUT_DIR/models/ on first use, via models).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from finreason import console, document_facts, evaluation, generation, models, programs, prompts, questions, retrieval, retriever_labels, scoring, serving, stats, uploads
from finreason.configuration import Config, ConfigError, config_tokens, parse_args, resolve_config
from finreason.data import DataError, load_from_config
from finreason.training_record import TrainingRecord

ENV_ARGS = "FINREASON_ARGS"
EXAMPLE_SPLIT = "test"
MODE_EXAMPLE = "FinQA test example"
MODE_UPLOAD = "Your own table and text"
MODE_FILE = "A file of questions"


# --- configuration and resources -------------------------------------------------------------

def app_argv() -> list[str]:
    """Overrides from FINREASON_ARGS when set, else the arguments after ``--``."""
    env = os.environ.get(ENV_ARGS)
    return shlex.split(env) if env is not None else list(sys.argv[1:])


@st.cache_resource(show_spinner="Loading the model (first time only)…", max_entries=2)
def _load_model(_cfg: Config, cfg_key: tuple, weights: str | None, weights_mtime: float) -> models.LoadedModel:
    # cfg_key stands in for the unhashable Config and weights_mtime makes retrained weights reload
    return models.load_model(_cfg, weights=weights)


def _mtime(folder: str | None) -> float:
    if folder is None:
        return 0.0
    return max((path.stat().st_mtime for path in Path(folder).glob("*.safetensors")), default=0.0)


def trained_evidence(folder: str | None) -> str | None:
    """How the weights' training prompts got their evidence (mode and retriever), as their
    training_summary.json records it; None when unknown."""
    if folder is None:
        return None
    record = TrainingRecord.read(folder)
    if not record.evidence_mode:
        return None
    return prompts.evidence_label(record.evidence_mode, record.retriever)


def load_best_model(cfg: Config) -> tuple[models.LoadedModel, str, list[str]]:
    """The model finreason.serving chooses (exported, else the best trained weights that load,
    else the base), through the cached loader; notes say what was skipped."""
    key = tuple(sorted(cfg.snapshot().items()))
    return serving.load_best(cfg, lambda weights: _load_model(cfg, key, weights, _mtime(weights)))


@st.cache_resource(show_spinner="Loading FinQA…")
def _load_examples(_cfg: Config, cfg_key: tuple) -> list[Any]:
    return list(load_from_config(_cfg, splits=(EXAMPLE_SPLIT,), verbose=False)[EXAMPLE_SPLIT])


# --- answering -------------------------------------------------------------------------------

def reasoning_text(completion: str) -> str:
    """What the model wrote before its Program:/Answer: lines (the labels the scorer reads)."""
    match = scoring.LINE_START_MARKER.search(completion)
    return (completion[: match.start()] if match else completion).strip()


def answer(loaded: models.LoadedModel, cfg: Config, example: Any, gold: Any, mode: str) -> dict[str, Any]:
    """Prompt, evidence (``mode``: "retrieved" or "gold"), completion, verdict and program trace."""
    tokenizer = loaded.tokenizer
    evidence = prompts.evidence_from_cfg(example, tokenizer, cfg, mode)
    prompt = prompts.prompt_from_cfg(example, tokenizer, cfg, mode, evidence)
    completion = generation.generate(loaded, [prompt], cfg.MAX_NEW_TOKENS, 1, progress=False)[0]
    verdict = scoring.score_completion(completion, gold, example.table, cfg.LENIENT_REL_TOL)
    steps, trace_error = [], None
    if verdict.program:
        try:
            steps = programs.trace(verdict.program, example.table)
        except programs.ProgramError as error:
            trace_error = str(error)
    return {
        "evidence": evidence, "retriever": retrieval.describe_in_use(cfg.replace(EVIDENCE_MODE=mode)), "completion": completion, "verdict": verdict, "steps": steps,
        "trace_error": trace_error, "gold": gold, "rel_tol": float(cfg.LENIENT_REL_TOL), "prompt_tokens": len(tokenizer(prompt)["input_ids"]),
    }


# --- page ------------------------------------------------------------------------------------

def evidence_frame(table: Sequence[Sequence[str]], rows: Sequence[int], gold_ids: set[str]) -> dict[str, list[str]]:
    """Kept rows as columns for st.dataframe, headed by the table's first row (FinQA's header)."""
    width = max(len(row) for row in table)
    header = [str(cell) for cell in table[0]] + [""] * (width - len(table[0]))
    names, seen = ["#"], set()
    for position, cell in enumerate(header):
        name = cell.strip() or ("row name" if position == 0 else f"column {position}")
        while name in seen or name == "#":
            name += " "
        seen.add(name)
        names.append(name)
    body = [[("★ " if f"table_{i}" in gold_ids else "") + str(i), *[str(c) for c in table[i]], *[""] * (width - len(table[i]))]
            for i in rows]
    return {name: [row[c] for row in body] for c, name in enumerate(names)}


def fact_rows(example: Any, evidence: prompts.Evidence, gold_ids: set[str]) -> tuple[dict[str, list], dict[str, list]]:
    """The ranker's kept facts (rank, score, text) and the gold facts it missed, as st.dataframe columns."""
    rank = {fact_id: position + 1 for position, fact_id in enumerate(evidence.ranking)}
    facts = {fact.id: fact for fact in document_facts.facts_of(example)}

    def text_of(fact_id: str) -> str:
        fact = facts.get(fact_id)
        if fact is None:
            return ""
        return prompts.render_row(example.table[fact.index]) if fact.kind == "table" else fact.body

    def columns(ids: Sequence[str]) -> dict[str, list]:
        ids = sorted(ids, key=lambda fact_id: rank.get(fact_id, len(rank) + 1))
        return {"rank": [rank.get(i) for i in ids], "fact": [("★ " if i in gold_ids else "") + i for i in ids],
                "score": [round(evidence.scores.get(i, float("nan")), 3) for i in ids], "text": [text_of(i) for i in ids]}

    kept = [fact_id for fact_id in evidence.ranking if fact_id in evidence.kept_ids]
    return columns(kept), columns(sorted(gold_ids - evidence.kept_ids))


def show_evidence(example: Any, evidence: prompts.Evidence, retriever: Mapping[str, Any] | None = None) -> None:
    gold_ids = set(getattr(example, "gold_inds", {}) or {})
    st.subheader("Evidence the prompt kept")
    if evidence.mode == "gold":
        how = "FinQA's gold facts only"
    elif evidence.ranking:
        how = f"the {retriever.get('top_k') if retriever else ''} best-ranked facts within PROMPT_TOKEN_BUDGET"
    else:
        how = "the whole table and the best-matching sentences filling PROMPT_TOKEN_BUDGET"
    st.caption(f"{prompts.evidence_label(evidence.mode, retriever)}. {len(evidence.table_rows)} of {len(example.table)} table rows and "
               f"{len(evidence.sentences)} of {len(example.text)} sentences, {evidence.n_tokens} tokens ({how})."
               + (f" Gold facts kept: {len(gold_ids & evidence.kept_ids)} of {len(gold_ids)}." if gold_ids else ""))
    if evidence.table_rows:
        st.dataframe(evidence_frame(example.table, evidence.table_rows, gold_ids), hide_index=True, width="stretch")
    for index in evidence.sentences:
        mark = "★ " if f"text_{index}" in gold_ids else ""
        st.markdown(f"- {mark}{example.text[index]}")
    if evidence.ranking:
        kept, missed = fact_rows(example, evidence, gold_ids)
        st.markdown("**Kept facts, as the retriever ranked them** (the header row is added to any kept row)")
        st.dataframe(kept, hide_index=True, width="stretch")
        if missed["fact"]:
            st.markdown(f"**Gold facts the retriever missed: {len(missed['fact'])}**")
            st.dataframe(missed, hide_index=True, width="stretch")
        elif gold_ids:
            st.caption("The retriever kept every gold fact.")
    if gold_ids:
        st.caption("★ = a fact FinQA's annotators marked as needed for this question.")


def show_result(example: Any, result: Mapping[str, Any]) -> None:
    verdict = result["verdict"]
    left, right = st.columns([1, 1])
    with left:
        show_evidence(example, result["evidence"], result.get("retriever"))
    with right:
        st.subheader("Model reasoning")
        st.write(reasoning_text(result["completion"]) or "_(no reasoning before the Program line)_")
        with st.expander("Full model output"):
            st.code(result["completion"] or "(empty)", language=None)
        st.subheader("Program")
        if result["steps"]:
            st.code(verdict.program, language=None)
            st.dataframe({
                "step": [f"#{s.index}" for s in result["steps"]],
                "operation": [s.op for s in result["steps"]],
                "arg 1": [s.arg1 for s in result["steps"]],
                "arg 2": [s.arg2 for s in result["steps"]],
                "value": [programs.format_value(s.value) for s in result["steps"]],
            }, hide_index=True, width="stretch")
        elif verdict.program:
            st.warning(f"The program does not execute: {result['trace_error'] or verdict.error}\n\n`{verdict.program}`")
        else:
            st.info("The model wrote no Program line.")
        st.subheader("Answer")
        predicted = "no answer" if verdict.predicted is None else programs.format_value(verdict.predicted)
        source = {"program": "from the executed program", "answer": "from the Answer line", "none": ""}[verdict.source]
        st.metric("model answer", predicted, help=source or None)
        if result["gold"] is not None:
            gold = programs.format_value(result["gold"]) if not isinstance(result["gold"], str) else result["gold"]
            if verdict.strict:
                st.success(f"Correct: gold answer {gold} (official exact match).")
            elif verdict.lenient:
                st.warning(f"Close: gold answer {gold}; right within {100 * result['rel_tol']:g}% or at another scale (lenient), not exact.")
            else:
                st.error(f"Wrong: gold answer {gold}.")
        st.caption(f"{result['prompt_tokens']} prompt tokens.")


def example_inputs(cfg: Config) -> tuple[Any, Any] | None:
    try:
        examples = _load_examples(cfg, tuple(sorted(cfg.snapshot().items())))
    except DataError as error:
        st.error(f"FinQA could not be loaded: {error}")
        return None
    index = st.selectbox(
        f"Question ({len(examples)} in the {EXAMPLE_SPLIT} split)", range(len(examples)),
        format_func=lambda i: f"{examples[i].id} — {examples[i].question[:90]}", key="example_index",
    )
    example = examples[index]
    st.markdown(f"**Question:** {example.question}")
    with st.expander("Whole table"):
        st.dataframe(example.table, width="stretch")
    return example, example.exe_ans


def too_large(upload: Any, max_kb: int) -> bool:
    """Whether an uploaded file is over APP_MAX_UPLOAD_KB, said at once (before any button):
    Streamlit's own cap (``uploads.streamlit_upload_mb``) is whole megabytes."""
    if upload is None:
        return False
    try:
        uploads.check_size(upload.getvalue(), max_kb, f"{upload.name!r}")
    except uploads.UploadError as error:
        st.error(str(error))
        return True
    return False


def upload_widgets(cfg: Config) -> dict[str, Any]:
    max_kb = int(cfg.APP_MAX_UPLOAD_KB)
    file = st.file_uploader(f"Table: CSV or markdown pipe table (at most {max_kb} KB)", type=["csv", "md", "txt"], key="table_file",
                            max_upload_size=uploads.streamlit_upload_mb(max_kb))
    return {
        "file": file,
        "too_large": too_large(file, max_kb),
        "pasted": st.text_area("…or paste the table", key="table_text", height=120,
                               placeholder="| ( in millions ) | 2019 | 2018 |\n| revenue | 5829 | 5735 |"),
        "report": st.text_area("Report text (optional)", key="report_text", height=100),
        "question": st.text_input("Question", key="question", placeholder="what was the percent change in revenue from 2018 to 2019?"),
        "expected": st.text_input("Expected answer (optional, to get a verdict)", key="expected"),
    }


def upload_inputs(cfg: Config, raw: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """The user's document from the widget values; a message (not a traceback) for bad input."""
    max_kb = int(cfg.APP_MAX_UPLOAD_KB)
    try:
        if raw["file"] is not None:
            table = uploads.parse_table_upload(raw["file"].name, raw["file"].getvalue(), max_kb)
        elif (raw["pasted"] or "").strip():
            table = uploads.parse_table_text(raw["pasted"], max_kb)
        else:
            table = None
        document = uploads.build_document(raw["question"], table, raw["report"] or "", max_kb)
    except uploads.UploadError as error:
        st.error(str(error))
        return None
    gold = None
    if (raw["expected"] or "").strip():
        gold = scoring.parse_number(raw["expected"])
        if gold is None:
            st.warning(f"The expected answer {raw['expected']!r} is not a number or yes/no; no verdict is shown.")
    return document, gold


def question_file_input(cfg: Config) -> questions.QuestionFile | None:
    """The uploaded question file, parsed; a message (not a traceback) for a bad one."""
    max_kb = int(cfg.APP_MAX_UPLOAD_KB)
    upload = st.file_uploader(f"Questions: JSONL or a JSON list (at most {max_kb} KB; format in the README, "
                              "'Your own documents')", type=["jsonl", "json"], key="questions_file",
                              max_upload_size=uploads.streamlit_upload_mb(max_kb))
    refused = too_large(upload, max_kb)
    if not st.button("Answer every question", type="primary", key="ask_file", disabled=refused) or refused:
        return None
    if upload is None:
        st.error("upload a question file first")
        return None
    try:
        return questions.from_bytes(upload.getvalue(), upload.name)
    except (uploads.UploadError, questions.QuestionFileError) as error:
        st.error(str(error))
        return None


def show_answers(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> None:
    """The answers table with verdicts where answers are given, its CSV, and the invalid lines."""
    pct = stats.percent
    st.caption(f"{summary['n']} questions answered with {summary['evidence']}; {summary['n_with_answer']} give an answer.")
    if summary["n_with_answer"]:
        strict, tolerant, lenient = st.columns(3)
        strict.metric("execution accuracy (strict)", pct(summary["execution_accuracy"]))
        tolerant.metric("tolerant (published rounding)", pct(summary["tolerant_accuracy"]))
        lenient.metric("lenient (1%)", pct(summary["lenient_accuracy"]))
    st.dataframe(questions.answers_rows(records), hide_index=True, width="stretch")
    st.download_button("Download the answers (CSV)", questions.answers_csv(records), file_name="answers.csv",
                       mime="text/csv", key="download_answers", on_click="ignore")
    if summary["invalid_lines"]:
        st.warning(f"{summary['invalid_lines']} invalid lines were not answered:\n\n" + "\n".join(
            f"- line {bad['line']}: {bad['reason']}" for bad in summary["invalid"]))


def serving_address_problem(cfg: Config) -> str | None:
    """Why this page must not be served, or None: under ``streamlit run`` the address comes from
    the command line or a config.toml in the working folder, and anything but APP_HOST is refused."""
    from streamlit import runtime

    if not runtime.exists():
        return None  # AppTest and bare imports: no server, nothing is exposed
    address = st.get_option("server.address") or "every network interface"
    if address == cfg.APP_HOST:
        return None
    return (f"This demo is being served on {address}, not APP_HOST={cfg.APP_HOST}. Stop it and start it with "
            f"`python app.py` (it binds APP_HOST from any folder), or pass `--server.address {cfg.APP_HOST}`.")


def main(argv: Sequence[str] | None = None) -> None:
    st.set_page_config(page_title="FinReason", page_icon="📊", layout="wide")
    st.title("FinReason: numerical reasoning over financial reports")

    # config: overrides from the command line after `--`, or FINREASON_ARGS
    try:
        cfg = resolve_config(app_argv() if argv is None else list(argv))
    except ConfigError as error:
        st.error(f"Bad configuration override: {error}")
        st.stop()
    problem = serving_address_problem(cfg)
    if problem:
        st.error(problem)
        st.stop()

    # model: the best trained weights that load, cached across interactions
    try:
        loaded, model_label, notes = load_best_model(cfg)
    except models.ModelError as error:
        st.error(f"The model could not be loaded: {error}")
        st.stop()
    trained_on = trained_evidence(loaded.info.get("weights") or loaded.info.get("model_path"))
    st.caption(f"Model: **{cfg.MODEL_NAME}** + {model_label} · profile {cfg.PROFILE} · "
               f"{loaded.info.get('loader')}, {loaded.info.get('quantization')}, {loaded.info.get('device')}"
               + (f" · trained on {trained_on}" if trained_on else ""))
    for note in notes:
        st.warning(note)
    with st.sidebar:
        st.header("Settings")
        st.write(f"Profile: `{cfg.PROFILE}`")
        st.write(f"Weights: {model_label}")
        st.write(f"Evidence for FinQA examples: {prompts.evidence_label(cfg.EVIDENCE_MODE, retrieval.describe(cfg))}")
        st.write(f"Answer tokens: {cfg.MAX_NEW_TOKENS} · evidence budget: {cfg.PROMPT_TOKEN_BUDGET} tokens")
        st.caption("Change with `python app.py --KEY=value`.")

    # inputs: FinQA examples use EVIDENCE_MODE; your own tables have no gold facts, so retrieved
    choice = st.radio("Ask about", (MODE_EXAMPLE, MODE_UPLOAD, MODE_FILE), horizontal=True, key="mode")
    if choice == MODE_FILE:
        found = question_file_input(cfg)
        if found is not None:
            with st.spinner(f"The model is answering {len(found.questions)} questions…"):
                records, summary = evaluation.answer_questions(loaded, found, cfg, "app", progress=False)
            show_answers(records, summary)
        return
    if choice == MODE_EXAMPLE:
        inputs = example_inputs(cfg)
        evidence_mode = cfg.EVIDENCE_MODE
        if not st.button("Answer", type="primary", key="ask_example") or inputs is None:
            return
    else:
        raw = upload_widgets(cfg)
        evidence_mode = "retrieved"
        if cfg.EVIDENCE_MODE == "gold":
            st.info("Your own table has no gold facts: the prompt uses retrieved evidence "
                    f"({retriever_labels.short_label(retrieval.describe(cfg.replace(EVIDENCE_MODE='retrieved')))}), "
                    "not the gold-facts setting the FinQA examples use.")
        if not st.button("Answer", type="primary", key="ask_upload", disabled=raw["too_large"]) or raw["too_large"]:
            return
        inputs = upload_inputs(cfg, raw)
        if inputs is None:
            return

    # answer
    example, gold = inputs
    with st.spinner("The model is answering…"):
        result = answer(loaded, cfg, example, gold, evidence_mode)
    show_result(example, result)


def launch(argv: Sequence[str]) -> None:
    """``python app.py``: start Streamlit on APP_HOST (checked config first), from any folder."""

    def add_port(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")

    args, cfg = parse_args("Start the FinReason demo on APP_HOST (config.py).", argv, add_port)
    overrides, _ = config_tokens(argv)
    command = [sys.executable, "-m", "streamlit", "run", str(Path(__file__).resolve()),
               "--server.address", cfg.APP_HOST, "--server.port", str(args.port),
               "--server.maxUploadSize", str(uploads.streamlit_upload_mb(int(cfg.APP_MAX_UPLOAD_KB))),
               "--browser.gatherUsageStats", "false", "--", *overrides]
    print(f"FinReason demo on http://{cfg.APP_HOST}:{args.port}", file=sys.stderr)
    # SIGTERM/SIGINT to this launcher reach the server, which is waited for: no orphan on the port
    sys.exit(console.run_child(command))


if __name__ == "__main__":
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    # under `streamlit run` (or AppTest) a script-run context exists; plain `python app.py` has none
    if get_script_run_ctx(suppress_warning=True) is not None:
        main()
    else:
        launch(sys.argv[1:])
