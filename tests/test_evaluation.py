"""The shared evaluator: records, summary, resumption, batched == one-at-a-time, statistics.

A tiny random Qwen2 runs the real pipeline (real FinQA dev prompts, real scoring) in seconds;
one slow test evaluates a few dev examples with the embedded SmolLM2-135M on the CPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from finreason import evaluation, models, storage
from finreason.configuration import resolve_config
from finreason.evaluation import RECORD_FIELDS
from finreason.layout import Layout

SUMMARY_KEYS = {
    "n", "execution_accuracy", "execution_accuracy_ci95", "lenient_accuracy", "lenient_accuracy_ci95",
    "program_accuracy", "no_answer_rate", "by_operation", "by_num_steps", "by_evidence_source",
    "stage", "split", "provenance", "wall_seconds", "bootstrap_samples",
}


def read(path):
    return list(storage.read_jsonl(path))


def test_evaluate_writes_complete_records_and_summary(tiny_loaded, tiny_cfg, dev_examples):
    out = tiny_cfg.OUTPUT_DIR
    summary = evaluation.evaluate(tiny_loaded, dev_examples[:3], tiny_cfg, "zero_shot", split="dev", progress=False)
    rows = read(f"{out}/eval/zero_shot.jsonl")
    assert [r["id"] for r in rows] and sorted(r["id"] for r in rows) == sorted(e.id for e in dev_examples[:3])
    for row in rows:
        assert set(RECORD_FIELDS) <= set(row)
        assert isinstance(row["strict"], bool) and isinstance(row["lenient"], bool)
        assert row["prompt_tokens"] > 0 and row["split"] == "dev"
    assert SUMMARY_KEYS <= set(summary)
    assert summary["n"] == 3 and summary["evidence_mode"] == "retrieved"
    saved = json.loads((Path(out) / "eval" / "zero_shot.summary.json").read_text())
    assert saved["provenance"]["loader"] == "plain" and saved["provenance"]["seed"] == tiny_cfg.SEED
    low, high = summary["execution_accuracy_ci95"]
    assert 0.0 <= low <= summary["execution_accuracy"] <= high <= 1.0


def test_resume_after_interruption_never_duplicates(tiny_loaded, tiny_cfg, dev_examples):
    out = tiny_cfg.OUTPUT_DIR
    path = f"{out}/eval/sft.jsonl"
    first = evaluation.evaluate(tiny_loaded, dev_examples[:2], tiny_cfg, "sft", split="dev", progress=False)
    assert first["generated_this_run"] == 2
    before = {r["id"]: r["completion"] for r in read(path)}
    # a kill mid-write leaves a torn last line
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "torn", "completion": "half')
    second = evaluation.evaluate(tiny_loaded, dev_examples[:4], tiny_cfg, "sft", split="dev", progress=False)
    rows = read(path)
    ids = [r["id"] for r in rows]
    assert len(ids) == 4 and len(set(ids)) == 4 and "torn" not in ids
    assert second["generated_this_run"] == 2 and second["n"] == 4
    assert all(before[i] == c for i, c in ((r["id"], r["completion"]) for r in rows) if i in before)
    with open(path, encoding="utf-8") as handle:
        assert all(line.endswith("\n") for line in handle)


def test_resume_skips_undecodable_and_corrupt_lines_with_a_warning(tiny_loaded, tiny_cfg, dev_examples, caplog):
    import logging

    path = Path(tiny_cfg.OUTPUT_DIR) / "eval" / "sft.jsonl"
    evaluation.evaluate(tiny_loaded, dev_examples[:3], tiny_cfg, "sft", split="dev", progress=False)
    lines = path.read_bytes().splitlines(keepends=True)
    # the middle record is damaged two ways a disk or an editor can damage it
    path.write_bytes(lines[0] + b"\xff\xfe not utf-8\n" + b'{"id": "broken", \n' + lines[2])
    with caplog.at_level(logging.WARNING, logger="finreason.storage"):
        summary = evaluation.evaluate(tiny_loaded, dev_examples[:3], tiny_cfg, "sft", split="dev", progress=False)
    assert summary["n"] == 3 and summary["generated_this_run"] == 1  # only the lost example is generated again
    assert any("not UTF-8" in message and "not JSON" in message for message in caplog.messages)
    assert sorted(r["id"] for r in read(path)) == sorted(e.id for e in dev_examples[:3])


def test_records_of_another_run_are_archived_not_mixed(tiny_loaded, tiny_cfg, dev_examples):
    out = Path(tiny_cfg.OUTPUT_DIR)
    evaluation.evaluate(tiny_loaded, dev_examples[:2], tiny_cfg, "grpo", split="dev", progress=False)
    # a different answer length changes completions, so old records must not be reused
    changed = tiny_cfg.replace(MAX_NEW_TOKENS=tiny_cfg.MAX_NEW_TOKENS - 2)
    summary = evaluation.evaluate(tiny_loaded, dev_examples[:2], changed, "grpo", split="dev", progress=False)
    assert summary["generated_this_run"] == 2
    archived = list((out / "eval" / "archive").glob("grpo.*.jsonl"))
    assert len(archived) == 1 and len(read(archived[0])) == 2
    assert {r["run"] for r in read(out / "eval" / "grpo.jsonl")} == {summary["run"]}


@pytest.mark.parametrize(
    "change",
    [
        {"RETRIEVER_TOP_K": 4},  # one more fact in every prompt
        {"RETRIEVER": "bm25"},  # another ranker picks other facts
        {"RETRIEVER": "budget_fill"},  # the whole-table baseline
        {"EVIDENCE_MODE": "gold"},  # gold facts instead of retrieved ones
    ],
)
def test_a_changed_retriever_is_another_run(tiny_loaded, tiny_cfg, change):
    assert evaluation.run_fingerprint(tiny_loaded, tiny_cfg, "dev") != evaluation.run_fingerprint(tiny_loaded, tiny_cfg.replace(**change), "dev")
    assert evaluation.run_fingerprint(tiny_loaded, tiny_cfg, "dev") == evaluation.run_fingerprint(tiny_loaded, tiny_cfg.replace(), "dev")


def test_summary_names_the_retriever(tiny_loaded, tiny_cfg, dev_examples):
    summary = evaluation.evaluate(tiny_loaded, dev_examples[:2], tiny_cfg, "sft", split="dev", progress=False)
    assert summary["retriever"]["retriever"] == "learned" and summary["retriever"]["top_k"] == tiny_cfg.RETRIEVER_TOP_K
    assert summary["provenance"]["retriever"]["key"] == summary["retriever"]["key"]
    assert "retrieved (learned ranker, top 3) evidence" in evaluation.format_summary(summary)
    gold = evaluation.evaluate(tiny_loaded, dev_examples[:2], tiny_cfg.replace(EVIDENCE_MODE="gold"), "grpo", split="dev", progress=False)
    assert gold["retriever"] is None and "gold evidence" in evaluation.format_summary(gold)


@pytest.mark.parametrize(
    "completion",
    [
        "",  # empty completion
        "Answer:",  # a label with nothing after it
        "Program: divide(",  # truncated program
        "Program: table_sum(no such row, none)\nAnswer: banana",  # program on a missing row, answer no number
        "\x00\ufffd" * 50 + "Answer: 1e999999",  # binary junk and an overflowing number
        "Program: " + "add(1, 2), " * 400,  # absurdly long program
    ],
)
def test_garbage_completion_is_wrong_not_a_crash(completion, dev_examples):
    record = evaluation.score_record(dev_examples[0], completion, rel_tol=0.01)
    assert record["strict"] is False and record["lenient"] is False
    json.dumps(record)  # stays writable as JSONL


def test_gold_style_completion_is_right(dev_examples):
    from finreason import trainset

    example = dev_examples[0]
    record = evaluation.score_record(example, trainset.format_target(example), rel_tol=0.01)
    assert record["strict"] and record["source"] == "program" and record["program_correct"] is True
    assert record["program_note"] is None  # the official comparison decided


def test_compare_stages_on_shared_ids(tmp_path):
    def write(stage, verdicts):
        storage.append_jsonl(tmp_path / "eval" / f"{stage}.jsonl", [{"id": i, "strict": s, "lenient": s} for i, s in verdicts])

    write("zero_shot", [("a", False), ("b", False), ("c", True), ("only-zero", True)])
    write("sft", [("a", True), ("b", True), ("c", True), ("only-sft", False)])
    table = evaluation.compare_stages(Layout(tmp_path), ["zero_shot", "sft", "grpo"])
    assert table["shared_ids"] == 3
    assert [row["stage"] for row in table["stages"]] == ["zero_shot", "sft"]  # grpo has no results
    pair = table["pairs"][0]
    assert (pair["a_only"], pair["b_only"], pair["p_value"]) == (0, 2, 0.5)
    assert "McNemar zero_shot vs sft" in evaluation.format_comparison(table)


@pytest.mark.parametrize(
    "program, expected",
    [
        ("divide(100, 4)", ["divide(", "100", "4", ")", "EOF"]),  # one step
        ("subtract(5, 3), divide(#0, 3)", ["subtract(", "5", "3", ")", "divide(", "#0", "3", ")", "EOF"]),  # two steps
        (None, ["EOF"]),  # free text: no program
        ("", ["EOF"]),  # empty program
        ("divide(1", ["EOF"]),  # truncated
        ("what is this", ["EOF"]),  # prose
    ],
)
def test_official_prediction_tokens(program, expected, tmp_path):
    path = evaluation.write_official_predictions([{"id": "x", "program": program}], tmp_path / "p.json")
    assert json.loads(path.read_text()) == [{"id": "x", "predicted": expected}]


@pytest.mark.slow
def test_embedded_smollm2_scores_real_dev_examples(smollm2_output_dir, dev_examples):
    cfg = resolve_config([
        "--PROFILE=cpu", f"--OUTPUT_DIR={smollm2_output_dir}", "--DOWNLOAD_DATA=false",
        "--MAX_NEW_TOKENS=32", "--EVAL_BATCH_SIZE=4", "--PROMPT_TOKEN_BUDGET=256", "--BOOTSTRAP_SAMPLES=50",
        "--EVIDENCE_MODE=retrieved",
    ])
    loaded = models.load_model(cfg)
    assert loaded.info["loader"] == "plain" and loaded.info["model_path"].endswith("SmolLM2-135M-Instruct")
    summary = evaluation.evaluate(loaded, dev_examples[:3], cfg, "zero_shot", split="dev", progress=False)
    rows = read(smollm2_output_dir / "eval" / "zero_shot.jsonl")
    assert summary["n"] == 3 and len(rows) == 3
    for row in rows:
        assert row["completion"].strip(), "the real model writes something"
        assert row["source"] in {"program", "answer", "none"}
        assert isinstance(row["strict"], bool)
        assert row["predicted"] is None or isinstance(row["predicted"], (float, str))
        assert not (isinstance(row["predicted"], float) and math.isnan(row["predicted"]))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_changed_tolerance_rescores_stored_completions(tiny_loaded, tiny_cfg, dev_examples, monkeypatch, legacy):
    # the case 4: records made at 1% are not reused at 90%; the completions are, without generating
    examples = [e for e in dev_examples if isinstance(e.exe_ans, (int, float)) and e.exe_ans][:3]
    evaluation.evaluate(tiny_loaded, examples, tiny_cfg, "sft", split="dev", progress=False)
    path = Layout.of(tiny_cfg).eval_records("sft")
    records = read(path)
    for record in records:
        # 1.5x gold: wrong at 1%, right within 90%
        gold = next(e.exe_ans for e in examples if e.id == record["id"])
        record.update(completion=f"Answer: {gold * 1.5}", strict=False, lenient=False)
        if legacy:  # records from before the verdict's inputs were recorded
            del record["rel_tol"], record["verdict_key"]
    storage.write_jsonl(path, records)

    def no_generation(*args, **kwargs):
        raise AssertionError("a completion was regenerated although only scoring changed")

    monkeypatch.setattr(evaluation.generation, "generate", no_generation)
    summary = evaluation.evaluate(tiny_loaded, examples, tiny_cfg.replace(LENIENT_REL_TOL=0.9), "sft", split="dev", progress=False)
    assert summary["generated_this_run"] == 0 and summary["lenient_accuracy"] == 1.0 and summary["rel_tol"] == 0.9
    assert all(r["lenient"] and r["rel_tol"] == 0.9 for r in read(path))
    assert "lenient accuracy (90% tol.)" in evaluation.format_summary(summary)


@pytest.mark.parametrize(
    "pair, rule, line",
    [
        ({"a": "zero_shot", "b": "sft", "a_only": 1, "b_only": 5, "p_value": 0.21875}, None,
         "McNemar zero_shot vs sft: only zero_shot right 1, only sft right 5, exact p = 0.2188"),  # FinQA stages pair one verdict
        ({"a": "sft", "b": "grpo", "a_only": 2, "b_only": 0, "p_value": 0.5}, "tolerant",
         "McNemar (tolerant) sft vs grpo: only sft right 2, only grpo right 0, exact p = 0.5000"),  # a question file pairs two, so the line names which
        ({"a": "sft", "b": "grpo", "a_only": 0, "b_only": 0, "p_value": None}, "strict",
         "McNemar (strict) sft vs grpo: only sft right 0, only grpo right 0, exact p = -"),  # no discordant pair: no p-value
    ],
)
def test_one_mcnemar_line_for_both_comparisons(pair, rule, line):
    assert evaluation.mcnemar_line(pair, rule) == line
    # each comparison prints that very line: FinQA stages' as it is, a question file's indented under its rule
    if rule is None:
        assert line in evaluation.format_comparison({"shared_ids": 6, "stages": [], "pairs": [pair]}).splitlines()
    else:
        other = "strict" if rule == "tolerant" else "tolerant"
        table = {"questions_file": "own.jsonl", "shared_ids": 6, rule: {"stages": [], "pairs": [pair]}, other: {"stages": [], "pairs": []}}
        assert f"  {line}" in evaluation.format_question_comparison(table).splitlines()
