"""Shared pieces of the two training scripts (04_train_sft.py, 05_train_grpo.py).

Input checks that run before any model loads, the LoRA config, TrainingArguments fields that
depend on the hardware, checkpoint resumption, TensorBoard and step logging callbacks,
sampling for the GRPO difficulty filter, and the adapter model card.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finreason import records

SFT_FIELDS = {"id": str, "prompt": str, "completion": str}
GRPO_FIELDS = {"id": str, "prompt": str, "gold": str, "table": list}
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class TrainingInputError(RuntimeError):
    """A user-fixable problem with the training inputs; the message says what to run or change."""


# --- inputs ------------------------------------------------------------------------------------


def load_rows(path: str | os.PathLike, fields: Mapping[str, type], producer: str = "03_format_data.py") -> list[dict[str, Any]]:
    """Read and validate a training JSONL file; raise TrainingInputError naming the problem.

    Strict on purpose (unlike ``records.read_jsonl``): a training set with silently dropped or
    half-written rows is worse than a refusal, and this runs before the slow model load.
    """
    path = Path(path)
    if not path.exists():
        raise TrainingInputError(f"{path} does not exist; create it first with: python {producer}")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TrainingInputError(
                    f"{path} line {number} is not valid JSON ({error.msg}); rerun python {producer}"
                ) from None
            problem = _row_problem(row, fields)
            if problem:
                raise TrainingInputError(f"{path} line {number}: {problem}; rerun python {producer}")
            rows.append(row)
    if not rows:
        raise TrainingInputError(f"{path} has no training rows; rerun python {producer} (check its data source)")
    return rows


def _row_problem(row: Any, fields: Mapping[str, type]) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    for name, kind in fields.items():
        if name not in row:
            return f"missing field {name!r}"
        value = row[name]
        if not isinstance(value, kind):
            return f"field {name!r} should be {kind.__name__}, got {type(value).__name__}"
        if kind is str and name != "id" and not value.strip():
            return f"field {name!r} is empty"
    return None


def split_by_length(rows: Sequence[dict[str, Any]], tokenizer: Any, max_len: int) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows whose prompt + completion + end token fit ``max_len`` tokens, ids of the others).

    SFTTrainer truncates from the end, so an over-long row would train on a target whose
    Program:/Answer: lines were cut off: worse than not training on it.
    """
    fits, too_long = [], []
    for row in rows:
        n_tokens = len(tokenizer(row["prompt"] + row["completion"])["input_ids"]) + 1
        (fits if n_tokens <= max_len else too_long).append(row)
    return fits, [row["id"] for row in too_long]


def require_adapter(path: str | os.PathLike, producer: str) -> Path:
    """The adapter folder, or TrainingInputError naming the script that makes it."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise TrainingInputError(f"no adapter at {path} (adapter_config.json missing); train it first with: python {producer}")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def adapter_fingerprint(adapter_dir: str | os.PathLike) -> str:
    """SHA-256 of the adapter weights: ties cached results (evaluations, filters) to one adapter."""
    adapter_dir = Path(adapter_dir)
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (adapter_dir / name).is_file():
            return file_sha256(adapter_dir / name)
    return "missing"


# --- model -------------------------------------------------------------------------------------


def trainable_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# --- trainer arguments -------------------------------------------------------------------------


def hardware_arguments(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """TrainingArguments fields that depend on the device and COMPUTE_DTYPE.

    TRL's configs default ``bf16=True`` whenever fp16 is off, which fails on a CPU-only
    machine without ``use_cpu``; so precision is always set explicitly here.
    """
    import torch

    cuda = torch.cuda.is_available()
    dtype = str(cfg["COMPUTE_DTYPE"])
    return {
        "use_cpu": not cuda,
        "bf16": cuda and dtype == "bfloat16",
        "fp16": cuda and dtype == "float16",
        # paged 8-bit AdamW keeps optimizer state off the 8 GB card; bitsandbytes' paged
        # optimizers need CUDA, so CPU runs use the plain torch AdamW.
        "optim": "paged_adamw_8bit" if cuda else "adamw_torch",
        "gradient_checkpointing": bool(cfg["GRADIENT_CHECKPOINTING"]),
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if cfg["GRADIENT_CHECKPOINTING"] else None,
        "seed": int(cfg["SEED"]),
        "data_seed": int(cfg["SEED"]),
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": int(cfg["SAVE_STEPS"]),
        # the latest two checkpoints: resuming needs one, the other survives a kill mid-save
        "save_total_limit": 2,
        # TensorBoard is attached explicitly (tensorboard_callback) so the runs land in <stage>/runs
        "report_to": "none",
        "disable_tqdm": False,
        "dataloader_num_workers": 0,
    }


def last_checkpoint(folder: str | os.PathLike) -> str | None:
    """The highest ``checkpoint-N`` folder holding a trainer_state.json (a complete save)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return str(max(found)[1]) if found else None


