"""SFT and GRPO scripts end to end on a tiny random Qwen2 model and real FinQA rows.

The model is conftest's session fixture ``tiny_qwen2_dir`` (random Qwen2, hidden 64, 2 layers,
4 heads, SmolLM2's tokenizer). It learns nothing in a few steps; these tests check the plumbing:
data checks before any model loads, completion-only labels, adapters and cards saved, finite
losses, rewards logged, and resumption after a kill.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from dataclasses import replace
from types import SimpleNamespace

import pytest

from finreason import configuration, models, storage, training, training_record
from finreason.configuration import ConfigError, resolve_config
from finreason.layout import Layout
from finreason.training_record import TrainingRecord
from helpers import load_script, run_script, tiny_overrides

SFT = load_script("04_train_sft.py")
GRPO = load_script("05_train_grpo.py")


def common_args(out: Path, model_dir: Path, *extra: str) -> list[str]:
    return [
        f"--OUTPUT_DIR={out}", f"--MODEL_NAME={model_dir}", "--PROFILE=cpu", "--DOWNLOAD_DATA=false",
        # a short prompt keeps each step to a few seconds on two cores
        "--PROMPT_TOKEN_BUDGET=64", "--FEW_SHOT_EXAMPLE=false", "--MAX_SEQ_LEN=768",
        "--SFT_BATCH_SIZE=2", "--SFT_GRAD_ACCUM=1", "--SAVE_STEPS=1", "--LORA_R=4", "--LORA_ALPHA=8",
        "--NUM_GENERATIONS=2", "--GRPO_BATCH_SIZE=2", "--GRPO_GRAD_ACCUM=1", "--GRPO_MAX_NEW_TOKENS=8",
        "--EVAL_BATCH_SIZE=2", "--MAX_NEW_TOKENS=8", "--EVAL_SPLIT=dev", "--EVAL_LIMIT=2",
        # the cpu profile trains every weight on gold facts; these tests pin LoRA on retrieved evidence
        "--FINETUNE=lora", "--EVIDENCE_MODE=retrieved", "--SFT_TARGET=reasoning",
        *extra,
    ]


@pytest.fixture(scope="module")
def formatted(tmp_path_factory, tiny_qwen2_dir) -> Path:
    """outputs/data/ written by the real 03_format_data.py on real (vendored) FinQA rows."""
    out = tmp_path_factory.mktemp("formatted")
    fmt = load_script("03_format_data.py")
    fmt.main(common_args(out, tiny_qwen2_dir, "--SFT_TRAIN_LIMIT=6", "--GRPO_TRAIN_LIMIT=4", "--no-progress"))
    assert (out / "data" / "sft_train.jsonl").is_file()
    return out


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, formatted, tiny_qwen2_dir):
    """A 2-step SFT run saving every step: (output dir, summary)."""
    out = tmp_path_factory.mktemp("sft")
    shutil.copytree(formatted / "data", out / "data")
    summary = SFT.main(common_args(out, tiny_qwen2_dir, "--SFT_MAX_STEPS=2", "--no-eval"))
    return out, summary


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- inputs refused before any model loads -----------------------------------------------------


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input check")

    monkeypatch.setattr(models, "load_model", refuse)
    monkeypatch.setattr(models, "load_tokenizer", refuse)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "03_format_data.py"),  # missing file names the script that writes it
        ("", "no training rows"),  # empty file
        ("\n\n", "no training rows"),  # blank lines only
        ('{"id": "a", "prompt": "p"\n', "not valid JSON"),  # torn / malformed line
        ('["a", "b"]\n', "not a JSON object"),  # wrong record type
        ('{"id": "a", "prompt": "p"}\n', "missing field 'completion'"),  # missing field
        ('{"id": "a", "prompt": "p", "completion": 3}\n', "should be str"),  # wrong field type
        ('{"id": "a", "prompt": "p", "completion": "  "}\n', "is empty"),  # empty target
        (b'{"id": "a", "prompt": "\xff\xfe", "completion": "x"}\n', "is not UTF-8"),  # bytes that are not text
        ("[" * 100_000 + "\n", "nested too deeply"),  # deep nesting: the JSON parser's recursion limit
    ],
)
def test_sft_refuses_bad_data_before_loading(tmp_path, no_model_load, capsys, content, message):
    if content is not None:
        (tmp_path / "data").mkdir()
        target = tmp_path / "data" / "sft_train.jsonl"
        target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(SystemExit) as exit_info:
        run_script("04_train_sft.py", [f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and message in err and "Traceback" not in err
    assert err.startswith("04_train_sft.py: error:")


@pytest.mark.parametrize(
    ("with_adapter", "content", "message"),
    [
        (False, None, "04_train_sft.py"),  # no SFT adapter: names the script that trains it
        (True, None, "03_format_data.py"),  # adapter present, prompts missing
        (True, "", "no training rows"),  # empty prompt file
        (True, '{"id": "a", "prompt": "p", "gold": 1.5, "table": []}\n', "should be str"),  # gold must be a string
        (True, '{"id": "a", "prompt": "p", "gold": "1.5"}\n', "missing field 'table'"),  # no table for the reward
    ],
)
def test_grpo_refuses_bad_inputs_before_loading(tmp_path, no_model_load, capsys, with_adapter, content, message):
    if with_adapter:
        (tmp_path / "sft" / "adapter").mkdir(parents=True)
        (tmp_path / "sft" / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    if content is not None:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "grpo_train.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        run_script("05_train_grpo.py", [f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu"])
    assert exit_info.value.code == 1 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "ok"),
    [
        (["--NUM_GENERATIONS=4", "--GRPO_BATCH_SIZE=4", "--GRPO_GRAD_ACCUM=1"], True),  # one group per step
        (["--NUM_GENERATIONS=4", "--GRPO_BATCH_SIZE=2", "--GRPO_GRAD_ACCUM=2"], True),  # group split over accumulation
        (["--NUM_GENERATIONS=4", "--GRPO_BATCH_SIZE=3", "--GRPO_GRAD_ACCUM=1"], False),  # partial group
        (["--NUM_GENERATIONS=1"], False),  # no group to compare within
    ],
)
def test_grpo_batch_geometry(overrides, ok):
    # checked with the other config ranges, before anything loads
    if ok:
        resolve_config(["--PROFILE=cpu", *overrides])
    else:
        with pytest.raises(ConfigError, match="NUM_GENERATIONS"):
            resolve_config(["--PROFILE=cpu", *overrides])


# --- helpers -----------------------------------------------------------------------------------


def test_last_checkpoint_ignores_incomplete_saves(tmp_path):
    assert training.last_checkpoint(tmp_path / "missing") is None
    for step, complete in ((2, True), (10, True), (12, False)):  # 12 was being written when killed
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}", encoding="utf-8")
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    assert training.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")


def test_step_log_keeps_the_newest_entry_per_step(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 2, "loss": 1.4}\n{"step": 3, "lo', encoding="utf-8")
    assert [(e["step"], e["loss"]) for e in training.read_step_log(path)] == [(1, 2.0), (2, 1.4)]


@pytest.mark.parametrize(
    ("precision", "peaks", "bf16"),
    [
        ("float32", {"float32": 1e11, "bfloat16": 4e11}, False),  # asked for: fp32 even where bf16 is faster
        ("bfloat16", {"float32": 1e11, "bfloat16": 0.5e11}, True),  # asked for: autocast even where it is slower
        ("auto", {"float32": 1e11, "bfloat16": 2.5e11}, True),  # native bf16 dot products (AVX512-BF16, AMX)
        ("auto", {"float32": 1e11, "bfloat16": 1.1e11}, False),  # within the margin: autocast's casts are not free
        ("auto", {"float32": 1e11, "bfloat16": 0.2e11}, False),  # emulated bf16
    ],
)
def test_hardware_arguments_on_cpu(monkeypatch, tmp_path, precision, peaks, bf16):
    from finreason import throughput

    monkeypatch.setattr(throughput, "measured_peak", lambda name, device="cpu": peaks[name])
    # an empty OUTPUT_DIR: no probe decision recorded, so auto falls back to the matmul peaks
    cfg = resolve_config(["--PROFILE=cpu", f"--CPU_PRECISION={precision}", f"--OUTPUT_DIR={tmp_path}"])
    hardware = training.hardware_arguments(cfg)
    assert hardware["use_cpu"] and hardware["bf16"] is bf16 and not hardware["fp16"]
    assert training.training_precision(cfg) == ("bfloat16" if bf16 else "float32")
    assert hardware["optim"] == "adamw_bnb_8bit"  # paging needs CUDA; 8-bit state is what keeps the CPU run small


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--SFT_TRL_ARGS=max_grad_norm=0.5, weight_decay=0.01"], {"sft": {"max_grad_norm": 0.5, "weight_decay": 0.01}}),
        (["--SFT_TRL_ARGS=lr_scheduler_type=constant"], {"sft": {"lr_scheduler_type": "constant"}}),  # replaces FinReason's cosine
        (["--SFT_TRL_ARGS=use_liger_kernel=true"], {"sft": {"use_liger_kernel": True}}),  # booleans as TRL's scripts read them
        (["--GRPO_TRL_ARGS=top_p=0.9,max_grad_norm=2"], {"grpo": {"top_p": 0.9, "max_grad_norm": 2.0}}),
        (["--GRPO_TRL_ARGS=top_p=0.9"], {"sft": {"top_p": None}}),  # each stage reads only its own options
        (["--SFT_PAD_TO_MULTIPLE=32"], {"sft": {"pad_to_multiple_of": 32}}),  # a few recurring lengths (cpu memory)
        (["--SFT_PAD_TO_MULTIPLE=1"], {"sft": {"pad_to_multiple_of": None}}),  # 1: to the batch's longest row, TRL's default
        (["--GRPO_PAD_TO_MULTIPLE=32"], {"grpo": {"pad_to_multiple_of": 32}}),  # a long CPU run's memory stays flat
        (["--GRPO_PAD_TO_MULTIPLE=1"], {"grpo": {"pad_to_multiple_of": None}}),  # 1: TRL's default, no padding
        (["--GRPO_PAD_TO_MULTIPLE=32", "--SFT_PAD_TO_MULTIPLE=1"], {"sft": {"pad_to_multiple_of": None}}),  # each stage pads by its own constant
    ],
)
def test_trl_args_reach_the_trainer_config(tmp_path, overrides, expected):
    cfg = resolve_config(["--PROFILE=cpu", "--CPU_PRECISION=float32", f"--OUTPUT_DIR={tmp_path}", *overrides])
    where = Layout.of(cfg)
    built = {"sft": training.sft_config(cfg, where), "grpo": training.grpo_config(cfg, where, use_vllm=False)}
    for stage, fields in expected.items():
        for name, value in fields.items():
            found = getattr(built[stage], name, None)
            assert (found.value if hasattr(found, "value") else found) == value, (stage, name)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--SFT_TRL_ARGS=max_grad_nrm=1", "no field 'max_grad_nrm'; did you mean max_grad_norm"),  # a typo, with the fix
        ("--SFT_TRL_ARGS=learning_rate=1e-3", "set by --SFT_LEARNING_RATE"),  # a constant covers it: one place to set it
        ("--GRPO_TRL_ARGS=temperature=0.5", "set by --GRPO_TEMPERATURE"),
        ("--SFT_TRL_ARGS=bf16=true", "set by --COMPUTE_DTYPE (GPU) or CPU_PRECISION"),  # precision is the probe's decision
        ("--SFT_TRL_ARGS=pad_to_multiple_of=8", "set by --SFT_PAD_TO_MULTIPLE"),  # the constant the probe projects memory with
        ("--GRPO_TRL_ARGS=pad_to_multiple_of=32", "set by --GRPO_PAD_TO_MULTIPLE"),  # one place to set it, in config.py
        ("--SFT_TRL_ARGS=max_grad_norm=big", "invalid float value: 'big'"),  # TRL's field type
        ("--SFT_TRL_ARGS=lr_scheduler_type=bogus", "invalid choice: 'bogus'"),  # TRL's choices
        ("--GRPO_TRL_ARGS=auto_find_batch_size=true", "GRPOConfig refuses it: auto_find_batch_size is not supported"),  # __post_init__
    ],
)
def test_bad_trl_args_stop_sft_before_the_model_loads(tmp_path, no_model_load, capsys, override, message):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sft_train.jsonl").write_text('{"id": "a", "prompt": "p", "completion": "c"}\n', encoding="utf-8")
    script = "05_train_grpo.py" if override.startswith("--GRPO") else "04_train_sft.py"
    if script == "05_train_grpo.py":
        (tmp_path / "sft" / "adapter").mkdir(parents=True)
        (tmp_path / "sft" / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
        (tmp_path / "data" / "grpo_train.jsonl").write_text('{"id": "a", "prompt": "p", "gold": "1", "table": []}\n', encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        run_script(script, [f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu", "--CPU_PRECISION=float32", override])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"{script}: error: --") and message in err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("precision", "bf16"),
    [
        ("float32", False),  # the run's decision is taken as given ...
        ("bfloat16", True),  # ... whatever CPU_PRECISION would decide again
    ],
)
def test_trainer_configs_take_the_runs_precision_without_deciding_again(tmp_path, monkeypatch, precision, bf16):
    def decide_again(cfg):
        raise AssertionError("the precision was decided a second time")

    monkeypatch.setattr(training, "precision_decision", decide_again)
    cfg = resolve_config(["--PROFILE=cpu", "--CPU_PRECISION=auto", f"--OUTPUT_DIR={tmp_path}"])
    where = Layout.of(cfg)
    assert training.sft_config(cfg, where, precision).bf16 is bf16
    assert training.grpo_config(cfg, where, False, precision).bf16 is bf16


@pytest.mark.slow
@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("q_proj,v_proj", ["q_proj", "v_proj"]),  # all present
        ("q_proj,c_attn,down_proj", ["q_proj", "down_proj"]),  # c_attn (GPT-2 naming) is absent: skipped
        (" q_proj , ,k_proj ", ["q_proj", "k_proj"]),  # whitespace and empty items tolerated
        ("c_attn,c_proj", None),  # none present: refused with the modules that exist
    ],
)
def test_target_modules_keep_the_present_ones(tiny_qwen2_dir, wanted, expected):
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_qwen2_dir))
    if expected is None:
        with pytest.raises(models.ModelError, match="none of LORA_TARGET_MODULES"):
            models.target_modules(skeleton, wanted)
    else:
        assert models.target_modules(skeleton, wanted) == expected


@pytest.mark.parametrize(
    "autocast",
    [
        False,  # float32 training
        True,  # bf16 autocast, the cpu profile's choice where the probe finds it faster
    ],
)
def test_the_lm_head_scores_only_labelled_positions_with_the_same_loss(monkeypatch, autocast):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl.kernels import chunked_logprob
    from trl.trainer import utils as trl_utils

    # TRL's switch as shipped (an earlier test's training may have replaced it in this process);
    # monkeypatch puts back whatever was there after the test
    monkeypatch.setattr(trl_utils, "_use_triton", chunked_logprob._use_triton)
    scored = []
    chunked = trl_utils._ChunkedLogProbFunction

    class CountingHead:
        @staticmethod
        def apply(hidden, *args):
            scored.append(hidden.shape[0])
            return chunked.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", CountingHead)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    input_ids = torch.randint(0, 300, (2, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0  # right padding, as SFT pads
    labels = input_ids.clone()
    labels[0, :8] = -100  # prompt of 8 tokens, completion of 4
    labels[1, :5] = -100  # prompt of 5, completion of 5, 2 padding
    labels[1, -2:] = -100

    def loss_and_gradients():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return out, {name: p.grad.clone() for name, p in model.named_parameters()}

    every, every_grads = loss_and_gradients()
    training.score_labelled_positions_only()
    switch = trl_utils._use_triton
    training.score_labelled_positions_only()
    assert trl_utils._use_triton is switch  # a second call leaves the switch as it is, not wrapped twice
    labelled, labelled_grads = loss_and_gradients()
    assert scored == [2 * 11, 4 + 5]  # every shifted position, then only those with a next-token label
    assert torch.allclose(every.loss, labelled.loss, atol=1e-6)
    assert torch.equal(every.is_top1, labelled.is_top1)
    assert torch.allclose(every.entropy, labelled.entropy, atol=1e-5)
    for name, grad in every_grads.items():
        assert torch.allclose(grad, labelled_grads[name], atol=1e-5), name


# --- SFT ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_loss_is_on_completion_tokens_only(formatted, tiny_qwen2_dir, tmp_path):
    cfg = resolve_config(common_args(tmp_path, tiny_qwen2_dir))
    rows = training.load_rows(formatted / "data" / "sft_train.jsonl", training.SFT_FIELDS)[:2]
    loaded = models.load_model(cfg.replace(LORA_TARGET_MODULES="q_proj,v_proj"), trainable=True)
    from datasets import Dataset
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=loaded.model, args=training.sft_config(cfg, Layout.of(cfg)), processing_class=loaded.tokenizer,
        train_dataset=Dataset.from_list([{"prompt": row["prompt"], "completion": row["completion"]} for row in rows]),
    )
    tokenizer = loaded.tokenizer
    for row, example in zip(rows, trainer.train_dataset):
        prompt_len = len(tokenizer(row["prompt"])["input_ids"])
        labels = example["labels"]
        assert all(label == -100 for label in labels[:prompt_len])
        assert all(label != -100 for label in labels[prompt_len:])
        # the supervised part decodes to the target plus the end-of-turn token
        assert tokenizer.decode(labels[prompt_len:]) == row["completion"] + tokenizer.eos_token


@pytest.mark.slow
def test_sft_trains_and_saves_an_adapter(sft_run):
    out, summary = sft_run
    adapter = out / "sft" / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "README.md", "training_summary.json"):
        assert (adapter / name).is_file(), name
    assert summary["global_step"] == 2 and summary["resumed_from"] is None
    assert math.isfinite(summary["final_loss"]) and math.isfinite(summary["first_loss"])
    assert summary["provenance"]["config"]["SFT_MAX_STEPS"] == 2
    card = (adapter / "README.md").read_text(encoding="utf-8")
    assert str(out / "data" / "sft_train.jsonl") in card and "final training loss" in card
    # retrieved-evidence weights name the retriever and k that chose their training facts
    assert summary["retriever"]["retriever"] == "learned" and summary["retriever"]["top_k"] == 3
    assert summary["provenance"]["retriever"]["key"] == summary["retriever"]["key"]
    assert "retrieved evidence (learned ranker, top 3)" in card
    assert sorted(p.name for p in (out / "sft" / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert any((out / "sft" / "runs").rglob("events.out.tfevents.*"))
    steps = [e["step"] for e in training.read_step_log(out / "sft" / "step_log.jsonl")]
    assert steps == [1, 2]


def kill_after_step_one(out: Path) -> Path:
    """A finished 2-step run as a kill during step 2 leaves it: checkpoint-1, no final weights, and
    a step-2 line in the step log (written before checkpoint-2 was)."""
    shutil.rmtree(out / "sft" / "checkpoints" / "checkpoint-2")
    shutil.rmtree(out / "sft" / "adapter")
    return out


@pytest.mark.slow
def test_sft_resumes_from_the_last_checkpoint(sft_run, tiny_qwen2_dir, tmp_path):
    # the same command after a kill during step 2 of 2 continues at checkpoint-1 instead of step 0
    out = kill_after_step_one(copy_run(sft_run[0], tmp_path / "run"))
    summary = SFT.main(common_args(out, tiny_qwen2_dir, "--SFT_MAX_STEPS=2", "--no-eval"))
    assert summary["resumed_from"].endswith("checkpoint-1")
    assert summary["global_step"] == 2
    log = training.read_step_log(out / "sft" / "step_log.jsonl")
    assert [e["step"] for e in log] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--SFT_LEARNING_RATE=1e-5", "--SEED=7"), ("SFT_LEARNING_RATE", "SEED")),  # the case 1
        (("--SFT_TRAIN_LIMIT=4",), ("SFT_TRAIN_LIMIT", "training data")),
        (("--LORA_R=8",), ("LORA_R",)),
    ],
)
def test_changed_settings_start_afresh_instead_of_relabelling(sft_run, tiny_qwen2_dir, tmp_path, caplog, extra, named):
    out = kill_after_step_one(copy_run(sft_run[0], tmp_path / "run"))
    old_sha = json.loads((sft_run[0] / "sft" / "adapter" / "training_summary.json").read_text(encoding="utf-8"))["weights_sha256"]
    summary = SFT.main(common_args(out, tiny_qwen2_dir, "--SFT_MAX_STEPS=2", "--no-eval", *extra))
    assert summary["resumed_from"] is None and summary["global_step"] == 2
    assert summary["weights_sha256"] != old_sha
    assert summary["weights_sha256"] == models.weights_fingerprint(out / "sft" / "adapter")
    warning = next(r.getMessage() for r in caplog.records if "starting afresh" in r.getMessage())
    assert all(name in warning for name in named), warning
    assert [e["step"] for e in training.read_step_log(out / "sft" / "step_log.jsonl")] == [1, 2]
    # the run the checkpoints now belong to is this one
    cfg = resolve_config(common_args(out, tiny_qwen2_dir, "--SFT_MAX_STEPS=2", *extra))
    recorded = json.loads((out / "sft" / "run.json").read_text(encoding="utf-8"))
    precision = {"precision": training.training_precision(cfg), "processes": 1}
    assert recorded["settings"] == {**configuration.training_settings(cfg, "sft"), **precision}


@pytest.mark.slow
@pytest.mark.parametrize("with_run_record", [True, False])
def test_an_old_step_log_never_leaks_into_a_new_run(sft_run, tiny_qwen2_dir, tmp_path, with_run_record):
    # the case 3: a step log but no checkpoints (another run's, or this run's before its first save)
    out = copy_run(sft_run[0], tmp_path / "run")
    shutil.rmtree(out / "sft" / "checkpoints")
    if not with_run_record:
        (out / "sft" / "run.json").unlink()
    storage.append_jsonl(out / "sft" / "step_log.jsonl", [{"step": 53, "loss": 0.6296}])
    summary = SFT.main(common_args(out, tiny_qwen2_dir, "--SFT_MAX_STEPS=2", "--no-eval"))
    log = training.read_step_log(out / "sft" / "step_log.jsonl")
    assert [e["step"] for e in log] == [1, 2]
    assert summary["final_loss"] == log[-1]["loss"] != 0.6296


@pytest.mark.slow
def test_a_save_that_fails_leaves_the_old_weights_whole(sft_run, tiny_qwen2_dir, tmp_path, monkeypatch, capsys):
    # the disk fills while the model card is written: one line, the old weights and their summary
    # stay together, and no staging folder is left
    out = kill_after_step_one(copy_run(sft_run[0], tmp_path / "run"))
    shutil.copytree(sft_run[0] / "sft" / "adapter", out / "sft" / "adapter")

    def disk_full(*args, **kwargs):
        raise RuntimeError("safetensors_rust.SafetensorError: Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(training, "model_card", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        run_script("04_train_sft.py", common_args(out, tiny_qwen2_dir, "--SFT_MAX_STEPS=2", "--no-eval", "--SEED=9"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert "04_train_sft.py: error: no space left on device" in err
    saved = json.loads((out / "sft" / "adapter" / "training_summary.json").read_text(encoding="utf-8"))
    assert saved["weights_sha256"] == models.weights_fingerprint(out / "sft" / "adapter") == sft_run[1]["weights_sha256"]
    assert sorted(p.name for p in (out / "sft").iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_sft_in_4bit_with_dev_evaluation(formatted, tiny_qwen2_dir, tmp_path):
    # QLoRA path: NF4 base through bitsandbytes on CPU, then the shared evaluator on 2 dev examples
    shutil.copytree(formatted / "data", tmp_path / "data")
    summary = SFT.main(common_args(tmp_path, tiny_qwen2_dir, "--LOAD_IN_4BIT=true", "--SFT_MAX_STEPS=1"))
    assert summary["global_step"] == 1 and math.isfinite(summary["final_loss"])
    assert summary["model_info"]["quantization"] == "nf4"
    # the closing evaluation is the one 06_evaluate.py --stage sft runs: EVAL_SPLIT, EVAL_LIMIT
    assert summary["evaluation"]["n"] == 2 and summary["evaluation"]["stage"] == "sft"
    assert (tmp_path / "eval" / "sft.jsonl").is_file()
    saved = json.loads((tmp_path / "sft" / "adapter" / "training_summary.json").read_text(encoding="utf-8"))
    assert saved["evaluation"]["n"] == 2 and "Evaluation:" in (tmp_path / "sft" / "adapter" / "README.md").read_text()
    config = json.loads((tmp_path / "sft" / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["r"] == 4


# --- GRPO --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_grpo_one_step_from_the_sft_adapter(sft_run, tiny_qwen2_dir, tmp_path):
    out = copy_run(sft_run[0], tmp_path / "run")
    summary = GRPO.main(common_args(out, tiny_qwen2_dir, "--GRPO_MAX_STEPS=1", "--DIFFICULTY_MAX_CANDIDATES=2"))
    assert summary["global_step"] == 1
    assert summary["sft_weights_sha256"] == models.weights_fingerprint(out / "sft" / "adapter")
    adapter = out / "grpo" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "README.md").is_file()
    # rewards and the zero-variance share are logged per step
    step = training.read_step_log(out / "grpo" / "step_log.jsonl")[0]
    for key in ("reward", "frac_reward_zero_std", "correctness_zero_variance_share", "correctness_mixed_group_share",
                "rewards/correctness_reward/mean", "rewards/format_reward/mean"):
        assert math.isfinite(step[key]), key
    assert 0.0 <= summary["steps"][-1]["correctness_mixed_group_share"] <= 1.0
    # the questions the update sampled, as the reward saw their id column: the benchmark splits the fixed set by them
    train_ids = {row["id"] for row in storage.read_jsonl(out / "data" / "grpo_train.jsonl")}
    assert step["sampled_question_ids"] and set(step["sampled_question_ids"]) <= train_ids
    # a random model never solves FinQA: the filter keeps nothing and falls back to all candidates
    report = json.loads((out / "grpo" / "difficulty_filter.json").read_text(encoding="utf-8"))
    assert report["candidates"] == 2 and report["kept"] == 0 and "unfiltered" in report["decision"]
    assert summary["train_rows"] == 4


def broken_scorer(*args, **kwargs):
    raise ZeroDivisionError("a bug in the scorer")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("max_share", "stops"),
    [
        ("0.05", True),  # every reward raises: the run stops with one line saying so
        ("1", False),  # 1 = never stop: the run finishes, and its step log and summary count the errors
    ],
)
def test_grpo_run_says_when_the_scorer_raises(sft_run, tiny_qwen2_dir, tmp_path, monkeypatch, capsys, max_share, stops):
    from finreason import scoring

    out = copy_run(sft_run[0], tmp_path / "run")
    monkeypatch.setattr(scoring, "score_completion", broken_scorer)
    monkeypatch.setattr(scoring, "has_parseable_answer", broken_scorer)
    argv = common_args(out, tiny_qwen2_dir, "--GRPO_MAX_STEPS=1", "--DIFFICULTY_FILTER=false", f"--REWARD_MAX_ERROR_SHARE={max_share}")
    if stops:
        with pytest.raises(SystemExit) as exit_info:
            run_script("05_train_grpo.py", argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 1
        assert "05_train_grpo.py: error: 2 of 2 reward evaluations raised" in err and "ZeroDivisionError: a bug in the scorer" in err
        assert err.count("Traceback") == 1  # the first error's, shown once
        assert not (out / "grpo" / "adapter").exists()
    else:
        summary = GRPO.main(argv)
        step = training.read_step_log(out / "grpo" / "step_log.jsonl")[0]
        assert step["rewards/correctness_reward/errors"] == 2 and step["rewards/format_reward/errors"] == 2
        assert summary["steps"][0]["reward_errors"] == 4
        assert summary["reward_errors"]["raised"] == summary["reward_errors"]["evaluated"] == 4
        assert "| reward evaluations that raised | 4 of 4 |" in (out / "grpo" / "adapter" / "README.md").read_text(encoding="utf-8")


# --- every weight (FINETUNE=full) on gold facts: the cpu profile's path ----------------------------


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_qwen2_dir):
    """03 -> 04 with every weight trained, on gold evidence and program targets: (output dir, summary)."""
    out = tmp_path_factory.mktemp("full")
    args = common_args(out, tiny_qwen2_dir, "--FINETUNE=full", "--EVIDENCE_MODE=gold", "--SFT_TARGET=program",
                       "--SFT_TRAIN_LIMIT=4", "--GRPO_TRAIN_LIMIT=2", "--SFT_MAX_STEPS=1")
    load_script("03_format_data.py").main([*args, "--no-progress"])
    return out, SFT.main(args), args


@pytest.mark.slow
def test_full_fine_tune_saves_a_model_folder(full_run):
    out, summary, _ = full_run
    folder = out / "sft" / "model"
    assert summary["weights_kind"] == "model" and summary["weights"] == str(folder)
    assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    assert not (out / "sft" / "adapter").exists()
    assert summary["evidence_mode"] == "gold" and summary["evaluation"]["evidence_mode"] == "gold"
    assert "GOLD facts only" in (folder / "README.md").read_text(encoding="utf-8")
    assert Layout(out).weights("sft") == folder
    rows = training.load_rows(out / "data" / "sft_train.jsonl", training.SFT_FIELDS)
    assert all(row["completion"].startswith("Program: ") for row in rows)  # program targets


@pytest.mark.slow
def test_grpo_continues_a_full_model(full_run, tmp_path):
    out, _, args = full_run
    run = copy_run(out, tmp_path / "run")
    args = [arg.replace(str(out), str(run)) for arg in args]
    summary = GRPO.main([*args, "--GRPO_MAX_STEPS=1", "--DIFFICULTY_MAX_CANDIDATES=2"])
    assert summary["weights_kind"] == "model" and (run / "grpo" / "model" / "config.json").is_file()
    assert summary["sft_weights_sha256"] == models.weights_fingerprint(run / "sft" / "model")


@pytest.mark.slow
def test_retraining_with_lora_archives_the_full_model_and_marks_grpo_stale(full_run, tiny_qwen2_dir, tmp_path, caplog):
    out, _, args = full_run
    run = copy_run(out, tmp_path / "run")
    args = [arg.replace(str(out), str(run)) for arg in args]
    GRPO.main([*args, "--GRPO_MAX_STEPS=1", "--DIFFICULTY_MAX_CANDIDATES=2"])
    assert training.stale_weights(Layout(run)) == {}
    full_sha = models.weights_fingerprint(run / "sft" / "model")
    SFT.main([*args, "--FINETUNE=lora", "--no-eval"])
    # the full model is moved aside, not deleted, and the log names where
    assert (run / "sft" / "adapter" / "adapter_config.json").is_file() and not (run / "sft" / "model").exists()
    archived = list((run / "sft" / "archive").glob("model-*"))
    assert len(archived) == 1 and models.weights_fingerprint(archived[0]) == full_sha
    assert str(archived[0]) in caplog.text
    # GRPO was trained from the replaced weights: stale, and the report says so
    assert "05_train_grpo.py" in training.stale_weights(Layout(run))["grpo"]
    numbers = load_script("07_analyze.py").main([*args])
    assert "grpo" in numbers["stale_weights"]
    assert "**Stale weights: GRPO was trained from SFT weights" in (run / "report.md").read_text(encoding="utf-8")


def test_correct_counts_resume_exactly_as_an_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch):
    """Sampling is seeded by each batch's position in the fixed set, so a killed and resumed run
    counts what an uninterrupted one counts (a stand-in sampler makes the outcome depend on the seed)."""
    from finreason import difficulty, generation, storage

    rows = [{"id": f"q{i}", "prompt": f"prompt {i}", "gold": str(float(i)), "table": []} for i in range(5)]
    gold_of = {row["prompt"]: row["gold"] for row in rows}
    calls = []

    def fake_sample(loaded, prompts, num_samples, max_new_tokens, temperature, batch_size, seed, progress=True, label=""):
        calls.append((tuple(prompts), seed))
        return [[f"Answer: {gold_of[p]}" if (seed + i + j) % 3 == 0 else "Answer: -1" for j in range(num_samples)]
                for i, p in enumerate(prompts)]

    monkeypatch.setattr(generation, "sample", fake_sample)
    cfg = tiny_cfg.replace(NUM_GENERATIONS=2, EVAL_BATCH_SIZE=2)
    straight = difficulty.correct_counts(None, rows, cfg, "w", tmp_path / "straight.jsonl", progress=False)
    assert len(set(straight.values())) > 1  # the stand-in makes counts differ, so a wrong seed would show
    killed = tmp_path / "killed.jsonl"
    difficulty.correct_counts(None, rows[:2], cfg, "w", killed, progress=False)  # killed after its first batch
    calls.clear()
    assert difficulty.correct_counts(None, rows, cfg, "w", killed, progress=False) == straight
    assert [seed for _, seed in calls] == [cfg.SEED + 2, cfg.SEED + 4]  # only the unfinished batches, same seeds
    assert sorted(r["id"] for r in storage.read_jsonl(killed)) == [row["id"] for row in rows]  # nothing twice


# --- the record beside the weights (training_summary.json) ---------------------------------------

COMMON_KEYS = ["stage", "weights", "weights_kind", "weights_sha256", "base_model", "evidence_mode", "retriever"]
SFT_RECORD = TrainingRecord(
    stage="sft", weights="out/sft/model", weights_kind="model", weights_sha256="s" * 64, base_model="base",
    evidence_mode="gold", retriever=None, train_data="out/data/sft_train.jsonl", train_rows=6, skipped_too_long=["a"],
    global_step=2, resumed_from=None, first_loss=None, final_loss=1.5, train_runtime_s=3.0, trainable_parameters=10,
    precision="float32", model_info={"loader": "plain"}, provenance={"config": {"SEED": 42}},
)
GRPO_RECORD = TrainingRecord(
    stage="grpo", weights="out/grpo/adapter", weights_kind="adapter", weights_sha256="g" * 64, base_model="base",
    evidence_mode="retrieved", retriever={"retriever": "learned", "top_k": 3}, sft_weights="out/sft/adapter",
    sft_weights_sha256="s" * 64, train_data="out/data/grpo_train.jsonl", candidates=4, train_rows=2,
    difficulty_filter={"decision": "filtered"}, global_step=1, resumed_from="ckpt", train_runtime_s=None, use_vllm=False,
    precision="bfloat16", steps=[{"step": 1, "mean_reward": 0.5}], mixed_group_share=None,
    reward_errors={"raised": 0, "evaluated": 4, "first": None}, provenance={},
)


@pytest.mark.parametrize(
    ("record", "keys"),
    [
        # 04's file: its own keys (nulls included), no GRPO ones, no evaluation before one ran
        (SFT_RECORD, [*COMMON_KEYS, "train_data", "train_rows", "skipped_too_long", "global_step", "resumed_from",
                      "first_loss", "final_loss", "train_runtime_s", "trainable_parameters", "precision", "model_info", "provenance"]),
        # 04's file after its closing evaluation
        (replace(SFT_RECORD, evaluation={"n": 2}), [*COMMON_KEYS, "train_data", "train_rows", "skipped_too_long", "global_step",
                                                    "resumed_from", "first_loss", "final_loss", "train_runtime_s",
                                                    "trainable_parameters", "precision", "model_info", "provenance", "evaluation"]),
        # 05's file, in the order 05 always wrote it
        (GRPO_RECORD, [*COMMON_KEYS, "sft_weights", "sft_weights_sha256", "train_data", "candidates", "train_rows",
                       "difficulty_filter", "global_step", "resumed_from", "train_runtime_s", "use_vllm", "precision",
                       "steps", "mixed_group_share", "reward_errors", "provenance"]),
        # 08's merged folder: where it came from, and a key this version does not know, kept
        (replace(GRPO_RECORD, exported_from={"stage": "grpo"}, extra={"added_later": [1]}),
         [*COMMON_KEYS, "sft_weights", "sft_weights_sha256", "train_data", "candidates", "train_rows", "difficulty_filter",
          "global_step", "resumed_from", "train_runtime_s", "use_vllm", "precision", "steps", "mixed_group_share",
          "reward_errors", "exported_from", "provenance", "added_later"]),
    ],
)
def test_training_record_round_trips_with_the_keys_each_writer_wrote(tmp_path, record, keys):
    record.write(tmp_path)
    on_disk = json.loads((tmp_path / training_record.TRAINING_SUMMARY).read_text(encoding="utf-8"))
    assert list(on_disk) == keys
    assert TrainingRecord.read(tmp_path) == record


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, TrainingRecord()),  # no file: an empty record, every field None
        ("{not json", TrainingRecord()),  # torn or hand-damaged: unknown, not a crash
        ("[1, 2]", TrainingRecord()),  # JSON, but not an object
        ('{"base_model": "base"}', TrainingRecord(base_model="base")),  # an old file with few keys: the rest read as None
        ('{"sft_weights_sha256": "aa"}', TrainingRecord(sft_weights_sha256="aa")),  # a stage's key without the stage
        ('{"global_step": "2", "evidence_mode": ["gold"], "retriever": "bm25"}', TrainingRecord()),  # wrong types read as None
        ('{"use_vllm": 1, "global_step": true}', TrainingRecord()),  # a number is not a boolean, nor a boolean a count
        ('{"final_loss": 2, "first_loss": 2.5}', TrainingRecord(final_loss=2, first_loss=2.5)),  # an integer is a fine float
        ('{"stage": "sft", "renamed_later": {"x": 1}}', TrainingRecord(stage="sft", extra={"renamed_later": {"x": 1}})),  # unknown key kept
    ],
)
def test_training_record_reads_old_and_damaged_files(tmp_path, text, expected):
    if text is not None:
        (tmp_path / training_record.TRAINING_SUMMARY).write_text(text, encoding="utf-8")
    assert TrainingRecord.read(tmp_path) == expected


def test_adding_the_evaluation_rewrites_the_record_and_the_card(tmp_path):
    record = replace(SFT_RECORD, weights=str(tmp_path))
    record.write(tmp_path)
    (tmp_path / "README.md").write_text("# card\n", encoding="utf-8")
    evaluated = {"stage": "sft", "split": "dev", "n": 2, "execution_accuracy": 0.5, "evidence_mode": "gold", "not_recorded": 1}
    updated = training.add_evaluation(record, evaluated)
    assert TrainingRecord.read(tmp_path) == updated == replace(record, evaluation=training.evaluation_brief(evaluated))
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert card.startswith("# card\n\n**Evaluation:** 50.0% strict on 2 dev examples, GOLD facts only") and card.endswith(".\n")


# --- resume only the same run; what a killed save leaves is cleaned up (no model needed) ----------


def identity(**settings):
    return {"stage": "sft", "settings": {"SEED": 42, "SFT_LEARNING_RATE": 2e-4, **settings},
            "train_data_sha256": "d" * 64, "start_weights_sha256": "w" * 64}


def stage_with_checkpoints(out: Path, recorded: dict | None) -> Layout:
    where = Layout(out)
    for step in (1, 2, 3):
        checkpoint = where.checkpoints("sft") / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        if step < 3:  # checkpoint-3 was cut short by a kill: no trainer_state.json
            (checkpoint / "trainer_state.json").write_text("{}")
    storage.append_jsonl(where.step_log("sft"), [{"step": step, "loss": 1.0 / step} for step in (1, 2, 3)])
    if recorded is not None:
        storage.atomic_write_json(where.run_record("sft"), recorded)
    return where


@pytest.mark.parametrize(
    ("recorded", "fresh", "resumed", "named"),
    [
        (identity(), False, "checkpoint-2", None),  # the same run: resume, step log cut back to step 2
        (identity(), True, None, "--fresh"),
        (identity(SEED=7), False, None, "SEED 7 -> 42"),
        ({**identity(), "start_weights_sha256": "x" * 64}, False, None, "starting weights"),
        ({**identity(), "train_data_sha256": "x" * 64}, False, None, "training data"),
        (None, False, None, "no record of the run"),  # checkpoints from before run.json existed
    ],
)
def test_prepare_run_resumes_only_the_same_run(tmp_path, caplog, recorded, fresh, resumed, named):
    where = stage_with_checkpoints(tmp_path, recorded)
    resume = training.prepare_run(where, "sft", identity(), fresh)
    steps = [entry["step"] for entry in training.read_step_log(where.step_log("sft"))]
    if resumed:
        assert resume == str(where.checkpoints("sft") / resumed) and steps == [1, 2]
        assert not (where.checkpoints("sft") / "checkpoint-3").exists()
    else:
        assert resume is None and steps == [] and not where.checkpoints("sft").exists()
        assert named in caplog.text and "starting afresh" in caplog.text
    assert json.loads(where.run_record("sft").read_text()) == identity()


@pytest.mark.parametrize(
    ("earlier", "later", "named"),
    [
        (("float32", 1), ("float32", 1), None),  # the same run
        (("float32", 1), ("bfloat16", 1), "precision 'float32' -> 'bfloat16'"),  # auto resolved otherwise on another CPU
        (("float32", 2), ("float32", 1), "processes 2 -> 1"),  # the effective batch changed
    ],
)
def test_run_identity_records_precision_and_processes(tiny_cfg, monkeypatch, earlier, later, named):
    def identity_of(precision, processes):
        monkeypatch.setattr(training, "process_state", lambda: SimpleNamespace(num_processes=processes))
        return json.loads(json.dumps(training.run_identity(tiny_cfg, "sft", [{"id": "a"}], "w" * 64, precision)))

    changes = training.identity_changes(identity_of(*earlier), identity_of(*later))
    assert changes == ([named] if named else [])


@pytest.mark.parametrize("new_arrived", [True, False])
def test_prepare_run_cleans_up_after_a_killed_save(tmp_path, new_arrived):
    where = Layout(tmp_path)
    staging = where.saving("sft")
    staging.mkdir(parents=True)
    (staging / "adapter_model.safetensors").write_bytes(b"half")
    old = storage.replaced_path(where.weights_dir("sft", "adapter"))
    old.mkdir()
    (old / "adapter_config.json").write_text('{"old": true}')
    if new_arrived:  # killed after the second rename: the new weights are in place
        where.weights_dir("sft", "adapter").mkdir()
        (where.weights_dir("sft", "adapter") / "adapter_config.json").write_text('{"new": true}')
    training.prepare_run(where, "sft", identity(), fresh=False)
    assert not staging.exists() and not old.exists()
    kept = json.loads((where.weights_dir("sft", "adapter") / "adapter_config.json").read_text())
    assert kept == ({"new": True} if new_arrived else {"old": True})


@pytest.mark.parametrize(
    ("grpo_started_from", "sft_sha", "stale"),
    [
        ("a" * 64, "a" * 64, False),
        ("a" * 64, "b" * 64, True),
        ("a" * 64, None, True),  # the SFT weights are gone
    ],
)
def test_stale_weights(tmp_path, grpo_started_from, sft_sha, stale):
    where = Layout(tmp_path)
    grpo = where.weights_dir("grpo", "adapter")
    grpo.mkdir(parents=True)
    (grpo / "adapter_config.json").write_text("{}")
    storage.atomic_write_json(grpo / training_record.TRAINING_SUMMARY, {"sft_weights_sha256": grpo_started_from})
    if sft_sha:
        sft = where.weights_dir("sft", "model")
        sft.mkdir(parents=True)
        (sft / "config.json").write_text("{}")
        storage.atomic_write_json(sft / training_record.TRAINING_SUMMARY, {"weights_sha256": sft_sha})
    assert ("grpo" in training.stale_weights(where)) is stale


@pytest.mark.parametrize(
    "multiple",
    [
        16,  # every batch a multiple of 16: a handful of shapes recur whatever the rows' lengths
        1,  # TRL's default: each batch exactly as long as its longest row
    ],
)
def test_sft_batches_are_padded_to_the_multiple(tiny_qwen2_dir, tmp_path, multiple):
    from datasets import Dataset
    from trl import SFTTrainer

    from finreason import memory

    cfg = resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path / "out", "--SFT_BATCH_SIZE=1", f"--SFT_PAD_TO_MULTIPLE={multiple}"))
    tokenizer = models.load_tokenizer(cfg)
    tokenizer.padding_side = "right"
    rows = [{"prompt": "What is 2 + 2? " * repeat, "completion": "Answer: 4"} for repeat in (1, 3, 7, 12)]
    trainer = SFTTrainer(model=models.load_model(cfg, trainable=True).model, processing_class=tokenizer,
                         args=training.sft_config(cfg, Layout.of(cfg), max_steps=1), train_dataset=Dataset.from_list(rows))
    found = sorted(batch["input_ids"].shape[1] for batch in trainer.get_train_dataloader())
    real = sorted(len(row["input_ids"]) for row in trainer.train_dataset)
    assert len(set(real)) == 4  # four different lengths go in
    assert found == [memory.padded_length(n, multiple) for n in real]
    assert all(n % multiple == 0 for n in found)
