"""Will a run fit, and how long will it take? An instant estimate and a measured probe.

``estimate_gb`` is a documented formula (below), instant and rough. ``probe`` measures: it loads
the configured model exactly as 04/05 do (4-bit or not, LoRA or every weight, gradient
checkpointing as configured), runs a few real SFT optimizer steps on the longest training
sequences and one real GRPO step whose completions all run to GRPO_MAX_NEW_TOKENS (the worst
case), and reports the peak memory of each phase (CUDA: ``max_memory_reserved``; CPU: the
process's peak resident memory), the seconds per step, the projected time of the configured
training, and a verdict: fits, or the first constant to lower from ``OOM_ORDER`` (the README's
"Out of memory" table). It writes nothing under the training folders: its trainers work in a
temporary folder that is removed afterwards.

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
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

def model_shape(cfg: Any) -> tuple[dict[str, float], str]:
    """Architecture numbers for the estimate: a local config.json when there is one, else the table."""
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
            hidden, layers, vocab = conf["hidden_size"], conf["num_hidden_layers"], conf["vocab_size"]
            heads = conf.get("num_attention_heads", 1)
            kv = conf.get("num_key_value_heads", heads) * conf.get("head_dim", hidden // heads)
            mlp = conf.get("intermediate_size", 4 * hidden)
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            break
        per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * mlp
        params = layers * per_layer + vocab * hidden * (1 if conf.get("tie_word_embeddings", True) else 2)
        return dict(params=params, hidden=hidden, layers=layers, vocab=vocab, kv=kv, mlp=mlp), str(config_path)
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


def _longest_rows(cfg: Any, tokenizer: Any, scan: int = 256) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(SFT rows, GRPO rows) built as 03 builds them from the first ``scan`` training examples,
    longest prompt first; and how many rows 04 would train on."""
    from finreason import data, trainset

    bundle = data.load_from_config(cfg, splits=("train",), verbose=False)
    train = data.first(bundle["train"], cfg.SFT_TRAIN_LIMIT)
    scanned = data.first(train, scan)
    sft = trainset.sft_rows(scanned, tokenizer, cfg, "probe rows")
    lengths = [len(ids) for ids in tokenizer([r["prompt"] + r["completion"] for r in sft], add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(sft)), key=lambda i: -lengths[i])
    sft = [sft[i] for i in order if lengths[i] + 1 <= cfg.MAX_SEQ_LEN] or [sft[order[-1]]]
    grpo = trainset.grpo_rows([scanned[i] for i in order], tokenizer, cfg)
    return sft, grpo, len(train)


def _step_timer() -> tuple[Any, list[float]]:
    from transformers import TrainerCallback

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback API
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback API
            times.append(time.perf_counter() - self.started)

    return StepTimer(), times


def _steady(times: list[float]) -> float | None:
    """Seconds per step without the first (allocator and kernel warm-up)."""
    later = times[1:] or times
    return sum(later) / len(later) if later else None


def _phase(name: str, peak: PeakMemory, run: Callable[[], list[float]]) -> dict[str, Any]:
    """Run one phase; its peak memory, step seconds, and whether it ran out of memory."""
    import torch

    peak.reset()
    try:
        times = run()
    except torch.OutOfMemoryError as error:
        _LOG.warning("%s ran out of memory: %s", name, str(error).splitlines()[0])
        return {"peak_memory_gb": round(peak.peak_gb(), 3), "step_s": None, "out_of_memory": True}
    return {"peak_memory_gb": round(peak.peak_gb(), 3), "step_s": _steady(times), "out_of_memory": False, "steps": len(times)}


