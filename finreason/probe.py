"""Will a run fit, and how fast? A probe that measures a few real steps of both trainers.

``probe`` loads the configured model exactly as 04/05 do (4-bit or not, LoRA or every weight,
gradient checkpointing as configured), runs a few real SFT optimizer steps over the longest
training row of every length the stage will see (``SFT_PAD_TO_MULTIPLE`` makes those few), and
one real GRPO step whose completions all run to GRPO_MAX_NEW_TOKENS (the worst case), and reports
the peak memory of each phase (``memory.PeakMemory``), the seconds per step, the projected time of
the configured training, and a verdict: fits, or the first constant to lower from
``memory.OOM_ORDER`` (the README's "Out of memory" table). It writes nothing under the training
folders: its trainers work in a temporary folder that is removed afterwards.

The SFT phase runs in a fresh process, as 04 does, so its peak is its own and not the heap an
earlier phase left behind. Once every padded length has been seen, a CPU's SFT memory stops
growing (the allocator and oneDNN reuse what each length took), so that peak is the projected
peak of the whole stage. With ``CPU_PRECISION=auto`` on a CPU the SFT phase runs once in each
precision, and ``precision.choose_from_steps`` keeps bfloat16 only where its steps are faster
*and* its projected peak fits ``CPU_MEMORY_BUDGET_GB``; the decision, with both measurements, is
recorded in ``check_env.json`` and ``precision.recorded_precision`` gives it to the trainers on
the same machine. ``memory.estimate_gb`` is the instant formula beside it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finreason import data, memory, models, precision, rewards, training, trainset
from finreason.configuration import Config
from finreason.layout import Layout
from finreason.memory import GIB, PeakMemory

_LOG = logging.getLogger(__name__)


def _probe_rows(cfg: Any, tokenizer: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int]:
    """(SFT rows, GRPO rows, rows 04 would train on, padded lengths): the SFT rows are built as 03
    builds them from every training example 04 would use, and the longest row of each padded
    length is kept, longest first, so the probe meets every shape the stage will; GRPO rows
    longest prompt first."""

    bundle = data.load_from_config(cfg, splits=("train",), verbose=False)
    train = data.first(bundle["train"], cfg.SFT_TRAIN_LIMIT)
    sft = trainset.sft_rows(train, tokenizer, cfg, "probe rows")
    # + 1: the end-of-turn token TRL appends to a completion
    lengths = [len(ids) + 1 for ids in tokenizer([r["prompt"] + r["completion"] for r in sft], add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(sft)), key=lambda i: -lengths[i])
    kept = [i for i in order if lengths[i] <= cfg.MAX_SEQ_LEN] or [order[-1]]
    longest_of_each: dict[int, int] = {}
    for i in kept:
        longest_of_each.setdefault(memory.padded_length(lengths[i], cfg.SFT_PAD_TO_MULTIPLE), i)
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

    cfg = Config(values, profile_note)
    if cap_gb and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb / (torch.cuda.get_device_properties(0).total_memory / GIB)))
    peak = PeakMemory()
    peak.reset()
    loaded = models.load_model(cfg, trainable=True)
    model_peak = round(peak.peak_gb(), 3)
    # the tokenizer the loader read, as in 04, which loads no second one
    tokenizer = loaded.tokenizer
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
            return {"peak_memory_gb": memory.system_ram_gb(), "model_peak_memory_gb": 0.0, "step_s": None, "out_of_memory": True,
                    "killed": True}


def probe(cfg: Any, sft_steps: int = 2, cap_gb: float | None = None) -> dict[str, Any]:
    """Measure a few real SFT steps and one worst-case GRPO step (see the module docstring)."""
    import gc

    import torch
    from datasets import Dataset
    from trl import GRPOTrainer


    started = time.time()
    if cap_gb and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb / total))
    capacity, what = memory.capacity_gb(cfg, cap_gb)
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
    for candidate in precisions:
        phase_cfg = cfg.replace(CPU_PRECISION=candidate) if candidate else cfg
        measured[candidate] = _in_fresh_process(_run_sft_phase, phase_cfg.snapshot(), cfg.profile_note, sft_rows, steps, cap_gb)
        measured[candidate]["projected_peak_memory_gb"] = measured[candidate]["peak_memory_gb"]
    if precisions == [None]:
        result["sft"] = measured[None]
    else:
        chosen, why = precision.choose_from_steps(measured, cfg.CPU_MEMORY_BUDGET_GB)
        _LOG.info("CPU_PRECISION=auto: %s (%s)", chosen, why)
        result["cpu_precision"] = {
            "chosen": chosen, "reason": why, "budget_gb": cfg.CPU_MEMORY_BUDGET_GB, "measured": measured,
            "machine": precision.machine_identity(), "settings": {key: getattr(cfg, key) for key in precision.PRECISION_SETTINGS},
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
        projected_sft_steps=memory.sft_total_steps(cfg, train_rows),
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
            return f"does not fit: {phase.upper()} ran out of memory; lower {memory.first_to_lower(phase)} first"
    worst = max(("sft", "grpo"), key=lambda phase: result[phase]["peak_memory_gb"])
    if capacity and result["peak_memory_gb"] > memory.FITS_SHARE * capacity:
        return (f"too close: {worst.upper()} peaked at {result['peak_memory_gb']:.2f} of {capacity:.2f} GiB; "
                f"lower {memory.first_to_lower(worst)} first")
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