def tensorboard_callback(log_dir: str | os.PathLike) -> Any:
    """transformers' TensorBoard callback writing under ``log_dir`` (it has no argument for it)."""
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(log_dir)
    return callback


def step_log_callback(path: str | os.PathLike, keys: Sequence[str] | None = None, echo: Callable[[str], None] | None = None) -> Any:
    """A TrainerCallback appending every training log (one line per logging step) to ``path``."""
    from transformers import TrainerCallback

    class StepLogCallback(TrainerCallback):
        def __init__(self) -> None:
            self.path = Path(path)
            self.history: list[dict[str, Any]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TrainerCallback API
            if not state.is_world_process_zero or not logs:
                return
            entry = {"step": state.global_step, **{k: v for k, v in logs.items() if _scalar(v)}}
            if keys is not None and not any(k in entry for k in keys):
                return
            self.history.append(entry)
            records.append_jsonl(self.path, [entry])
            if echo is not None and keys is not None:
                shown = ", ".join(f"{k}={entry[k]:.4g}" for k in keys if _scalar(entry.get(k)))
                echo(f"[step {state.global_step}] {shown}")

    return StepLogCallback()


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_step_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The step log, one entry per step (a resumed run's repeated steps keep the newest entry)."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in records.read_jsonl(path):
        if isinstance(entry.get("step"), int):
            by_step[entry["step"]] = {**by_step.get(entry["step"], {}), **entry}
    return [by_step[step] for step in sorted(by_step)]


# --- sampling (difficulty filter) --------------------------------------------------------------


def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    batch_size: int,
    seed: int,
    stop_ids: Sequence[int] | None = None,
    progress: bool = True,
) -> Iterable[tuple[int, list[str]]]:
    """Yield ``(prompt_index, [num_samples completions])`` sampled at ``temperature``.

    Sampling the same way GRPO will (same temperature, same max tokens) is what makes the
    difficulty filter predict which groups carry a gradient.
    """
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    per_call = max(1, batch_size // max(1, num_samples))
    was_training = model.training
    model.eval()
    generator_seed = int(seed)
    try:
        starts = range(0, len(prompts), per_call)
        for start in tqdm(starts, desc="difficulty filter", unit="batch", disable=not progress):
            chunk = list(prompts[start : start + per_call])
            torch.manual_seed(generator_seed + start)
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False).to(device)
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    do_sample=True,
                    temperature=float(temperature),
                    top_p=1.0,
                    top_k=0,
                    num_return_sequences=num_samples,
                    max_new_tokens=int(max_new_tokens),
                    pad_token_id=tokenizer.pad_token_id,
                    # end of turn, not only the tokenizer's eos: otherwise every sample runs to the limit
                    eos_token_id=list(stop_ids) if stop_ids else tokenizer.eos_token_id,
                )
            texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            for offset in range(len(chunk)):
                yield start + offset, texts[offset * num_samples : (offset + 1) * num_samples]
    finally:
        model.train(was_training)


# --- model card --------------------------------------------------------------------------------


def model_card(title: str, facts: Mapping[str, Any], config_keys: Sequence[str], cfg: Mapping[str, Any], notes: str = "") -> str:
    """A short README.md for an adapter folder: what it is, what trained it, how well it did."""
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["| | |", "|---|---|"]
    for key, value in facts.items():
        lines.append(f"| {key} | {_cell(value)} |")
    lines += ["", "## Training config", "", "| constant | value |", "|---|---|"]
    for key in config_keys:
        if key in cfg:
            lines.append(f"| {key} | {_cell(cfg[key])} |")
    lines += ["", "Full provenance (config snapshot, package versions, data source): `training_summary.json`.", ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
