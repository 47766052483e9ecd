"""FinReason demo: ask a FinQA question, or your own table + text, and see how the model answers.

    streamlit run app.py --server.address 127.0.0.1                        # best adapter, auto profile
    streamlit run app.py --server.address 127.0.0.1 -- --PROFILE=cpu --MAX_NEW_TOKENS=128
    FINREASON_ARGS="--PROFILE=cpu" streamlit run app.py                     # same overrides via the env

Config overrides (any config.py constant as --KEY=value) come after ``--`` on the streamlit
command line, or from the FINREASON_ARGS environment variable, which takes precedence (tests use
it: streamlit's AppTest has no command line). .streamlit/config.toml binds to 127.0.0.1 and turns
usage statistics off.

Reads  OUTPUT_DIR/grpo/adapter, else OUTPUT_DIR/sft/adapter, else the base model (the page says
       which); FinQA's test split for the examples; uploaded tables (CSV or markdown, at most
       APP_MAX_UPLOAD_KB).
Writes nothing (the model conversion cache under OUTPUT_DIR/models/ on first use, via models).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from finreason import evaluation, models, programs, prompts, scoring, uploads
from finreason.cli import Config, ConfigError, resolve_config
from finreason.data import DataError, load_from_config

ENV_ARGS = "FINREASON_ARGS"
EXAMPLE_SPLIT = "test"
MODE_EXAMPLE = "FinQA test example"
MODE_UPLOAD = "Your own table and text"


# --- configuration and resources -------------------------------------------------------------

def app_argv() -> list[str]:
    """Overrides from FINREASON_ARGS when set, else the arguments after ``--``."""
    env = os.environ.get(ENV_ARGS)
    return shlex.split(env) if env is not None else list(sys.argv[1:])


def adapter_candidates(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, path) of the trained adapters present, best first."""
    root = Path(cfg["OUTPUT_DIR"])
    found = []
    for label in ("grpo", "sft"):
        path = root / label / "adapter"
        if (path / "adapter_config.json").is_file():
            found.append((label, str(path)))
    return found


@st.cache_resource(show_spinner="Loading the model (first time only)…", max_entries=2)
def _load_model(_cfg: Config, cfg_key: tuple, adapter: str | None, adapter_mtime: float) -> models.LoadedModel:
    # cfg_key stands in for the unhashable Config and adapter_mtime makes a retrained adapter reload
    return models.load_model(_cfg, adapter=adapter)


def _mtime(folder: str | None) -> float:
    if folder is None:
        return 0.0
    return max((path.stat().st_mtime for path in Path(folder).glob("adapter_*")), default=0.0)


def load_best_model(cfg: Config) -> tuple[models.LoadedModel, str, list[str]]:
    """The best adapter that loads (GRPO, then SFT), else the base model; notes say what was skipped."""
    key = tuple(sorted(cfg.snapshot().items()))
    notes = []
    for label, path in adapter_candidates(cfg):
        try:
            return _load_model(cfg, key, path, _mtime(path)), f"{label.upper()} adapter ({path})", notes
        except models.ModelError as error:
            notes.append(f"{label.upper()} adapter at {path} skipped: {error}")
    return _load_model(cfg, key, None, 0.0), "base model, no adapter (train one with 04_train_sft.py)", notes


@st.cache_resource(show_spinner="Loading FinQA…")
def _load_examples(_cfg: Config, cfg_key: tuple) -> list[Any]:
    return list(load_from_config(_cfg, splits=(EXAMPLE_SPLIT,), verbose=False)[EXAMPLE_SPLIT])


# --- answering -------------------------------------------------------------------------------

def reasoning_text(completion: str) -> str:
    """What the model wrote before its Program:/Answer: lines."""
    match = re.search(r"(?im)^[\s*_`#>-]*(program|answer)\s*[*_`]*\s*:", completion)
    return (completion[: match.start()] if match else completion).strip()


