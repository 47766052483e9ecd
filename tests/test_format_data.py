"""03_format_data.py end to end on small limits, and its answers to malformed input."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from finreason import models, programs, prompts, trainset
from finreason.configuration import resolve_config
from finreason.data import VENDORED_DIR
from finreason.scoring import score_completion
from finreason.storage import read_jsonl
from helpers import load_script, run_script


@pytest.fixture(scope="module")
def gguf_tokenizer(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture
def script(monkeypatch, gguf_tokenizer):
    # The real load_tokenizer converts the whole GGUF model into OUTPUT_DIR first; the
    # tokenizer is the same, so tests take it straight from the GGUF.
    monkeypatch.setattr(models, "load_tokenizer", lambda cfg, model_path=None: gguf_tokenizer)
    return load_script("03_format_data.py")


def raw_split(split: str, limit: int) -> list[dict]:
    return json.loads(gzip.decompress((VENDORED_DIR / f"{split}.json.gz").read_bytes()))[:limit]


def write_data_dir(folder: Path, train: list, dev: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(train))
    (folder / "dev.json").write_text(json.dumps(dev))
    return folder


def base_args(tmp_path: Path, *extra: str) -> list[str]:
    return [f"--OUTPUT_DIR={tmp_path / 'out'}", "--PROFILE=cpu", "--DOWNLOAD_DATA=false", "--no-progress", *extra]


def test_writes_the_three_files_and_manifest(script, tmp_path, gguf_tokenizer):
    data_dir = write_data_dir(tmp_path / "finqa", raw_split("train", 12), raw_split("dev", 5))
    manifest = script.main(base_args(tmp_path, f"--DATA_DIR={data_dir}", "--SFT_TRAIN_LIMIT=4", "--GRPO_TRAIN_LIMIT=3"))
    out = tmp_path / "out" / "data"
    sft, dev, grpo = (list(read_jsonl(out / name)) for name in ("sft_train.jsonl", "sft_dev.jsonl", "grpo_train.jsonl"))
    assert (len(sft), len(dev), len(grpo)) == (4, 5, 3)
    # gold and table let 04 score held-out training rows (SFT_HOLDOUT) with the evaluation's check
    assert all(set(row) == {"id", "prompt", "completion", "gold", "table"} for row in sft + dev)
    assert all(set(row) == {"id", "prompt", "gold", "table"} for row in grpo)
    assert json.loads((out / "manifest.json").read_text())["counts"] == manifest["counts"]
    assert manifest["self_check"]["checked"] == 12  # all of train, not only the 4-example slice
    assert manifest["self_check"]["strict_correct"] == 12
    assert "provenance" in manifest and manifest["tokenizer"]["model_name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    for row in grpo:
        assert row["gold"] in ("yes", "no") or math.isfinite(float(row["gold"]))  # a number, never nan or inf
        assert score_completion(f"Program: x\nAnswer: {row['gold']}", row["gold"], row["table"]).strict
    first = sft[0]
    assert first["completion"].splitlines()[-2].startswith("Program: ")
    assert "Question: " in first["prompt"] and first["prompt"] == grpo[0]["prompt"]


@pytest.mark.parametrize(
    "settings",
    [
        ["--EVIDENCE_MODE=retrieved", "--FEW_SHOT_EXAMPLE=true", "--SFT_TARGET=reasoning"],  # the GPU profiles' prompts
        ["--EVIDENCE_MODE=gold", "--FEW_SHOT_EXAMPLE=false", "--SFT_TARGET=program"],  # the cpu profile's
    ],
)
def test_prompts_match_the_shared_builder(script, tmp_path, gguf_tokenizer, settings):
    from finreason.data import load_finqa

    data_dir = write_data_dir(tmp_path / "finqa", raw_split("train", 2), raw_split("dev", 1))
    args = base_args(tmp_path, f"--DATA_DIR={data_dir}", "--PROMPT_TOKEN_BUDGET=200", *settings)
    manifest = script.main(args)
    cfg = resolve_config([arg for arg in args if arg.startswith("--") and "=" in arg])
    example = load_finqa(data_dir=str(data_dir), splits=("train",), verbose=False)["train"][0]
    row = next(read_jsonl(tmp_path / "out" / "data" / "sft_train.jsonl"))
    assert row["prompt"] == prompts.prompt_from_cfg(example, gguf_tokenizer, cfg)
    assert row["completion"] == trainset.format_target(example, cfg.SFT_TARGET)
    assert manifest["prompt"]["evidence_mode"] == cfg.EVIDENCE_MODE and manifest["sft_target"] == cfg.SFT_TARGET


def test_both_evidence_views_write_every_example_twice(script, tmp_path):
    data_dir = write_data_dir(tmp_path / "finqa", raw_split("train", 4), raw_split("dev", 1))
    manifest = script.main(base_args(tmp_path, f"--DATA_DIR={data_dir}", "--EVIDENCE_MODE=retrieved",
                                     "--SFT_EVIDENCE_VIEWS=both", "--SFT_TRAIN_LIMIT=3", "--PROMPT_TOKEN_BUDGET=200"))
    sft = list(read_jsonl(tmp_path / "out" / "data" / "sft_train.jsonl"))
    plain, views = [row for row in sft if "view" not in row], [row for row in sft if "view" in row]
    assert manifest["counts"]["sft_train"] == 6 and manifest["sft_evidence_views"] == "both"
    assert [row["id"] for row in plain] == [row["id"] for row in views]  # the same 3 examples, the same targets
    assert [row["completion"] for row in plain] == [row["completion"] for row in views]
    assert {row["view"] for row in views} == {"gold"}
    assert all(view["prompt"] != row["prompt"] for row, view in zip(plain, views))  # other evidence, same question


def test_commuted_program_views_add_a_second_right_program(script, tmp_path):
    train = raw_split("train", 5)  # the 4th adds const_4 and 44; the 5th adds, divides and multiplies
    data_dir = write_data_dir(tmp_path / "finqa", train, raw_split("dev", 1))
    commutes = [programs.commuted(example["qa"]["program"]) is not None for example in train]
    manifest = script.main(base_args(tmp_path, f"--DATA_DIR={data_dir}", "--SFT_PROGRAM_VIEWS=commuted"))
    sft = list(read_jsonl(tmp_path / "out" / "data" / "sft_train.jsonl"))
    views = [row for row in sft if row.get("view") == "commuted"]
    assert manifest["sft_program_views"] == "commuted" and manifest["counts"]["sft_train"] == 5 + 2 == 5 + sum(commutes)
    assert [row["id"] for row in views] == [example["id"] for example, swaps in zip(train, commutes) if swaps]
    assert "Program: add(350, 500), divide(#0, 2248), multiply(const_100, #1)" in views[1]["completion"]  # written the other way round


def test_distractor_views_redraw_the_facts_beside_the_gold_ones(script, tmp_path):
    data_dir = write_data_dir(tmp_path / "finqa", raw_split("train", 4), raw_split("dev", 1))
    manifest = script.main(base_args(tmp_path, f"--DATA_DIR={data_dir}", "--EVIDENCE_MODE=retrieved", "--RETRIEVER=bm25",
                                     "--SFT_DISTRACTOR_VIEWS=2", "--SFT_TRAIN_LIMIT=3"))
    sft = list(read_jsonl(tmp_path / "out" / "data" / "sft_train.jsonl"))
    plain = {row["id"]: row for row in sft if "view" not in row}
    views = [row for row in sft if "view" in row]
    assert manifest["sft_distractor_views"] == 2 and manifest["counts"]["sft_train"] == 3 + 3 * 2
    assert [(row["id"], row["view"]) for row in views] == [(key, f"distractors_{n}") for key in plain for n in (1, 2)]
    assert all(row["completion"] == plain[row["id"]]["completion"] for row in views)  # the same target
    assert all(row["prompt"].split("Question:")[-1] == plain[row["id"]]["prompt"].split("Question:")[-1] for row in views)
    assert any(row["prompt"] != plain[row["id"]]["prompt"] for row in views)  # other facts shown


def test_inconsistent_gold_is_left_out_and_listed(script, tmp_path):
    train = raw_split("train", 3)
    train[1]["qa"]["exe_ans"] = 123456.0  # the gold program cannot give this
    data_dir = write_data_dir(tmp_path / "finqa", train, raw_split("dev", 1))
    manifest = script.main(base_args(tmp_path, f"--DATA_DIR={data_dir}"))
    assert [item["id"] for item in manifest["self_check"]["inconsistent_gold"]] == [train[1]["id"]]
    assert manifest["counts"]["sft_train"] == 2 and manifest["counts"]["grpo_train"] == 2


def test_a_wrong_target_format_fails_and_writes_nothing(script, tmp_path, monkeypatch, capsys):
    data_dir = write_data_dir(tmp_path / "finqa", raw_split("train", 2), raw_split("dev", 1))
    monkeypatch.setattr(trainset, "format_target", lambda example, style: "Answer: 42424242")
    with pytest.raises(SystemExit) as raised:
        run_script("03_format_data.py", base_args(tmp_path, f"--DATA_DIR={data_dir}"))
    assert raised.value.code == 1 and "not strict-correct" in capsys.readouterr().err
    assert not (tmp_path / "out" / "data").exists()


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--SFT_TRAIN_LIMIT=-1"], 2, "--SFT_TRAIN_LIMIT must be >= 0"),  # negative limits are refused, not silently "all"
        (["--DATA_DIR=/no/such/folder"], 1, "no such folder"),  # a clear message, not a traceback
    ],
)
def test_bad_options_exit_with_a_message(script, tmp_path, capsys, extra, code, message):
    with pytest.raises(SystemExit) as raised:
        run_script("03_format_data.py", base_args(tmp_path, *extra))
    err = capsys.readouterr().err
    assert raised.value.code == code and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "extra",
    [
        ["--SFT_TRAIN_LIMIT=many"],  # not an integer: argparse-style exit 2
        ["--NO_SUCH_KEY=1"],  # unknown config key
    ],
)
def test_malformed_overrides_exit_2(script, tmp_path, extra):
    with pytest.raises(SystemExit) as raised:
        script.main(base_args(tmp_path, *extra))
    assert raised.value.code == 2


def test_malformed_examples_are_skipped(script, tmp_path):
    train = raw_split("train", 3) + [{"id": "broken-1", "qa": {}}, "not an object"]
    data_dir = write_data_dir(tmp_path / "finqa", train, raw_split("dev", 1))
    manifest = script.main(base_args(tmp_path, f"--DATA_DIR={data_dir}"))
    assert manifest["counts"]["sft_train"] == 3
    assert manifest["provenance"]["data"]["skipped"] == {"train": 2}


def test_help_works(script, capsys):
    with pytest.raises(SystemExit) as raised:
        script.main(["--help"])
    assert raised.value.code == 0
    assert "sft_train.jsonl" in capsys.readouterr().out  # the docstring: command, inputs, outputs
