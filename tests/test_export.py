"""08_export.py and finreason.export: merge -> GGUF -> load back, and GGUF files refused when damaged.

The round trip runs llama.cpp's own converter (downloaded once from PyPI's llama-cpp-python sdist
and cached, as the export does) through 08_export.py on a tiny random model (SmolLM2's Llama
architecture and tokenizer at the random Qwen2's tiny shapes) with a LoRA adapter whose B
matrices are random, so merging changes every adapted weight; the verification and the llama.cpp
runtime legs run when llama-cpp-python is installed (requirements-export.txt) and skip, saying so,
when not.

Tolerances, on the logits of a real FinReason prompt, against the float32 source (base + LoRA):
the merged float16 folder and the F16 GGUF hold the source rounded to float16, so they must stay
within 2e-3; Q8_0 rounds each block of 32 weights to 8 bits, so within 2e-2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finreason import export, gguf_files, llama_cpp_source, models, prompts, training_record
from finreason.configuration import resolve_config
from helpers import PROJECT_ROOT, run_script, tiny_overrides

TOLERANCE = {"merged": 2e-3, export.F16: 2e-3, export.Q8_0: 2e-2}


def write_small_gguf(path: Path) -> Path:
    """A small, sound GGUF (an architecture, a chat template, two tensors) written with gguf-py."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_chat_template("{{ messages }}")
    writer.add_tensor("token_embd.weight", np.arange(64 * 32, dtype=np.float32).reshape(64, 32))
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _cut(fraction: float):
    def damage(data: bytes) -> bytes:
        return data[: int(len(data) * fraction)]
    return damage


def _set_bytes(offset: int, value: bytes):
    def damage(data: bytes) -> bytes:
        return data[:offset] + value + data[offset + len(value):]
    return damage


@pytest.mark.parametrize(
    "damage, message",
    [
        (_cut(0.5), "truncated"),  # a copy cut short in the tensor data
        (_cut(0.9999), "truncated"),  # one missing byte at the end
        (_cut(0.02), "damaged or truncated"),  # cut inside the header
        (_set_bytes(0, b"GGML"), "is not a GGUF file"),  # another format
        (_set_bytes(4, b"\xff\xff\xff\x7f"), "damaged or truncated"),  # an impossible version
        (lambda data: b"", "is not a GGUF file"),  # an empty file
    ],
)
def test_damaged_gguf_is_refused_in_one_line(tmp_path, damage, message):
    sound = write_small_gguf(tmp_path / "sound.gguf")
    facts = gguf_files.check_gguf(sound)
    assert facts["architecture"] == "llama" and facts["tensors"] == 2 and facts["chat_template"] == "{{ messages }}"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(sound.read_bytes()))
    with pytest.raises(gguf_files.GGUFFileError) as error:
        gguf_files.check_gguf(bad)
    assert message in str(error.value) and str(bad) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_damaged_gguf_as_model_name_is_one_line_and_exit_1(tmp_path):
    # a subprocess, as a user runs it: stderr holds only what the script printed
    bad = tmp_path / "model.gguf"
    bad.write_bytes(write_small_gguf(tmp_path / "sound.gguf").read_bytes()[:-100])
    command = [sys.executable, str(PROJECT_ROOT / "06_evaluate.py"), "--stage", "zero_shot", f"--MODEL_NAME={bad}",
               f"--OUTPUT_DIR={tmp_path / 'out'}", "--PROFILE=cpu", "--DOWNLOAD_DATA=false", "--limit", "1", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1 and "truncated" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [line for line in done.stderr.strip().splitlines() if line.startswith("06_evaluate.py: error:")]
    assert not (tmp_path / "out" / "models").exists()  # refused before any conversion


@pytest.mark.parametrize(
    "template_source, chatml",
    [("smollm2", True), ("other", False)],
)
def test_modelfile_carries_the_template_system_prompt_and_greedy_decoding(smollm2_tokenizer, template_source, chatml):
    import copy

    tokenizer = copy.copy(smollm2_tokenizer)
    if template_source == "other":
        tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    system = prompts.system_prompt(few_shot=False, instructions="brief")
    assert export.renders_chatml(tokenizer, system) is chatml
    text = export.modelfile_text(export.Q8_0, system, chatml, 64, 1024)
    assert f"FROM ./{export.Q8_0}" in text and f'SYSTEM """{system}"""' in text
    assert "PARAMETER temperature 0" in text and "PARAMETER top_k 1" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert ("TEMPLATE" in text) is chatml
    with pytest.raises(export.ExportError):
        export.modelfile_text(export.Q8_0, 'say """ here', chatml, 64, 1024)


def _fake_stage(root: Path, stage: str, weights_bytes: bytes, accuracy: float | None, made_with_these: bool = True) -> None:
    """A trained stage's model folder and, when ``accuracy`` is given, its evaluation summary."""
    from finreason.layout import Layout

    where = Layout(root)
    folder = where.weights_dir(stage, "model")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights_bytes)
    if accuracy is not None:
        sha = models.weights_fingerprint(folder) if made_with_these else "0" * 64
        where.eval_dir.mkdir(exist_ok=True)
        where.eval_summary(stage).write_text(json.dumps({"execution_accuracy": accuracy, "provenance": {"weights_sha256": sha}}))


