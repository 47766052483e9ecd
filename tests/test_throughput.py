"""Throughput in the step log: model FLOPs per token, the measured matmul peak, tokens/s and MFU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from finreason import memory, throughput, training


def test_matmul_weights_are_the_models_linear_layers(tiny_loaded):
    """The config-derived count equals the weights of every nn.Linear the forward multiplies by,
    the output head included (tied or not)."""
    import torch

    model = tiny_loaded.model
    linear = sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))
    assert throughput.model_shape(model)["matmul_params"] == linear


@pytest.mark.parametrize(
    "source",
    [
        "model",  # a loaded model: its config is read (the step log)
        "config",  # its transformers config itself
        "config_json",  # the config.json dict the memory estimate reads
    ],
)
def test_model_shape_reads_a_model_its_config_or_its_config_json_alike(tiny_loaded, source):
    model = tiny_loaded.model
    given = {"model": model, "config": model.config, "config_json": model.config.to_dict()}[source]
    assert throughput.model_shape(given) == throughput.model_shape(model)


def test_a_config_json_without_a_required_number_is_refused():
    with pytest.raises(KeyError):
        throughput.model_shape({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4})  # no vocab_size


@pytest.mark.parametrize(
    ("trained", "sequences", "sampled", "flops"),
    [
        (10, 2, 0, (6 * 100 + 12 * 2 * 8 * 5) * 10),  # SFT: forward + backward, attention at the mean length 5
        (10, 1, 0, (6 * 100 + 12 * 2 * 8 * 10) * 10),  # one sequence of 10: longer attention
        (10, 2, 10, (6 * 100 + 12 * 2 * 8 * 5) * 10 + (2 * 100 + 4 * 2 * 8 * 5) * 10),  # GRPO: sampling is one more forward
    ],
)
def test_step_flops(trained, sequences, sampled, flops):
    shape = {"matmul_params": 100, "layers": 2, "attention_width": 8}
    assert throughput.step_flops(shape, trained, sequences, sampled) == flops


@pytest.mark.parametrize("precision", throughput.PRECISIONS)
def test_matmul_peak_is_measured(precision):
    peak = throughput.matmul_peak(precision, seconds=0.05)
    assert 1e8 < peak < 1e15  # a real rate: above 0.1 GFLOP/s, below any machine's


@pytest.mark.parametrize(
    ("args", "sampled", "logs", "expected"),
    [
        # SFT: two steps of 3 s; TRL's num_tokens is cumulative, so the second step is 900 - 600
        ({"bf16": False}, False, [600, 900], [(600, 200.0), (300, 100.0)]),
        # bf16 autocast: the bf16 peak is the denominator
        ({"bf16": True}, False, [600], [(600, 200.0)]),
        # GRPO: sampled tokens count one more forward
        ({"bf16": False}, True, [600], [(600, 200.0)]),
        # GRPO with num_iterations = 2: the update that reuses samples logs no num_tokens, only its time
        ({"bf16": False}, True, [600, None, 900], [(600, 200.0), None, (300, 100.0)]),
    ],
)
def test_step_log_records_throughput(tmp_path, monkeypatch, tiny_loaded, args, sampled, logs, expected):
    peaks = {"float32": 1e11, "bfloat16": 3e11}
    monkeypatch.setattr(throughput, "measured_peak", lambda precision, device="cpu": peaks[precision])
    clock = iter(float(t) for t in range(0, 100, 3))
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    callback = training.step_log_callback(tmp_path / "log.jsonl", ("loss",), sampled=sampled)
    train_args = SimpleNamespace(fp16=False, device=SimpleNamespace(type="cpu"), per_device_train_batch_size=1,
                                 gradient_accumulation_steps=2, world_size=1, **args)
    state = SimpleNamespace(num_input_tokens_seen=0, is_world_process_zero=True, global_step=0)
    callback.on_train_begin(train_args, state, None, model=tiny_loaded.model)
    for tokens_seen in logs:
        callback.on_step_begin(train_args, state, None)
        callback.on_step_end(train_args, state, None)
        state.global_step += 1
        callback.on_log(train_args, state, None, logs={"loss": 1.0, **({"num_tokens": float(tokens_seen)} if tokens_seen else {})})
    entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    shape = throughput.model_shape(tiny_loaded.model)
    precision = "bfloat16" if args["bf16"] else "float32"
    for entry, measured in zip(entries, expected, strict=True):
        if measured is None:
            assert entry["step_seconds"] == 3.0 and "tokens" not in entry and "mfu" not in entry
            continue
        tokens, per_second = measured
        assert (entry["tokens"], entry["tokens_per_second"], entry["step_seconds"]) == (tokens, per_second, 3.0)
        flops = throughput.step_flops(shape, tokens, 2, tokens if sampled else 0)
        assert entry["mfu"] == pytest.approx(flops / 3.0 / peaks[precision], abs=1e-4)
        assert entry["precision"] == precision
        # the memory held after the step: growth from step to step shows in the log
        assert entry["memory_gb"] == pytest.approx(memory.resident_gb(), rel=0.5)


@pytest.mark.parametrize(
    ("noted", "logged"),
    [
        ([["q1"], ["q2", "q3"]], [["q1"], ["q2", "q3"]]),  # each step lists the questions it sampled
        ([["q1"], []], [["q1"], []]),  # a step that reused earlier samples (TRL's num_iterations) sampled none
        (None, None),  # SFT: no recorder, no key
    ],
)
def test_step_log_records_the_questions_each_step_sampled(tmp_path, tiny_loaded, noted, logged):
    batches = iter(noted or [])
    callback = training.step_log_callback(tmp_path / "log.jsonl", ("loss",), sampled=True,
                                          question_ids=(lambda: next(batches)) if noted is not None else None)
    train_args = SimpleNamespace(bf16=False, fp16=False, device=SimpleNamespace(type="cpu"), per_device_train_batch_size=1,
                                 gradient_accumulation_steps=1, world_size=1)
    state = SimpleNamespace(num_input_tokens_seen=0, is_world_process_zero=True, global_step=0)
    callback.on_train_begin(train_args, state, None, model=None)
    for _ in range(len(noted or [[], []])):
        state.global_step += 1
        callback.on_log(train_args, state, None, logs={"loss": 1.0})
    entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [entry.get("sampled_question_ids") for entry in entries] == (logged or [None, None])
