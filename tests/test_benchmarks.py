"""The learning benchmark's plumbing on a tiny random model: every stage runs through the real
scripts and the JSON has the keys the README and the issue name (the numbers mean nothing here)."""

from __future__ import annotations

import json

import pytest

from helpers import load_script

REQUIRED = (
    "n", "evidence_mode", "zero_shot_strict", "sft_strict", "grpo_strict", "p_value", "grpo_p_value_vs_sft",
    "grpo_mixed_group_share", "grpo_fixed_set_reward_before", "grpo_fixed_set_reward_after", "grpo_fixed_set_p_value",
    "ci95", "grpo_fixed_set_reward_ci95", "timings", "met", "provenance",
)


@pytest.mark.slow
def test_cpu_learning_runs_every_stage_and_reports(tiny_qwen2_dir, tmp_path, capsys):
    bench = load_script("benchmarks/cpu_learning.py")
    result = bench.main([
        "--dev", "2", "--fixed-set", "3", "--grpo-steps", "1", f"--OUTPUT_DIR={tmp_path}", f"--MODEL_NAME={tiny_qwen2_dir}", "--DOWNLOAD_DATA=false",
        "--SFT_TRAIN_LIMIT=4", "--SFT_MAX_STEPS=1", "--SFT_GRAD_ACCUM=1", "--NUM_GENERATIONS=2", "--GRPO_BATCH_SIZE=2",
        "--GRPO_GRAD_ACCUM=1", "--GRPO_MAX_NEW_TOKENS=4", "--MAX_NEW_TOKENS=4", "--PROMPT_TOKEN_BUDGET=64",
        "--BOOTSTRAP_SAMPLES=20",
    ])
    for key in REQUIRED:
        assert key in result, key
    assert result["n"] == 2 and result["evidence_mode"] == "gold"  # the cpu profile's setting, labelled
    assert result["fixed_set"]["questions"] == 3
    assert set(result["timings"]) == {"format", "zero_shot", "sft", "grpo_train", "grpo_eval", "fixed_set_after"}
    assert all(result["timings"][stage]["peak_rss_gb"] > 0 for stage in ("zero_shot", "sft", "grpo_train"))
    saved = json.loads((tmp_path / "bench" / "cpu_learning.json").read_text())
    assert saved == json.loads((tmp_path / "bench" / "cpu_learning_gold.json").read_text())
    assert "cpu_learning: n=2 dev questions, GOLD facts only" in capsys.readouterr().out


@pytest.mark.slow
def test_sft_ablation_runs_the_four_combinations(tiny_qwen2_dir, tmp_path, capsys):
    bench = load_script("benchmarks/sft_ablation.py")
    result = bench.main([
        "--dev", "2", f"--OUTPUT_DIR={tmp_path}", f"--MODEL_NAME={tiny_qwen2_dir}", "--DOWNLOAD_DATA=false",
        "--SFT_TRAIN_LIMIT=2", "--SFT_MAX_STEPS=1", "--SFT_GRAD_ACCUM=1", "--GRPO_TRAIN_LIMIT=1", "--MAX_NEW_TOKENS=4",
        "--LORA_R=2", "--LORA_ALPHA=4", "--BOOTSTRAP_SAMPLES=10",
    ])
    combos = result["combinations"]
    assert set(combos) == {"full_program", "lora_program", "full_reasoning", "lora_reasoning"}
    assert combos["lora_program"]["learning_rate"] == 1e-3 and combos["full_program"]["learning_rate"] == 1e-4
    assert combos["full_program"]["p_value_vs_full_program"] == 1.0  # itself
    assert (tmp_path / "bench" / "sft_ablation" / "full_program" / "sft" / "model" / "config.json").is_file()
    assert (tmp_path / "bench" / "sft_ablation" / "lora_reasoning" / "sft" / "adapter" / "adapter_config.json").is_file()
    assert "sft_ablation: n=2 dev questions, gold evidence" in capsys.readouterr().out