@pytest.mark.parametrize(
    "stages, chosen",
    [
        ({"sft": 0.12, "grpo": 0.13}, "grpo"),  # the better one
        ({"sft": 0.20, "grpo": 0.13}, "sft"),  # GRPO made it worse: export SFT
        ({"sft": 0.13, "grpo": 0.13}, "grpo"),  # a tie: the later stage
        ({"sft": None, "grpo": None}, "grpo"),  # nothing evaluated: the latest trained
        ({"sft": 0.10}, "sft"),  # only SFT trained
        ({"sft": 0.10, "grpo": "stale"}, "sft"),  # GRPO's evaluation was made with other weights
    ],
)
def test_the_best_trained_stage_is_exported(tmp_path, stages, chosen):
    for stage, accuracy in stages.items():
        stale = accuracy == "stale"
        _fake_stage(tmp_path, stage, stage.encode(), 0.9 if stale else accuracy, made_with_these=not stale)
    cfg = resolve_config(["--PROFILE=cpu", f"--OUTPUT_DIR={tmp_path}"])
    stage, folder = export.choose_weights(cfg)
    assert stage == chosen and folder == tmp_path / chosen / "model"


def test_no_trained_weights_is_a_clear_error(tmp_path):
    cfg = resolve_config(["--PROFILE=cpu", f"--OUTPUT_DIR={tmp_path}"])
    with pytest.raises(export.ExportError, match="run 04_train_sft.py first"):
        export.choose_weights(cfg)
    with pytest.raises(export.ExportError, match="not a LoRA adapter folder"):
        export.choose_weights(cfg, weights=tmp_path)


