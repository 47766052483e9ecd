"""The memory probe (00_check_env.py --probe) on a tiny model, its verdicts, and finreason.measure."""

from __future__ import annotations

import json
import sys

import pytest

from finreason import measure, memory, precision, probe, storage, training
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
    assert probe["verdict"] == "fits" and probe["grpo"]["steps"] == 1
    # at least two SFT steps (the first warms up), and enough micro-batches to meet every padded length once
    assert probe["sft"]["steps"] == probe["sft_steps_measured"] >= 2
    assert probe["sft_steps_measured"] * 2 >= probe["sft_padded_lengths"] >= 1
    # CPU_PRECISION=auto (the cpu profile's): the SFT phase ran in each precision, in a fresh
    # process each, and the decision names both measurements; 04 and 05 read it back from here
    decision = probe["cpu_precision"]
    assert set(decision["measured"]) == {"float32", "bfloat16"} and decision["chosen"] in decision["measured"]
    for measured in decision["measured"].values():
        assert measured["peak_memory_gb"] > 0 and measured["step_s"] > 0 and measured["steps"] == probe["sft_steps_measured"]
    assert probe["sft"] == decision["measured"][decision["chosen"]]
    assert probe["sft"]["projected_peak_memory_gb"] == probe["sft"]["peak_memory_gb"]
    cfg = resolve_config(tiny_overrides(tiny_qwen2_dir, out, *PROBE_SETTINGS))
    assert training.precision_decision(cfg) == (decision["chosen"], f"measured by 00_check_env.py --probe: {decision['reason']}")
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
    assert verdict in probe.verdict(result)


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


@pytest.mark.parametrize(
    ("fp32", "bf16", "budget", "chosen", "why"),
    [
        ({"step_s": 10.0}, {"step_s": 8.0, "projected_peak_memory_gb": 3.5}, 4.0, "bfloat16", "1.25x faster"),  # faster and fits
        ({"step_s": 10.0}, {"step_s": 8.0, "projected_peak_memory_gb": 6.1}, 4.0, "float32", "exceeds CPU_MEMORY_BUDGET_GB=4"),  # the 6.1 GiB demo
        ({"step_s": 10.0}, {"step_s": 8.0, "projected_peak_memory_gb": 6.1}, 8.0, "bfloat16", "fits"),  # a bigger budget admits it
        ({"step_s": 10.0}, {"step_s": 9.8, "projected_peak_memory_gb": 1.0}, 4.0, "float32", "not faster"),  # within the noise of a few steps
        ({"step_s": 10.0}, {"step_s": 14.0, "projected_peak_memory_gb": 1.0}, 4.0, "float32", "not faster"),  # emulated bf16: slower
        ({"step_s": 10.0}, {"step_s": None, "out_of_memory": True, "projected_peak_memory_gb": 9.0}, 4.0, "float32", "did not finish"),
        ({"step_s": None, "out_of_memory": True}, {"step_s": 8.0, "projected_peak_memory_gb": 3.0}, 4.0, "bfloat16", "float32 did not finish"),
    ],
)
def test_cpu_precision_is_chosen_from_real_steps_and_the_budget(fp32, bf16, budget, chosen, why):
    found, reason = precision.choose_from_steps({"float32": fp32, "bfloat16": bf16}, budget)
    assert found == chosen and why in reason


def _decision(cfg, **changes):
    record = {"chosen": "bfloat16", "reason": "1.30x faster", "machine": precision.machine_identity(),
              "settings": {key: getattr(cfg, key) for key in precision.PRECISION_SETTINGS}}
    for key, value in changes.items():
        if key in record:
            record[key] = value
        else:
            record["settings"][key] = value
    return record


@pytest.mark.parametrize(
    ("record", "chosen", "why"),
    [
        (lambda cfg: _decision(cfg), "bfloat16", "measured by 00_check_env.py --probe: 1.30x faster"),  # this machine, these settings
        (lambda cfg: _decision(cfg, machine={"cpu_model": "another CPU"}), None, "another machine"),  # another CPU decides anew
        (lambda cfg: _decision(cfg, MAX_SEQ_LEN=2048), None, "other MAX_SEQ_LEN"),  # longer rows: another step cost
        (lambda cfg: _decision(cfg, SFT_PAD_TO_MULTIPLE=1), None, "other SFT_PAD_TO_MULTIPLE"),  # unpadded: another peak
        (lambda cfg: _decision(cfg, chosen="float16"), None, "no precision decision"),  # not a CPU precision
        (lambda cfg: None, None, "no precision decision"),  # a probe without CPU_PRECISION=auto
        (lambda cfg: "garbage", None, "no precision decision"),
    ],
)
def test_a_recorded_precision_holds_only_for_its_machine_and_settings(tmp_path, record, chosen, why):
    cfg = resolve_config(["--PROFILE=cpu", f"--OUTPUT_DIR={tmp_path}"])
    storage.atomic_write_json(Layout.of(cfg).check_env, {"probe": {"cpu_precision": record(cfg)}})
    found, reason = precision.recorded_precision(cfg)
    assert found == chosen and why in reason


