"""Will a run fit, and how long will it take? An instant estimate and a measured probe.

``estimate_gb`` is a documented formula (below), instant and rough. ``probe`` measures: it loads
the configured model exactly as 04/05 do (4-bit or not, LoRA or every weight, gradient
checkpointing as configured), runs a few real SFT optimizer steps over the longest training row
of every length the stage will see (``SFT_PAD_TO_MULTIPLE`` makes those few), and one real GRPO
step whose completions all run to GRPO_MAX_NEW_TOKENS (the worst case), and reports the peak
memory of each phase (CUDA: ``max_memory_reserved``; CPU: the process's peak resident memory),
the seconds per step, the projected time of the configured training, and a verdict: fits, or the
first constant to lower from ``OOM_ORDER`` (the README's "Out of memory" table). It writes nothing
under the training folders: its trainers work in a temporary folder that is removed afterwards.

The SFT phase runs in a fresh process, as 04 does, so its peak is its own and not the heap an
earlier phase left behind. Once every padded length has been seen, a CPU's SFT memory stops
growing (the allocator and oneDNN reuse what each length took), so that peak is the projected
peak of the whole stage. With ``CPU_PRECISION=auto`` on a CPU the SFT phase runs once in each
precision, and ``choose_cpu_precision`` keeps bfloat16 only where its steps are faster *and* its
projected peak fits ``CPU_MEMORY_BUDGET_GB``; the decision, with both measurements, is recorded
in ``check_env.json`` and ``recorded_precision`` gives it to the trainers on the same machine.

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

import concurrent.futures
import json
import logging
import math
import multiprocessing
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
# bf16 autocast must beat float32's measured step time by this factor to be chosen: a smaller
# difference is within the noise of a few steps and not worth the casts' memory
AUTO_BF16_MIN_SPEEDUP = 1.05
# the constants that shape what an SFT step costs: a recorded precision decision holds for a run
# only while these are the same as when the probe measured
PRECISION_SETTINGS = (
    "PROFILE", "MODEL_NAME", "FINETUNE", "LOAD_IN_4BIT", "MAX_SEQ_LEN", "SFT_BATCH_SIZE", "GRADIENT_CHECKPOINTING",
    "SFT_PAD_TO_MULTIPLE", "EVIDENCE_MODE", "RETRIEVER", "RETRIEVER_TOP_K", "PROMPT_TOKEN_BUDGET",
    "PROMPT_INSTRUCTIONS", "FEW_SHOT_EXAMPLE", "SFT_TARGET", "SFT_TRAIN_LIMIT", "CPU_MEMORY_BUDGET_GB",
)


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


def _probe_rows(cfg: Any, tokenizer: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int]:
    """(SFT rows, GRPO rows, rows 04 would train on, padded lengths): the SFT rows are built as 03
    builds them from every training example 04 would use, and the longest row of each padded
    length is kept, longest first, so the probe meets every shape the stage will; GRPO rows
    longest prompt first."""
    from finreason import data, trainset

    bundle = data.load_from_config(cfg, splits=("train",), verbose=False)
    train = data.first(bundle["train"], cfg.SFT_TRAIN_LIMIT)
    sft = trainset.sft_rows(train, tokenizer, cfg, "probe rows")
    # + 1: the end-of-turn token TRL appends to a completion
    lengths = [len(ids) + 1 for ids in tokenizer([r["prompt"] + r["completion"] for r in sft], add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(sft)), key=lambda i: -lengths[i])
    kept = [i for i in order if lengths[i] <= cfg.MAX_SEQ_LEN] or [order[-1]]
    longest_of_each: dict[int, int] = {}
    for i in kept:
        longest_of_each.setdefault(padded_length(lengths[i], cfg.SFT_PAD_TO_MULTIPLE), i)
    grpo = trainset.grpo_rows([train[i] for i in order[:256]], tokenizer, cfg)
    return [sft[i] for i in longest_of_each.values()], grpo, len(train), len(longest_of_each)


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


def _phase(name: str, peak: PeakMemory, run: Callable[[], list[float]], reset: bool = True) -> dict[str, Any]:
    """Run one phase; its peak memory, step seconds, and whether it ran out of memory."""
    import torch

    if reset:
        peak.reset()
    try:
        times = run()
    except torch.OutOfMemoryError as error:
        _LOG.warning("%s ran out of memory: %s", name, str(error).splitlines()[0])
        return {"peak_memory_gb": round(peak.peak_gb(), 3), "step_s": None, "out_of_memory": True}
    return {"peak_memory_gb": round(peak.peak_gb(), 3), "step_s": _steady(times), "out_of_memory": False, "steps": len(times)}


def _run_sft_phase(values: dict[str, Any], profile_note: str, rows: list[dict[str, Any]], steps: int,
                   cap_gb: float | None) -> dict[str, Any]:
    """The probe's SFT phase: load the model as 04 does and run ``steps`` optimizer steps over
    ``rows`` (cycled). Runs in a fresh process (``_in_fresh_process``), so its peak is its own."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    from finreason import models, training
    from finreason.configuration import Config
    from finreason.layout import Layout

    cfg = Config(values, profile_note)
    if cap_gb and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb / (torch.cuda.get_device_properties(0).total_memory / GIB)))
    peak = PeakMemory()
    peak.reset()
    loaded = models.load_model(cfg, trainable=True)
    model_peak = round(peak.peak_gb(), 3)
    tokenizer = models.load_tokenizer(cfg)
    tokenizer.padding_side = "right"
    scratch = Path(tempfile.mkdtemp(prefix="finreason-probe-"))
    cycled = [rows[i % len(rows)] for i in range(max(len(rows), steps * cfg.SFT_BATCH_SIZE * cfg.SFT_GRAD_ACCUM))]

    def run_sft() -> list[float]:
        timer, times = _step_timer()
        trainer = SFTTrainer(
            model=loaded.model, processing_class=tokenizer,
            args=training.sft_config(cfg, Layout(scratch), max_steps=steps, save_strategy="no", disable_tqdm=True),
            train_dataset=Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in cycled]),
            callbacks=[timer],
        )
        training.train(trainer, None)
        return times

    try:
        # every weight as 04 trains it, so the peak is measured from the process's start
        return {**_phase("SFT", peak, run_sft, reset=False), "model_peak_memory_gb": model_peak,
                "precision": training.training_precision(cfg)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _in_fresh_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``function(*args)`` in a new interpreter (spawned: a forked one would share this heap). A
    phase whose process the kernel killed (its out-of-memory killer, on a CPU) ran out of memory."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(function, *args).result()
        except concurrent.futures.process.BrokenProcessPool:
            _LOG.warning("the probe's SFT process was killed (out of memory?)")
            return {"peak_memory_gb": system_ram_gb(), "model_peak_memory_gb": 0.0, "step_s": None, "out_of_memory": True,
                    "killed": True}


def choose_cpu_precision(measured: dict[str, dict[str, Any]], budget_gb: float) -> tuple[str, str]:
    """(precision, why) from the SFT phase measured in each precision: bfloat16 only where its
    steps are at least AUTO_BF16_MIN_SPEEDUP faster than float32's and its projected peak fits
    ``budget_gb``; float32 otherwise."""
    fp32, bf16 = measured["float32"], measured["bfloat16"]
    if bf16.get("out_of_memory") or not bf16.get("step_s"):
        return "float32", "bfloat16 did not finish its steps"
    if not fp32.get("step_s"):
        return "bfloat16", "float32 did not finish its steps"
    speedup = fp32["step_s"] / bf16["step_s"]
    peak = bf16["projected_peak_memory_gb"]
    if speedup < AUTO_BF16_MIN_SPEEDUP:
        return "float32", f"bfloat16 is not faster ({bf16['step_s']:.2f} s/step against {fp32['step_s']:.2f}: {speedup:.2f}x)"
    if peak > budget_gb:
        return "float32", (f"bfloat16 is {speedup:.2f}x faster but its projected SFT peak {peak:.2f} GiB exceeds "
                           f"CPU_MEMORY_BUDGET_GB={budget_gb:g}")
    return "bfloat16", f"{speedup:.2f}x faster per step and its projected SFT peak {peak:.2f} GiB fits CPU_MEMORY_BUDGET_GB={budget_gb:g}"


def _machine_identity() -> dict[str, Any]:
    """What makes a precision decision hold on a machine: the CPU, its count and features, torch."""
    import torch

    from finreason.provenance import machine

    found = machine()
    return {"cpu_model": found["cpu_model"], "cpus": found["cpus"], "cpu_features": found["cpu_features"],
            "torch": torch.__version__}


def recorded_precision(cfg: Any) -> tuple[str | None, str]:
    """(the precision ``00_check_env.py --probe`` chose for ``cfg`` on this machine, or None; why).
    The decision in OUTPUT_DIR's check_env.json holds only for the same machine and the same
    PRECISION_SETTINGS."""
    from finreason import storage
    from finreason.layout import Layout

    path = Layout.of(cfg).check_env
    record = (storage.read_json_object(path) or {}).get("probe", {}) if path.is_file() else {}
    decision = record.get("cpu_precision") if isinstance(record, dict) else None
    if not isinstance(decision, dict) or decision.get("chosen") not in ("float32", "bfloat16"):
        return None, f"no precision decision in {path}"
    if decision.get("machine") != _machine_identity():
        return None, f"the decision in {path} was made on another machine or torch"
    settings = decision.get("settings") or {}
    changed = [key for key in PRECISION_SETTINGS if settings.get(key) != getattr(cfg, key)]
    if changed:
        return None, f"the decision in {path} was measured with other {', '.join(changed)}"
    return decision["chosen"], f"measured by 00_check_env.py --probe: {decision['reason']}"


def probe(cfg: Any, sft_steps: int = 2, cap_gb: float | None = None) -> dict[str, Any]:
    """Measure a few real SFT steps and one worst-case GRPO step (see the module docstring)."""
    import gc

    import torch
    from datasets import Dataset
    from trl import GRPOTrainer

    from finreason import models, rewards, training
    from finreason.layout import Layout

    started = time.time()
    if cap_gb and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb / total))
    capacity, what = capacity_gb(cfg, cap_gb)
    tokenizer = models.load_tokenizer(cfg)
    sft_rows, grpo_rows, train_rows, lengths = _probe_rows(cfg, tokenizer)
    per_step = cfg.SFT_BATCH_SIZE * cfg.SFT_GRAD_ACCUM
    steps = max(sft_steps, math.ceil(len(sft_rows) / per_step))
    unpadded_cpu = not torch.cuda.is_available() and cfg.SFT_PAD_TO_MULTIPLE == 1
    result: dict[str, Any] = {
        "capacity_gb": round(capacity, 2), "capacity": what, "sft_steps_measured": steps, "sft_padded_lengths": lengths,
        "sft_projection": ("a lower bound: with SFT_PAD_TO_MULTIPLE=1 every row length is a shape of its own, and a "
                           "CPU's memory grows with each new one" if unpadded_cpu else
                           f"the longest row of each of the {lengths} padded lengths the stage will see was trained on"),
    }

    # SFT, in a fresh process per precision that may train: every padded length is met, so the
    # phase's peak is the stage's (on a CPU the memory stops growing once each length was seen)
    precisions = ["float32", "bfloat16"] if not torch.cuda.is_available() and cfg.CPU_PRECISION == "auto" else [None]
    measured: dict[str | None, dict[str, Any]] = {}
    for precision in precisions:
        phase_cfg = cfg.replace(CPU_PRECISION=precision) if precision else cfg
        measured[precision] = _in_fresh_process(_run_sft_phase, phase_cfg.snapshot(), cfg.profile_note, sft_rows, steps, cap_gb)
        measured[precision]["projected_peak_memory_gb"] = measured[precision]["peak_memory_gb"]
    if precisions == [None]:
        result["sft"] = measured[None]
    else:
        chosen, why = choose_cpu_precision(measured, cfg.CPU_MEMORY_BUDGET_GB)
        _LOG.info("CPU_PRECISION=auto: %s (%s)", chosen, why)
        result["cpu_precision"] = {
            "chosen": chosen, "reason": why, "budget_gb": cfg.CPU_MEMORY_BUDGET_GB, "measured": measured,
            "machine": _machine_identity(), "settings": {key: getattr(cfg, key) for key in PRECISION_SETTINGS},
        }
        result["sft"] = measured[chosen]
        cfg = cfg.replace(CPU_PRECISION=chosen)
    result["model_peak_memory_gb"] = result["sft"]["model_peak_memory_gb"]

    # GRPO, in this process, in the precision SFT will train in
    peak = PeakMemory()
    scratch = Path(tempfile.mkdtemp(prefix="finreason-probe-"))
    try:
        loaded = models.load_model(cfg, trainable=True)
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
                args=training.grpo_config(cfg, Layout(scratch), use_vllm=False, max_steps=1, save_strategy="no", disable_tqdm=True,
                                          generation_kwargs={"min_new_tokens": cfg.GRPO_MAX_NEW_TOKENS}),
                train_dataset=Dataset.from_list([{k: r[k] for k in ("id", "prompt", "gold", "table")} for r in prompts]),
                callbacks=[timer],
            )
            training.train(trainer, None)
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
        f"  SFT   {result['sft']['peak_memory_gb']:.2f} GiB, {seconds(result['sft_step_s'])}/step over the longest rows "
        f"-> {result['projected_sft_steps']} steps ~ {seconds(result['projected_sft_s'])}",
        f"        whole SFT stage: projected peak {result['sft']['projected_peak_memory_gb']:.2f} GiB ({result['sft_projection']})",
        *_precision_lines(result.get("cpu_precision")),
        f"  GRPO  {result['grpo']['peak_memory_gb']:.2f} GiB, {seconds(result['grpo_step_s'])}/step at full completion length "
        f"-> {result['projected_grpo_steps']} steps ~ {seconds(result['projected_grpo_s'])} (difficulty filter not included)",
        f"  verdict: {result['verdict']}",
    ])


def _precision_lines(decision: dict[str, Any] | None) -> list[str]:
    if not decision:
        return []
    lines = []
    for name, measured in decision["measured"].items():
        step = "n/a" if measured.get("step_s") is None else f"{measured['step_s']:.1f} s"
        lines.append(f"  SFT in {name}: peak {measured['peak_memory_gb']:.2f} GiB, {step}/step")
    return [*lines, f"  CPU_PRECISION=auto: {decision['chosen']} ({decision['reason']})"]