def probe(cfg: Any, sft_steps: int = 3, cap_gb: float | None = None) -> dict[str, Any]:
    """Measure a few real SFT steps and one worst-case GRPO step (see the module docstring)."""
    import gc

    import torch
    from datasets import Dataset
    from trl import GRPOTrainer, SFTTrainer

    from finreason import models, rewards, training
    from finreason.layout import Layout

    started = time.time()
    if cap_gb and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb / total))
    capacity, what = capacity_gb(cfg, cap_gb)
    peak = PeakMemory()
    tokenizer = models.load_tokenizer(cfg)
    sft_rows, grpo_rows, train_rows = _longest_rows(cfg, tokenizer)
    scratch = Path(tempfile.mkdtemp(prefix="finreason-probe-"))
    result: dict[str, Any] = {"capacity_gb": round(capacity, 2), "capacity": what, "sft_steps_measured": sft_steps}
    try:
        where = Layout(scratch)
        peak.reset()
        loaded = models.load_model(cfg, trainable=True)
        result["model_peak_memory_gb"] = round(peak.peak_gb(), 3)
        per_step = cfg.SFT_BATCH_SIZE * cfg.SFT_GRAD_ACCUM
        longest = [sft_rows[i % len(sft_rows)] for i in range(per_step * sft_steps)]
        tokenizer.padding_side = "right"

        def run_sft() -> list[float]:
            timer, times = _step_timer()
            trainer = SFTTrainer(
                model=loaded.model, processing_class=tokenizer,
                args=training.sft_config(cfg, where, max_steps=sft_steps, save_strategy="no", disable_tqdm=True),
                train_dataset=Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in longest]),
                callbacks=[timer],
            )
            trainer.train()
            return times

        result["sft"] = _phase("SFT", peak, run_sft)
        gc.collect()
        tokenizer.padding_side = "left"
        generation_batch = cfg.GRPO_BATCH_SIZE * cfg.GRPO_GRAD_ACCUM // cfg.NUM_GENERATIONS
        prompts = [grpo_rows[i % len(grpo_rows)] for i in range(max(1, generation_batch))]

        def run_grpo() -> list[float]:
            timer, times = _step_timer()
            funcs, _ = rewards.reward_functions(cfg)
            trainer = GRPOTrainer(
                model=loaded.model, reward_funcs=funcs, processing_class=tokenizer,
                # every completion runs to the token limit: the worst case for memory and time
                args=training.grpo_config(cfg, where, use_vllm=False, max_steps=1, save_strategy="no", disable_tqdm=True,
                                          generation_kwargs={"min_new_tokens": cfg.GRPO_MAX_NEW_TOKENS}),
                train_dataset=Dataset.from_list([{k: r[k] for k in ("id", "prompt", "gold", "table")} for r in prompts]),
                callbacks=[timer],
            )
            trainer.train()
            return times

        result["grpo"] = _phase("GRPO", peak, run_grpo)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sft_s, grpo_s = result["sft"]["step_s"], result["grpo"]["step_s"]
    result.update(
        peak_memory_gb=max(result["model_peak_memory_gb"], result["sft"]["peak_memory_gb"], result["grpo"]["peak_memory_gb"]),
        sft_step_s=None if sft_s is None else round(sft_s, 2),
        grpo_step_s=None if grpo_s is None else round(grpo_s, 2),
        projected_sft_steps=sft_total_steps(cfg, train_rows),
        projected_grpo_steps=cfg.GRPO_MAX_STEPS,
        seconds=round(time.time() - started, 1),
    )
    result["projected_sft_s"] = None if sft_s is None else round(sft_s * result["projected_sft_steps"])
    result["projected_grpo_s"] = None if grpo_s is None else round(grpo_s * cfg.GRPO_MAX_STEPS)
    result["verdict"] = verdict(result)
    return result


def verdict(result: dict[str, Any]) -> str:
    """"fits", or which constant to lower first for the phase that ran out or came too close."""
    capacity = result["capacity_gb"]
    for phase in ("sft", "grpo"):
        if result[phase]["out_of_memory"]:
            return f"does not fit: {phase.upper()} ran out of memory; lower {first_to_lower(phase)} first"
    worst = max(("sft", "grpo"), key=lambda phase: result[phase]["peak_memory_gb"])
    if capacity and result["peak_memory_gb"] > FITS_SHARE * capacity:
        return (f"too close: {worst.upper()} peaked at {result['peak_memory_gb']:.2f} of {capacity:.2f} GiB; "
                f"lower {first_to_lower(worst)} first")
    return "fits"


def format_probe(result: dict[str, Any]) -> str:
    """The probe as a few lines for the console."""
    def seconds(value: float | None) -> str:
        return "n/a" if value is None else (f"{value / 3600:.1f} h" if value >= 3600 else f"{value / 60:.1f} min" if value >= 60 else f"{value:.1f} s")

    return "\n".join([
        f"probe ({result['seconds']:.0f} s): peak memory {result['peak_memory_gb']:.2f} GiB of {result['capacity_gb']:.2f} ({result['capacity']})",
        f"  model loaded          {result['model_peak_memory_gb']:.2f} GiB",
        f"  SFT   {result['sft']['peak_memory_gb']:.2f} GiB, {seconds(result['sft_step_s'])}/step on the longest rows "
        f"-> {result['projected_sft_steps']} steps ~ {seconds(result['projected_sft_s'])}",
        f"  GRPO  {result['grpo']['peak_memory_gb']:.2f} GiB, {seconds(result['grpo_step_s'])}/step at full completion length "
        f"-> {result['projected_grpo_steps']} steps ~ {seconds(result['projected_grpo_s'])} (difficulty filter not included)",
        f"  verdict: {result['verdict']}",
    ])