def answer(loaded: models.LoadedModel, cfg: Config, example: Any, gold: Any) -> dict[str, Any]:
    """Prompt, evidence, completion, verdict and program trace for one question."""
    tokenizer = loaded.tokenizer
    evidence = prompts.select_evidence(example, tokenizer, int(cfg.PROMPT_TOKEN_BUDGET))
    prompt = prompts.prompt_from_cfg(example, tokenizer, cfg)
    completion = evaluation.generate(loaded, [prompt], int(cfg.MAX_NEW_TOKENS), 1, progress=False)[0]
    verdict = scoring.score_completion(completion, gold, example.table, cfg.LENIENT_REL_TOL)
    steps, trace_error = [], None
    if verdict.program:
        try:
            steps = programs.trace(verdict.program, example.table)
        except programs.ProgramError as error:
            trace_error = str(error)
    return {
        "evidence": evidence, "completion": completion, "verdict": verdict, "steps": steps,
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


def show_evidence(example: Any, evidence: prompts.Evidence) -> None:
    gold_ids = set(getattr(example, "gold_inds", {}) or {})
    st.subheader("Evidence the prompt kept")
    st.caption(f"{len(evidence.table_rows)} of {len(example.table)} table rows and {len(evidence.sentences)} of "
               f"{len(example.text)} sentences, {evidence.n_tokens} tokens (budget PROMPT_TOKEN_BUDGET)."
               + (f" Gold facts kept: {len(gold_ids & evidence.kept_ids)} of {len(gold_ids)}." if gold_ids else ""))
    if evidence.table_rows:
        st.dataframe(evidence_frame(example.table, evidence.table_rows, gold_ids), hide_index=True, width="stretch")
    for index in evidence.sentences:
        mark = "★ " if f"text_{index}" in gold_ids else ""
        st.markdown(f"- {mark}{example.text[index]}")
    if gold_ids:
        st.caption("★ = a fact FinQA's annotators marked as needed for this question.")


def show_result(example: Any, result: Mapping[str, Any]) -> None:
    verdict = result["verdict"]
    left, right = st.columns([1, 1])
    with left:
        show_evidence(example, result["evidence"])
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


def upload_widgets(cfg: Config) -> dict[str, Any]:
    max_kb = int(cfg.APP_MAX_UPLOAD_KB)
    return {
        "file": st.file_uploader(f"Table: CSV or markdown pipe table (at most {max_kb} KB)", type=["csv", "md", "txt"], key="table_file"),
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


def main(argv: Sequence[str] | None = None) -> None:
    st.set_page_config(page_title="FinReason", page_icon="📊", layout="wide")
    st.title("FinReason: numerical reasoning over financial reports")

    # config: overrides from the command line after `--`, or FINREASON_ARGS
    try:
        cfg = resolve_config(app_argv() if argv is None else list(argv))
    except ConfigError as error:
        st.error(f"Bad configuration override: {error}")
        st.stop()

    # model: the best adapter that loads, cached across interactions
    try:
        loaded, model_label, notes = load_best_model(cfg)
    except models.ModelError as error:
        st.error(f"The model could not be loaded: {error}")
        st.stop()
    st.caption(f"Model: **{cfg.MODEL_NAME}** + {model_label} · profile {cfg.PROFILE} · "
               f"{loaded.info.get('loader')}, {loaded.info.get('quantization')}, {loaded.info.get('device')}")
    for note in notes:
        st.warning(note)
    with st.sidebar:
        st.header("Settings")
        st.write(f"Profile: `{cfg.PROFILE}`")
        st.write(f"Adapter: {model_label}")
        st.write(f"Answer tokens: {cfg.MAX_NEW_TOKENS} · evidence budget: {cfg.PROMPT_TOKEN_BUDGET} tokens")
        st.caption("Change with `streamlit run app.py -- --KEY=value`.")

    # inputs
    mode = st.radio("Ask about", (MODE_EXAMPLE, MODE_UPLOAD), horizontal=True, key="mode")
    if mode == MODE_EXAMPLE:
        inputs = example_inputs(cfg)
        if not st.button("Answer", type="primary", key="ask_example") or inputs is None:
            return
    else:
        raw = upload_widgets(cfg)
        if not st.button("Answer", type="primary", key="ask_upload"):
            return
        inputs = upload_inputs(cfg, raw)
        if inputs is None:
            return

    # answer
    example, gold = inputs
    with st.spinner("The model is answering…"):
        result = answer(loaded, cfg, example, gold)
    show_result(example, result)


if __name__ == "__main__":
    main()