# --- the round trip (llama.cpp's converter: a subprocess per file, ~7 s each) ---------------------


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A tiny random LlamaForCausalLM (SmolLM2's architecture: hidden 64, 2 layers, the random
    Qwen2's shapes) with SmolLM2's tokenizer, saved like random_models does. llama.cpp's converter
    recognises a BPE tokenizer per architecture: it takes this one under Llama (as for the real
    SmolLM2) but refuses it under Qwen2, and Qwen2.5's 151k-token vocabulary makes transformers'
    GGUF loader ~3x slower."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finreason import random_models

    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    shape = {key: value for key, value in random_models.SHAPES["tiny"].items() if key != "max_position_embeddings"}
    tokenizer = smollm2_tokenizer
    config = LlamaConfig(**shape, vocab_size=len(tokenizer), tie_word_embeddings=True, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def converter():
    try:
        return llama_cpp_source.converter_dir()
    except llama_cpp_source.ConverterError as error:
        pytest.skip(f"llama.cpp's converter cannot be had here: {error}")


def random_adapter(model_dir: Path, adapter_dir: Path) -> Path:
    """A LoRA adapter on q/v with random (not zero) B matrices, so merging changes the weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(adapter_dir)
    return adapter_dir


def prompt_ids(tokenizer, dev_example) -> list[int]:
    cfg = resolve_config(["--PROFILE=cpu", "--EVIDENCE_MODE=gold", "--DOWNLOAD_DATA=false"])
    return tokenizer(prompts.prompt_from_cfg(dev_example, tokenizer, cfg), add_special_tokens=False)["input_ids"][:96]


def torch_logits(model, ids):
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def llama_cpp_logits(path: Path, ids):
    import numpy as np

    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -r requirements-export.txt)")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids) + 8, logits_all=True, n_threads=2, verbose=False)
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return scores


@pytest.mark.slow
def test_lora_through_08_export_keeps_the_logits_and_06_reads_the_artefacts(tiny_llama_dir, tmp_path, converter, dev_examples, capsys):
    """The tiny random model with a tiny LoRA through 08_export.py (merge -> F16 and Q8_0 GGUF ->
    the verification when llama.cpp is installed), then every artefact's logits against the
    source's, then 06_evaluate.py on the merged folder and on a GGUF."""
    import torch

    out = tmp_path / "out"
    overrides = tiny_overrides(tiny_llama_dir, out, "--EVIDENCE_MODE=gold")
    cfg = resolve_config(overrides)
    adapter = random_adapter(tiny_llama_dir, tmp_path / "adapter")
    source = export.load_source(cfg, adapter)
    ids = prompt_ids(source.tokenizer, dev_examples[0])
    expected = torch_logits(source.model, ids)
    base = models.load_model(cfg.replace(FINETUNE="full"))
    assert (torch_logits(base.model, ids) - expected).abs().max() > 50 * TOLERANCE["merged"]  # the adapter matters

    verify = "2" if llama_cpp_source.llama_cpp_available() else "0"  # the verification needs llama.cpp's runtime
    with pytest.raises(SystemExit) as exit_info:
        run_script("08_export.py", ["--weights", str(adapter), "--verify", verify, "--quiet",
                                    "--converter-cache", str(Path(converter).parent), *overrides])
    exported = out / "export"
    result = json.loads((exported / export.EXPORT_JSON).read_text())
    assert result["source"]["weights_kind"] == "adapter" and all(facts["chat_template_kept"] for facts in result["gguf"].values())
    assert f'SYSTEM """{result["system_prompt"]}"""' in (exported / export.MODELFILE).read_text()
    assert "identical" in capsys.readouterr().out or verify == "0"
    if result["verification"]:
        rows = {(row["artefact"], row["runtime"]): row for row in result["verification"]["artefacts"]}
        assert set(rows) == {("merged", "transformers"), (export.F16, "llama.cpp"), (export.F16, "transformers-gguf"),
                             (export.Q8_0, "llama.cpp"), (export.Q8_0, "transformers-gguf")}
        assert all(row["n"] == 2 and row["bytes"] > 0 and row["tokens_per_s"] is not None for row in rows.values())
        assert exit_info.value.code == (0 if result["verification"]["all_targets_met"] else 1)
    else:
        assert exit_info.value.code == 0

    merged_dir = exported / export.MERGED
    assert json.loads((merged_dir / "config.json").read_text())["dtype"] == "float16"
    assert (merged_dir / export.SYSTEM_PROMPT_FILE).read_text().strip() == result["system_prompt"]
    merged = models.load_model(cfg, weights=merged_dir)  # the loader reads it as a trained model folder
    assert merged.info["weights_kind"] == "model"
    assert (torch_logits(merged.model, ids) - expected).abs().max() <= TOLERANCE["merged"]
    for name, outtype in export.OUTTYPES.items():
        facts = gguf_files.check_gguf(exported / name)
        assert facts["architecture"] == "llama" and ("Q8_0" in facts["tensor_types"]) is (outtype == "q8_0")
        via_transformers = export.load_gguf_transformers(exported / name, source.tokenizer)
        assert (torch_logits(via_transformers.model, ids) - expected).abs().max() <= TOLERANCE[name], name

    # what 06 and the loader take: the merged folder as --weights, a GGUF as --weights
    for weights in (merged_dir, exported / export.Q8_0):
        summary = run_script("06_evaluate.py", ["--stage", "sft", "--weights", str(weights), "--limit", "1", "--split", "dev", *overrides])
        assert summary["n"] == 1

    for name in export.OUTTYPES:
        difference = (torch.from_numpy(llama_cpp_logits(exported / name, ids)) - expected).abs().max()
        assert difference <= TOLERANCE[name], (name, float(difference))


# --- a killed or failed export leaves the previous one whole ---------------------------------------

FAKE_CONVERTER = '''\
"""Stands in for llama.cpp's convert_hf_to_gguf.py: a small sound GGUF, or exit 1 when told."""
import os
import sys

import numpy as np
from gguf import GGUFWriter

if os.environ.get("FAKE_CONVERTER_FAILS"):
    sys.exit("fake converter: told to fail")
writer = GGUFWriter(sys.argv[sys.argv.index("--outfile") + 1], "llama")
writer.add_tensor("token_embd.weight", np.ones((8, 4), dtype=np.float32))
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
'''


@pytest.fixture
def fake_converter(tmp_path) -> Path:
    folder = tmp_path / "converter"
    folder.mkdir()
    (folder / "convert_hf_to_gguf.py").write_text(FAKE_CONVERTER)
    (folder / llama_cpp_source.CONVERTER_MARKER).write_text("{}\n")
    return folder


@pytest.mark.slow
def test_a_failed_export_leaves_the_previous_export_whole(tiny_llama_dir, tmp_path, fake_converter, monkeypatch):
    out = tmp_path / "out"
    cfg = resolve_config(tiny_overrides(tiny_llama_dir, out, "--EVIDENCE_MODE=gold"))
    adapter = random_adapter(tiny_llama_dir, tmp_path / "adapter")
    plan = export.ExportPlan(cfg=cfg, stage="sft", weights=adapter, out=out / "export", verify=0, converter_cache=str(fake_converter))
    monkeypatch.setattr(llama_cpp_source, "converter_dir", lambda cache: Path(cache))
    export.run_export(plan, progress=False)
    first = {path.relative_to(plan.out): path.read_bytes() for path in plan.out.rglob("*") if path.is_file()}
    recorded = json.loads((plan.out / export.MERGED / training_record.TRAINING_SUMMARY).read_text())
    assert recorded["weights"] == str(plan.out / export.MERGED)  # the final path, not the staging folder's
    assert json.loads((plan.out / export.EXPORT_JSON).read_text())["modelfile"]["path"] == str(plan.out / export.MODELFILE)

    monkeypatch.setenv("FAKE_CONVERTER_FAILS", "1")
    with pytest.raises(export.ExportError, match="told to fail"):
        export.run_export(dataclasses.replace(plan, stage="grpo"), progress=False)
    after = {path.relative_to(plan.out): path.read_bytes() for path in plan.out.rglob("*") if path.is_file()}
    assert after == first  # merged/ still says sft, like export.json and the GGUFs
    assert [path.name for path in out.iterdir() if path.name.startswith(".export")] == []  # no staging left


@pytest.mark.parametrize(
    "leftover",
    [
        ".export.k3j9x_a",  # the staging folder of an export killed mid-way
        "export/.model-f16.gguf.partial",  # a GGUF being converted when an older version was killed
        "export/.model-q8_0.gguf.partial",  # the same for Q8_0
    ],
)
def test_what_a_killed_export_left_is_removed_at_the_next_start(tmp_path, leftover):
    out = tmp_path / "export"
    (out / export.MERGED).mkdir(parents=True)
    (out / export.EXPORT_JSON).write_text("{}")
    path = tmp_path / leftover
    if leftover.startswith(".export."):
        path.mkdir()
        (path / export.F16).write_bytes(b"half")
    else:
        path.write_bytes(b"half")
    assert export.clean_leftovers(out) == [path]
    assert not path.exists() and (out / export.EXPORT_JSON).exists() and (out / export.MERGED).is_dir()  # the export itself stays


def test_a_previous_export_is_restored_when_a_kill_fell_between_the_renames(tmp_path):
    out = tmp_path / "export"
    replaced = tmp_path / ".export.replaced"
    replaced.mkdir()
    (replaced / export.EXPORT_JSON).write_text("{}")
    export.clean_leftovers(out)
    assert (out / export.EXPORT_JSON).exists() and not replaced.exists()


# --- llama.cpp's converter from the sdist ---------------------------------------------------------


def _sdist(path: Path, members: dict[str, str]) -> Path:
    """A llama-cpp-python-like source archive holding ``members`` (name -> text)."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return path


VENDOR = "llama_cpp_python-0.3.36/vendor/llama.cpp/"


@pytest.mark.parametrize(
    "members, kept, error",
    [
        ({VENDOR + "convert_hf_to_gguf.py": "#", VENDOR + "gguf-py/gguf/__init__.py": "", VENDOR + "ggml/src/ggml.c": "",
          "llama_cpp_python-0.3.36/setup.py": ""},
         {"convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"}, None),  # only the converter's parts, not llama.cpp's C sources
        ({VENDOR + "README.md": ""}, None, "has no vendor/llama.cpp/convert_hf_to_gguf.py"),  # an sdist without the converter
        ({VENDOR + "convert_hf_to_gguf.py": "#", "other-1.0/setup.py": ""}, None, "is not a llama-cpp-python source archive"),  # two roots
    ],
)
def test_only_the_converter_is_extracted_from_the_sdist(tmp_path, members, kept, error):
    archive = _sdist(tmp_path / "llama_cpp_python-0.3.36.tar.gz", members)
    target = tmp_path / "cache" / "0.3.36"
    if error:
        with pytest.raises(llama_cpp_source.ConverterError, match=error):
            llama_cpp_source.extract_converter(archive, target)
        assert not target.exists()  # nothing half-extracted where converter_dir would take it
        return
    llama_cpp_source.extract_converter(archive, target)
    assert {str(path.relative_to(target)) for path in target.rglob("*") if path.is_file()} == kept | {llama_cpp_source.CONVERTER_MARKER}
    assert llama_cpp_source.converter_dir(tmp_path / "cache") == target  # cached: no download
    record = llama_cpp_source.converter_record(target)
    assert record["archive"] == archive.name and record["source"].startswith(f"llama-cpp-python=={llama_cpp_source.LLAMA_CPP_PYTHON} sdist")