def test_a_damaged_check_env_means_no_recorded_precision(tmp_path):
    cfg = resolve_config(["--PROFILE=cpu", f"--OUTPUT_DIR={tmp_path}"])
    Layout.of(cfg).check_env.write_text('{"probe": {"cpu_precision": {"chos', encoding="utf-8")
    assert precision.recorded_precision(cfg)[0] is None


def test_auto_trains_in_the_recorded_precision_not_the_matmul_guess(tmp_path, monkeypatch):
    from finreason import throughput

    # the matmul peaks say bf16 wins by far; the probe measured real steps and chose float32
    monkeypatch.setattr(throughput, "measured_peak", lambda name, device="cpu": {"float32": 1e11, "bfloat16": 9e11}[name])
    cfg = resolve_config(["--PROFILE=cpu", "--CPU_PRECISION=auto", f"--OUTPUT_DIR={tmp_path}"])
    assert training.training_precision(cfg) == "bfloat16"  # nothing recorded yet: the matmul peaks decide
    storage.atomic_write_json(Layout.of(cfg).check_env, {"probe": {"cpu_precision": _decision(cfg, chosen="float32")}})
    assert training.training_precision(cfg) == "float32"
    assert training.hardware_arguments(cfg)["bf16"] is False


@pytest.mark.parametrize(
    ("tokens", "multiple", "padded"),
    [
        (117, 32, 128),  # up to the next multiple
        (128, 32, 128),  # already a multiple: unchanged
        (523, 32, 544),  # the longest gold-mode row of the cpu profile
        (117, 1, 117),  # 1: no padding
    ],
)
def test_padded_length(tokens, multiple, padded):
    assert memory.padded_length(tokens, multiple) == padded


@pytest.mark.slow
def test_a_probe_phase_the_kernel_killed_ran_out_of_memory():
    import os

    # what the out-of-memory killer does to the phase's process: it dies without a word
    found = probe._in_fresh_process(os.abort)
    assert found["out_of_memory"] and found["killed"] and found["step_s"] is None
    assert "does not fit: SFT ran out of memory" in probe.verdict(
        {"capacity_gb": 8.0, "peak_memory_gb": found["peak_memory_gb"], "sft": found,
         "grpo": {"peak_memory_gb": 1.0, "out_of_memory": False}})


SMALL_CONFIG = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 128}
SMALL_LAYER = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128  # q, o; k, v (2 kv heads of 16); gate, up, down


@pytest.mark.parametrize(
    "config, params, kv",
    [
        (SMALL_CONFIG, 2 * SMALL_LAYER + 100 * 64, 32),  # tied by default: one vocab x hidden matrix
        ({**SMALL_CONFIG, "tie_word_embeddings": False}, 2 * SMALL_LAYER + 2 * 100 * 64, 32),  # untied: embedding and head
        ({**SMALL_CONFIG, "num_key_value_heads": None, "head_dim": None}, 2 * (2 * 64 * 64 + 2 * 64 * 64 + 3 * 64 * 128) + 100 * 64, 64),  # nulls: every head is a kv head of hidden / heads
    ],
)
def test_the_estimate_reads_a_local_config_through_the_one_model_shape(tmp_path, config, params, kv):
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape, source = memory.configured_model_shape(resolve_config(["--PROFILE=rtx4060", f"--MODEL_NAME={tmp_path}"]))
    assert source == str(tmp_path / "config.json")
    assert shape == {"params": params, "hidden": 64, "layers": 2, "vocab": 100, "kv": kv, "mlp": 128}


def test_a_config_without_the_numbers_falls_back_to_the_name():
    # not a config the shape can be read from: the estimate guesses from the name rather than failing
    cfg = resolve_config(["--PROFILE=rtx4060", "--MODEL_NAME=/nonexistent/some-3B-model"])
    assert memory.configured_model_shape(cfg)[1] == "guessed from the name (approximate)"
