"""How much of the machine's arithmetic a training step uses: tokens per second and MFU.

MFU (model FLOPs utilisation) as nanochat computes it: the model FLOPs a step needs divided by
its seconds, over this machine's peak. The peak is measured, not looked up: ``matmul_peak``
times square matrix products in one precision on the training device for a fraction of a second
(the best rate over a few sizes), which is what a datasheet peak would promise for this exact
machine, its threads and its BLAS.

Model FLOPs per token (nanochat's ``estimate_flops``): 6 per matmul weight (2 forward, 4
backward) plus the attention scores, 12 * layers * hidden * sequence length. The matmul weights
are every projection of every layer and the output head (counted even when tied to the
embedding, since its product is paid either way); the embedding lookup costs nothing. GRPO also
samples its completions: each of its tokens is counted once more forward (2 per weight).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

# float32 and bfloat16 are what a CPU can train in (the cpu profile's CPU_PRECISION); the
# probe names them the way COMPUTE_DTYPE does
PRECISIONS = ("float32", "bfloat16")
# bf16 autocast has to beat fp32 by this factor on the probe to be chosen: it converts every
# weight at every step, which the bare matmul rate does not see
AUTO_BF16_MARGIN = 1.2


def matmul_peak(precision: str, device: str = "cpu", seconds: float = 0.4) -> float:
    """The best FLOP/s of ``precision`` square matmuls on ``device`` over a few sizes."""
    import torch

    dtype = getattr(torch, precision)
    sizes = (1024, 2048) if device == "cpu" else (4096, 8192)
    best = 0.0
    for size in sizes:
        left = torch.randn(size, size, device=device).to(dtype)
        right = torch.randn(size, size, device=device).to(dtype)
        left @ right  # the first product pays for thread start-up and kernel selection
        reps, started = 0, time.perf_counter()
        while True:
            left @ right
            reps += 1
            if device != "cpu":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            if elapsed >= seconds / len(sizes):
                break
        best = max(best, 2 * size**3 * reps / elapsed)
    return best


@functools.lru_cache(maxsize=None)
def measured_peak(precision: str, device: str = "cpu") -> float | None:
    """``matmul_peak``, measured once per process for each precision and device; None where the
    device has no matmul kernel for the precision (bf16 on an older GPU)."""
    try:
        return matmul_peak(precision, device)
    except (RuntimeError, NotImplementedError):
        return None


def measured_peaks(device: str = "cpu") -> dict[str, float | None]:
    """{precision: FLOP/s or None} for float32 and bfloat16 on ``device``."""
    return {precision: measured_peak(precision, device) for precision in PRECISIONS}


def choose_cpu_precision(setting: str, peaks: dict[str, float] | None = None) -> str:
    """CPU_PRECISION resolved: ``auto`` is bfloat16 where its measured peak beats float32's by
    AUTO_BF16_MARGIN (a CPU with native bf16 dot products), else float32."""
    if setting != "auto":
        return setting
    peaks = peaks if peaks is not None else measured_peaks("cpu")
    if not peaks["bfloat16"] or not peaks["float32"]:
        return "float32"
    return "bfloat16" if peaks["bfloat16"] >= AUTO_BF16_MARGIN * peaks["float32"] else "float32"


def model_shape(model: Any) -> dict[str, int]:
    """A model's architecture numbers from its config: a loaded model's, a transformers config or a
    config.json's dict. ``matmul_params`` (the weights every token is multiplied by, the output
    head included) and ``layers`` x ``attention_width`` are what ``step_flops`` counts; the
    memory estimate reads the rest."""
    config = getattr(model, "config", model)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    # a missing required number raises (KeyError or AttributeError); a missing optional one is None
    if isinstance(config, Mapping):
        required, optional = config.__getitem__, config.get
    else:
        required, optional = functools.partial(getattr, config), lambda name: getattr(config, name, None)
    hidden, layers, vocab = required("hidden_size"), required("num_hidden_layers"), required("vocab_size")
    heads = required("num_attention_heads")
    head_dim = optional("head_dim") or hidden // heads
    kv = optional("num_key_value_heads") or heads
    mlp = optional("intermediate_size") or 4 * hidden
    # q and o: hidden x heads*head_dim; k and v: hidden x kv*head_dim; gate, up, down: hidden x mlp
    per_layer = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim + 3 * hidden * mlp
    return {"matmul_params": layers * per_layer + hidden * vocab, "layers": layers, "attention_width": heads * head_dim,
            "hidden": hidden, "vocab": vocab, "kv_width": kv * head_dim, "mlp": mlp}


def step_flops(shape: dict[str, int], trained_tokens: float, sequences: int, sampled_tokens: float = 0.0) -> float:
    """Model FLOPs of one optimizer step: ``trained_tokens`` forward and backward over
    ``sequences`` sequences (attention at their mean length), ``sampled_tokens`` forward only."""
    mean_length = trained_tokens / max(sequences, 1)
    per_trained = 6 * shape["matmul_params"] + 12 * shape["layers"] * shape["attention_width"] * mean_length
    per_sampled = 2 * shape["matmul_params"] + 4 * shape["layers"] * shape["attention_width"] * mean_length
    return per_trained * trained_tokens + per_sampled * sampled_tokens
