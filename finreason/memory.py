"""Will a run fit? An instant estimate, and the memory measures the probe and the trainers read.

``estimate_gb`` is a documented formula (below), instant and rough; ``finreason.probe`` measures
a few real steps instead. ``PeakMemory`` (one phase's peak: CUDA's reserved bytes, else the
process's peak resident memory) and ``resident_gb`` (what the process holds now, logged after
every training step) are the measures both use; ``OOM_ORDER`` is the README's "Out of memory"
table, the order in which to lower constants.

Formula (GPU profiles; an upper bound, in bytes; float32 doubles the activation, logit and KV terms):
    weights  = 4-bit: (P - E) * 0.5625 + E * 2 (NF4 + double-quant scales; embeddings 16-bit),
               else P * bytes(COMPUTE_DTYPE)
    trained  = FINETUNE=lora: LoRA params * 10 (fp32 weight + grad + two 8-bit Adam moments);
               FINETUNE=full: P * 6 (fp32 grad + two 8-bit Adam moments besides the weights)
    act(b,s) = L*b*s*h*2 + b*s*h*34 with GRADIENT_CHECKPOINTING (layer inputs kept, one layer
               recomputed), else L*b*s*h*34 (Korthikanti et al. 2022, flash/SDPA attention)
    logits   = b * s_logits * V * 6 (16-bit logits + fp32 copy for the loss)
    sft      = act(SFT_BATCH_SIZE, MAX_SEQ_LEN) + logits over MAX_SEQ_LEN
    grpo     = act(GRPO_BATCH_SIZE, s_prompt + GRPO_MAX_NEW_TOKENS) + logits over the completion
               + KV cache for NUM_GENERATIONS sampled sequences, s_prompt = PROMPT_TOKEN_BUDGET + 300
    peak     = weights + trained + max(sft, grpo) + 0.6 GB (CUDA context, allocator slack)
P (parameters), E (embedding = V*h), L, h, V, kv width and MLP width come from the model's
config.json when it is available locally, else from a built-in table of the profile models.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import resource
import sys
from pathlib import Path
from typing import Any

from finreason import throughput

_LOG = logging.getLogger(__name__)

GIB = 1024**3
CUDA_OVERHEAD_GB = 0.6
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Architecture of the profile models (from their config.json) for machines without the weights yet.
KNOWN_MODELS = {
    "Qwen/Qwen2.5-1.5B-Instruct": dict(params=1.54e9, hidden=1536, layers=28, vocab=151936, kv=256, mlp=8960),
    "Qwen/Qwen2.5-3B-Instruct": dict(params=3.09e9, hidden=2048, layers=36, vocab=151936, kv=256, mlp=11008),
    SMOLLM2_ID: dict(params=1.35e8, hidden=576, layers=30, vocab=49152, kv=192, mlp=1536),
}
PROFILE_CARD_GB = {"rtx4060": 8.0, "t4": 16.0, "a100": 40.0}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# What to lower first when a run does not fit, in this order (the README's "Out of memory" table),
# with the training phase each one shrinks.
OOM_ORDER = (
    ("NUM_GENERATIONS", "grpo"),
    ("GRPO_MAX_NEW_TOKENS", "grpo"),
    ("MAX_SEQ_LEN", "sft"),
    ("SFT_BATCH_SIZE", "sft"),
    ("EVAL_BATCH_SIZE", "eval"),
    ("PROMPT_TOKEN_BUDGET", "all"),
)
FITS_SHARE = 0.95  # above this share of the memory a run is too close to the edge


# --- the formula --------------------------------------------------------------------------------

def configured_model_shape(cfg: Any) -> tuple[dict[str, float], str]:
    """Architecture numbers of the model ``cfg`` names, for the estimate: from a local config.json
    (``throughput.model_shape``) when there is one, else the table, else a guess from the name."""
    name = cfg.MODEL_NAME
    candidates = [Path(name).expanduser(), Path(cfg.OUTPUT_DIR) / "models" / Path(name).name]
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    candidates += sorted((hf_home / f"models--{name.replace('/', '--')}" / "snapshots").glob("*"))
    for folder in candidates:
        config_path = folder / "config.json" if folder.is_dir() else None
        if config_path is None or not config_path.is_file():
            continue
        try:
            conf = json.loads(config_path.read_text(encoding="utf-8"))
            shape = throughput.model_shape(conf)
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            break
        hidden, vocab = shape["hidden"], shape["vocab"]
        # the output head is among the matmul weights; an untied embedding is a second vocab x hidden
        params = shape["matmul_params"] + (0 if conf.get("tie_word_embeddings", True) else vocab * hidden)
        return dict(params=params, hidden=hidden, layers=shape["layers"], vocab=vocab, kv=shape["kv_width"], mlp=shape["mlp"]), str(config_path)
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name], "built-in table"
    match = re.search(r"(\d+(?:\.\d+)?)\s*([BM])\b", name, re.IGNORECASE)
    params = float(match.group(1)) * (1e9 if match.group(2).upper() == "B" else 1e6) if match else 1.5e9
    base = KNOWN_MODELS["Qwen/Qwen2.5-1.5B-Instruct"]
    scale = math.sqrt(params / base["params"])
    guess = dict(params=params, hidden=base["hidden"] * scale, layers=base["layers"], vocab=base["vocab"], kv=base["kv"], mlp=base["mlp"] * scale)
    return guess, "guessed from the name (approximate)"


def estimate_gb(cfg: Any, shape: dict[str, float]) -> dict[str, float]:
    """The module docstring's formula, term by term, in GiB."""
    h, layers, vocab, kv, mlp = shape["hidden"], shape["layers"], shape["vocab"], shape["kv"], shape["mlp"]
    embedding = vocab * h
    if cfg.LOAD_IN_4BIT:
        weights = (shape["params"] - embedding) * 0.5625 + embedding * 2
    else:
        weights = shape["params"] * DTYPE_BYTES[cfg.COMPUTE_DTYPE]
    if cfg.FINETUNE == "full":
        trained = shape["params"] * 6
    else:
        widths = {"q_proj": h + h, "k_proj": h + kv, "v_proj": h + kv, "o_proj": h + h,
                  "gate_proj": h + mlp, "up_proj": h + mlp, "down_proj": mlp + h}
        targets = [t.strip() for t in cfg.LORA_TARGET_MODULES.split(",") if t.strip()]
        trained = layers * cfg.LORA_R * sum(widths.get(t, 2 * h) for t in targets) * 10

    # the byte counts below are for 16-bit compute; float32 (the cpu profile) doubles them
    width = DTYPE_BYTES[cfg.COMPUTE_DTYPE] / 2

    def activations(batch: int, seq: int) -> float:
        if cfg.GRADIENT_CHECKPOINTING:
            return (layers * batch * seq * h * 2 + batch * seq * h * 34) * width
        return layers * batch * seq * h * 34 * width

    sft = activations(cfg.SFT_BATCH_SIZE, cfg.MAX_SEQ_LEN) + cfg.SFT_BATCH_SIZE * cfg.MAX_SEQ_LEN * vocab * 6 * width
    grpo_seq = cfg.PROMPT_TOKEN_BUDGET + 300 + cfg.GRPO_MAX_NEW_TOKENS
    kv_cache = 2 * layers * kv * grpo_seq * cfg.NUM_GENERATIONS * 2
    grpo = activations(cfg.GRPO_BATCH_SIZE, grpo_seq) + (cfg.GRPO_BATCH_SIZE * cfg.GRPO_MAX_NEW_TOKENS * vocab * 6 + kv_cache) * width
    terms = {"weights": weights, "trained_and_optimizer": trained, "sft_activations": sft, "grpo_activations": grpo}
    gb = {key: value / GIB for key, value in terms.items()}
    gb["overhead"] = CUDA_OVERHEAD_GB
    gb["peak"] = gb["weights"] + gb["trained_and_optimizer"] + max(gb["sft_activations"], gb["grpo_activations"]) + CUDA_OVERHEAD_GB
    return {key: round(value, 2) for key, value in gb.items()}


