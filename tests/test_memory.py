"""The memory probe (00_check_env.py --probe) on a tiny model, its verdicts, and finreason.measure."""

from __future__ import annotations

import json
import sys

import pytest

from finreason import measure, memory
from finreason.configuration import resolve_config
from finreason.layout import Layout
from helpers import load_script, tiny_overrides

PROBE_SETTINGS = (
    "--MAX_SEQ_LEN=512", "--PROMPT_TOKEN_BUDGET=96", "--SFT_BATCH_SIZE=1", "--SFT_GRAD_ACCUM=2",
    "--NUM_GENERATIONS=2", "--GRPO_BATCH_SIZE=2", "--GRPO_GRAD_ACCUM=1", "--GRPO_MAX_NEW_TOKENS=6",
    "--SFT_TRAIN_LIMIT=40", "--GRPO_MAX_STEPS=10", "--SFT_MAX_STEPS=-1", "--SFT_EPOCHS=2",
)


@pytest.mark.slow
def test_probe_measures_a_tiny_model_and_writes_nothing_under_training_folders(tiny_qwen2_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = load_script("00_check_env.py").main([*tiny_overrides(tiny_qwen2_dir, out, *PROBE_SETTINGS), "--probe"])
    assert code == 0
    probe = json.loads((out / "check_env.json").read_text())["probe"]
    for key in ("peak_memory_gb", "sft_step_s", "grpo_step_s", "projected_sft_s", "projected_grpo_s", "capacity_gb", "verdict"):
        assert probe[key] is not None, key
    assert probe["verdict"] == "fits" and probe["sft"]["steps"] == 3 and probe["grpo"]["steps"] == 1
    assert 0 < probe["peak_memory_gb"] < probe["capacity_gb"]
    # 40 rows at batch 1 x 2 for 2 epochs = 40 optimizer steps; GRPO_MAX_STEPS as configured
    assert probe["projected_sft_steps"] == 40 and probe["projected_grpo_steps"] == 10
    assert probe["projected_sft_s"] == pytest.approx(probe["sft_step_s"] * 40, rel=0.05, abs=1)
    # no sft/, grpo/, checkpoints: only the report, and the fact ranker's cache that retrieved prompts need
    assert sorted(path.name for path in out.iterdir()) == sorted(["check_env.json", Layout(out).retriever_dir.name])
    assert "memory probe" in capsys.readouterr().out


def _result(sft_peak, grpo_peak, capacity=8.0, sft_oom=False, grpo_oom=False):
    return {
        "capacity_gb": capacity, "peak_memory_gb": max(sft_peak, grpo_peak),
        "sft": {"peak_memory_gb": sft_peak, "out_of_memory": sft_oom},
        "grpo": {"peak_memory_gb": grpo_peak, "out_of_memory": grpo_oom},
    }


@pytest.mark.parametrize(
    "result, verdict",
    [
        (_result(3.0, 5.0), "fits"),  # well inside the card
        (_result(3.0, 7.9), "lower NUM_GENERATIONS first"),  # GRPO too close to 8 GiB: the first GRPO knob
        (_result(7.8, 2.0), "lower MAX_SEQ_LEN first"),  # SFT too close: the first SFT knob of the OOM table
        (_result(2.0, 2.0, sft_oom=True), "SFT ran out of memory; lower MAX_SEQ_LEN first"),  # a real OOM
        (_result(2.0, 8.0, grpo_oom=True), "GRPO ran out of memory; lower NUM_GENERATIONS first"),  # GRPO OOM wins over closeness
    ],
)
def test_probe_verdicts_name_the_first_constant_to_lower(result, verdict):
    assert verdict in memory.verdict(result)


def test_oom_order_matches_the_readme_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("### Out of memory"):]
    rows = [line.split("|")[1].strip().strip("`") for line in table.splitlines() if line.startswith("| `")]
    assert rows[: len(memory.OOM_ORDER)] == [name for name, _ in memory.OOM_ORDER]


@pytest.mark.parametrize(
    "overrides, bigger_than",
    [
        ({"FINETUNE": "full", "LOAD_IN_4BIT": False}, {"FINETUNE": "lora", "LOAD_IN_4BIT": False}),  # Adam on every weight
        ({"GRADIENT_CHECKPOINTING": False}, {"GRADIENT_CHECKPOINTING": True}),  # every layer's activations kept
        ({"NUM_GENERATIONS": 8, "GRPO_BATCH_SIZE": 8}, {}),  # more sampled sequences
    ],
)
def test_estimate_terms_move_the_right_way(overrides, bigger_than):
    base = resolve_config(["--PROFILE=rtx4060"])
    shape = memory.KNOWN_MODELS[base.MODEL_NAME]
    assert memory.estimate_gb(base.replace(**overrides), shape)["peak"] > memory.estimate_gb(base.replace(**bigger_than), shape)["peak"]


def test_measure_records_time_and_peak_memory_of_a_child(tmp_path):
    log = tmp_path / "steps.jsonl"
    # a child that holds ~300 MB: its peak is the child's, not this test process's
    code = measure.main(["--log", str(log), "--name", "alloc", "--", sys.executable, "-c",
                         "import time; block = bytearray(300 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(0.2)"])
    assert code == 0
    record = json.loads(log.read_text())
    assert record["name"] == "alloc" and record["exit_code"] == 0 and record["peak_rss_gb"] >= 0.28
    failed = measure.run([sys.executable, "-c", "raise SystemExit(3)"], "fails", log)
    assert failed["exit_code"] == 3
    assert "alloc" in measure.summary_table([record, failed])
