"""07_analyze: report and figures from whatever stages exist; error categories from records."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from finreason import analysis
from finreason.data import load_finqa
from finreason.layout import STAGES
from finreason.storage import append_jsonl, atomic_write_json
from helpers import load_script


@pytest.fixture(scope="module")
def dev():
    return load_finqa(download=False, cache_dir="/nonexistent-finreason-cache", splits=("dev",), verbose=False)["dev"]


def _record(example, completion_program, predicted, strict, source="program", lenient=None, answer_text=None):
    return {
        "id": example.id, "prompt_tokens": 300, "completion": f"Program: {completion_program}",
        "program": completion_program, "answer_text": answer_text, "predicted": predicted,
        "gold": example.exe_ans, "strict": strict, "lenient": strict if lenient is None else lenient,
        "source": source, "error": None, "evidence_source": example.evidence_source,
        "operations": example.operations, "num_steps": example.num_steps,
    }


# The vendored dev split starts with: divide(637, const_5)=127.4; divide(25048, 44572)=0.56197;
# subtract(303, 189)=114.0 (a text fact); divide(177.3, 521.3)=0.34011.
CASES = [
    # correct: the gold program itself
    (0, "divide(637, const_5)", 127.4, True, "program", "correct", False),
    # nothing parseable at all
    (0, None, None, False, "none", "no_answer", False),
    # program present but references a missing step: fails to execute, no answer
    (1, "divide(#3, 44572)", None, False, "none", "unparseable_program", False),
    # program fails but the Answer line gives a wrong number: still the program's fault
    (1, "divide(25048 44572)", 3.0, False, "answer", "unparseable_program", False),
    # percent instead of fraction: x100
    (1, "divide(25048, 44572), multiply(#0, const_100)", 56.197, False, "program", "wrong_scale", False),
    # thousands vs units: /1000
    (2, "subtract(0.303, 0.189)", 0.114, False, "program", "wrong_scale", False),
    # off by rounding only (within 1%), not the official exact match
    (1, "divide(25048, 44572)", 0.562, False, "program", "imprecise", False),
    # right operation, one operand from the wrong year (523 is in the same sentence)
    (2, "subtract(523, 189)", 334.0, False, "program", "wrong_numbers", False),
    # an operand that appears nowhere in table or text (hallucinated)
    (2, "subtract(303, 123456)", -123153.0, False, "program", "wrong_numbers", True),
    # the gold operands, combined the wrong way round
    (2, "subtract(189, 303)", -114.0, False, "program", "wrong_operation", False),
    # the gold operands with another operation
    (3, "subtract(177.3, 521.3)", -344.0, False, "program", "wrong_operation", False),
    # no program line, a wrong answer: cause unknown
    (3, None, 5.0, False, "answer", "wrong_answer_only", False),
]


@pytest.mark.parametrize("index, program, predicted, strict, source, expected, not_in_doc", CASES)
def test_categorize(dev, index, program, predicted, strict, source, expected, not_in_doc):
    record = _record(dev[index], program, predicted, strict, source)
    category = analysis.categorize(record, dev[index], rel_tol=0.01)
    assert category.name == expected
    assert category.not_in_document == not_in_doc


def test_categorize_without_example_is_unclassified(dev):
    # no gold program available: an executing wrong program cannot be split into numbers vs operation
    record = _record(dev[2], "subtract(189, 303)", -114.0, False)
    assert analysis.categorize(record, None).name == "unclassified"


@pytest.mark.parametrize(
    "program, expected",
    [
        ("divide(637, const_5)", {("num", 637.0)}),  # constants excluded
        ("subtract(5%, 1,200), divide(#0, 2)", {("num", 0.05), ("num", 1200.0), ("num", 2.0)}),  # % and commas
        ("table_sum(Revenue, none)", {("row", "revenue")}),  # table rows by name
        ("divide(1, 2", None),  # malformed: no operands
    ],
)
def test_program_operands(program, expected):
    assert analysis.program_operands(program) == expected


def _write_stage(eval_dir: Path, stage: str, records: list[dict], evidence_mode: str | None = None,
                 retriever: dict | None = None) -> None:
    append_jsonl(eval_dir / f"{stage}.jsonl", records)
    strict = sum(r["strict"] for r in records) / len(records)
    summary = {
        "n": len(records), "split": "dev", "execution_accuracy": strict, "execution_accuracy_ci95": [0.0, 1.0],
        "program_accuracy": 0.25, "provenance": {"model": "tiny", "weights": None}}
    if evidence_mode:
        summary["evidence_mode"] = evidence_mode
    if retriever:
        summary["retriever"] = retriever
    atomic_write_json(eval_dir / f"{stage}.summary.json", summary)


def _trainer_state(folder: Path, entries: list[dict]) -> None:
    # a checkpoint saved at step 2 and the script's per-step log reaching step 4: the longer one wins
    atomic_write_json(folder / "checkpoints" / "checkpoint-2" / "trainer_state.json", {"global_step": 2, "log_history": entries[:2]})
    append_jsonl(folder / "step_log.jsonl", entries)


def _records(dev, quality: int) -> list[dict]:
    out = []
    for i, example in enumerate(dev[:12]):
        if i % 3 < quality:
            out.append(_record(example, example.program, example.exe_ans, True))
        else:
            out.append(_record(example, "divide(1, 3)", 0.33333, False))
    return out


@pytest.mark.parametrize(
    "stages, with_logs",
    [
        (("zero_shot", "sft", "grpo"), True),  # the whole pipeline ran
        (("zero_shot",), False),  # only the baseline: training stages reported missing
        ((), False),  # nothing evaluated yet: a report that says so
    ],
)
def test_analyze_main_writes_report(tmp_path, dev, stages, with_logs):
    for quality, stage in enumerate(stages):
        _write_stage(tmp_path / "eval", stage, _records(dev, quality + 1))
    if with_logs:
        _trainer_state(tmp_path / "sft", [{"step": s, "loss": 2.0 / s} for s in range(1, 5)])
        _trainer_state(tmp_path / "grpo", [{"step": s, "reward": 0.1 * s, "reward_std": 0.2, "completions/mean_length": 60 + s} for s in range(1, 5)])
    script = load_script("07_analyze.py")
    numbers = script.main([f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu", "--DOWNLOAD_DATA=false",
                           "--FINQA_CACHE_DIR=/nonexistent-finreason-cache", "--BOOTSTRAP_SAMPLES=50"])
    report = (tmp_path / "report.md").read_text()
    assert [row["stage"] for row in numbers["stages"]] == list(stages)
    for name in set(STAGES) - set(stages):
        assert name in numbers["missing_stages"]
    for figure in numbers["figures"].values():
        assert Path(figure).is_file() and Path(figure).stat().st_size > 1000
        assert f"figures/{Path(figure).name}" in report
    expected_figures = {"accuracy", "operation", "num_steps", "categories"} if stages else set()
    if with_logs:
        expected_figures |= {"training_sft", "training_grpo"}
    assert set(numbers["figures"]) == expected_figures
    assert ("Missing:" in report) == (len(stages) < len(STAGES))  # named only when a stage has no results
    assert ("## Paired comparison" in report) == (len(stages) > 1)  # McNemar needs two stages
    if with_logs:
        assert numbers["training"]["grpo"]["steps"] == 4 and numbers["training"]["grpo"]["source"].endswith("step_log.jsonl")
    saved = json.loads((tmp_path / "analysis.json").read_text())
    assert saved["provenance"]["profile"] == "cpu"


def test_analyze_survives_damaged_files(tmp_path):
    # a torn JSONL line and an unreadable summary are skipped, not fatal
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "sft.jsonl").write_text('{"id": "x", "strict": true, "gold": 1.0, "source": "program", "program": "add(1, 0)", "predicted": 1.0}\n{"id": "y", "str')
    (tmp_path / "eval" / "sft.summary.json").write_text("{not json")
    (tmp_path / "grpo" / "runs").mkdir(parents=True)
    script = load_script("07_analyze.py")
    numbers = script.main([f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu", "--DOWNLOAD_DATA=false",
                           "--FINQA_CACHE_DIR=/nonexistent-finreason-cache", "--BOOTSTRAP_SAMPLES=20"])
    assert numbers["stages"][0]["n"] == 1
    assert "GRPO: no training log found" in (tmp_path / "report.md").read_text()


def test_tensorboard_fallback(tmp_path):
    # without trainer_state.json the scalars come from TensorBoard event files
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "grpo" / "runs" / "run1"))
    for step in range(1, 4):
        writer.add_scalar("train/reward", 0.5 * step, step)
        writer.add_scalar("train/completions/mean_length", 40.0, step)
    writer.close()
    log = analysis.load_training_log(tmp_path / "grpo", "grpo")
    assert log.get("reward") == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert log.get("completions/mean_length")[-1] == (3, 40.0)


def test_breakdown_groups():
    records = [
        {"strict": True, "operations": ["divide", "subtract"], "num_steps": 2},
        {"strict": False, "operations": ["divide"], "num_steps": 5},
    ]
    assert analysis.breakdown(records, "operation") == {"divide": (2, 0.5), "subtract": (1, 1.0)}
    assert analysis.breakdown(records, "num_steps") == {"2": (1, 1.0), "4+": (1, 0.0)}


def test_summary_ci_preferred_over_bootstrap():
    # the report must show 06_evaluate's own interval when the summary states one
    summary = {"execution_accuracy": 0.5, "execution_accuracy_ci95": [0.4, 0.6], "lenient_accuracy": 0.5, "lenient_accuracy_ci95": [None, None]}
    stage = analysis.StageResult("sft", [{"strict": True}], summary)
    assert analysis.accuracy(stage, "strict", 10, 0) == (0.5, 0.4, 0.6)
    assert analysis.accuracy(stage, "lenient", 10, 0)[0] == 0.0  # no usable CI stated: recomputed from records
    empty = analysis.StageResult("grpo", [], {})
    assert all(x != x for x in analysis.accuracy(empty, "strict", 10, 0))  # nan, not a crash


def test_example_namespace_document_numbers():
    example = SimpleNamespace(table=[["revenue", "$ 1,200", "5%"]], text=["costs were 3.5 million"])
    numbers = analysis.document_numbers(example)
    assert {1200.0, 0.05, 5.0, 3.5} <= numbers


@pytest.mark.parametrize(
    "modes, flagged",
    [
        (("retrieved", "retrieved"), False),  # the standard setting: no warning
        ((None, None), False),  # results from before the mode existed were retrieved
        (("gold", "gold"), True),  # the gold-facts setting is announced and marked in the table
        (("retrieved", "gold"), True),  # a mix: the gold row is marked, not silently compared
    ],
)
def test_report_states_each_stage_evidence_mode(tmp_path, dev, modes, flagged):
    for (stage, mode), quality in zip(zip(("zero_shot", "sft"), modes), (1, 2)):
        _write_stage(tmp_path / "eval", stage, _records(dev, quality), mode)
    numbers = load_script("07_analyze.py").main([f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu", "--DOWNLOAD_DATA=false",
                                                 "--FINQA_CACHE_DIR=/nonexistent-finreason-cache", "--BOOTSTRAP_SAMPLES=20"])
    report = (tmp_path / "report.md").read_text()
    assert [row["evidence"] for row in numbers["stages"]] == [mode or "retrieved" for mode in modes]
    assert ("GOLD facts only" in report) == flagged
    assert ("| GOLD |" in report) == flagged


def test_report_table_names_the_retriever_and_k(tmp_path, dev):
    learned = {"retriever": "learned", "ranker": "learned", "top_k": 3, "key": "abc"}
    _write_stage(tmp_path / "eval", "zero_shot", _records(dev, 1), "retrieved", learned)
    _write_stage(tmp_path / "eval", "sft", _records(dev, 2), "retrieved", {"retriever": "budget_fill", "token_budget": 384})
    load_script("07_analyze.py").main([f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu", "--DOWNLOAD_DATA=false",
                                       "--FINQA_CACHE_DIR=/nonexistent-finreason-cache", "--BOOTSTRAP_SAMPLES=20"])
    report = (tmp_path / "report.md").read_text()
    assert "| zero_shot | retrieved (learned ranker, top 3) |" in report
    assert "| sft | retrieved (budget fill (384 tokens)) |" in report