def first_to_lower(phase: str) -> str:
    """The first constant of OOM_ORDER that shrinks ``phase`` ("sft", "grpo" or "eval")."""
    return next(name for name, shrinks in OOM_ORDER if shrinks in (phase, "all"))


def advice(gb: dict[str, float]) -> str:
    """Which constant to lower, from the largest term of the estimate."""
    if gb["grpo_activations"] >= gb["sft_activations"] and gb["grpo_activations"] > gb["weights"]:
        return f"lower {first_to_lower('grpo')}, then GRPO_MAX_NEW_TOKENS"
    if gb["sft_activations"] > gb["weights"]:
        return f"lower {first_to_lower('sft')} or SFT_BATCH_SIZE (raise SFT_GRAD_ACCUM to keep the effective batch)"
    return "set LOAD_IN_4BIT=true or pick a smaller MODEL_NAME"


# --- measuring ----------------------------------------------------------------------------------

class PeakMemory:
    """Peak memory of one phase: CUDA's reserved bytes, else the process's resident set.

    On Linux the resident high-water mark is reset per phase (/proc/self/clear_refs); where it
    cannot be, the peak is the process's since it started (never lower than the truth)."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()

    def reset(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
        except OSError:
            pass

    def peak_gb(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.max_memory_reserved() / GIB
        return process_peak_rss_gb()


def process_peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM, which clear_refs resets; else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    except (OSError, ValueError, IndexError):
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / GIB


def resident_gb() -> float | None:
    """Memory held now: CUDA's reserved bytes, else this process's resident set (None where
    neither can be read). The step log records it, so growth from step to step shows."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.memory_reserved() / GIB
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / GIB


def capacity_gb(cfg: Any, cap_gb: float | None = None) -> tuple[float, str]:
    """(memory the run has, what it is): the cap, the GPU's memory, or the machine's RAM."""
    import torch

    if cap_gb:
        return cap_gb, f"a cap of {cap_gb:g} GiB"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / GIB, f"{props.name}"
    return system_ram_gb(), "system RAM"


def system_ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return 0.0


def sft_total_steps(cfg: Any, rows: int) -> int:
    """Optimizer steps 04 will run on ``rows`` training rows."""
    if cfg.SFT_MAX_STEPS > 0:
        return cfg.SFT_MAX_STEPS
    import torch

    gpus = max(1, torch.cuda.device_count())
    return math.ceil(math.ceil(rows / (cfg.SFT_BATCH_SIZE * gpus)) / cfg.SFT_GRAD_ACCUM * cfg.SFT_EPOCHS)


def padded_length(tokens: int, multiple: int) -> int:
    """The length TRL's collator pads a batch whose longest row has ``tokens`` tokens to."""
    return -(-tokens // multiple) * multiple
