"""What the two trainers share (04_train_sft.py, 05_train_grpo.py).

Input checks that run before any model loads, the TRL configs (``sft_config``, ``grpo_config``)
with the fields that depend on the hardware, checkpoint resumption, TensorBoard and the step log
(one format and file name, ``step_log.jsonl``, for both trainers), and ``save_stage``: a
finished stage's weights (adapter or whole model), tokenizer, SHA-256, ``training_summary.json``
and model card, written the same way by both scripts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finreason import layout, prompts, retrieval, stats, storage
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.provenance import provenance

_LOG = logging.getLogger(__name__)

SFT_FIELDS = {"id": str, "prompt": str, "completion": str}
GRPO_FIELDS = {"id": str, "prompt": str, "gold": str, "table": list}


class TrainingInputError(FinReasonError, RuntimeError):
    """A user-fixable problem with the training inputs; the message says what to run or change."""


# --- inputs ------------------------------------------------------------------------------------


def load_rows(path: str | os.PathLike, fields: Mapping[str, type], producer: str = "03_format_data.py") -> list[dict[str, Any]]:
    """Read and validate a training JSONL file; raise TrainingInputError naming the problem.

    Strict on purpose (unlike ``storage.read_jsonl``): a training set with silently dropped or
    half-written rows is worse than a refusal, and this runs before the slow model load.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingInputError(f"{path} does not exist; create it first with: python {producer}")
    rows: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TrainingInputError(f"{path} line {number} is not UTF-8 text; rerun python {producer}") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as error:
                reason = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply"
                raise TrainingInputError(f"{path} line {number} is not valid JSON ({reason}); rerun python {producer}") from None
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


def require_weights(where: Layout, stage: str, producer: str) -> Path:
    """A trained stage's weights folder, or TrainingInputError naming the script that makes it."""
    found = where.weights(stage)
    if found is None:
        raise TrainingInputError(
            f"no trained {stage.upper()} weights under {where.stage_dir(stage)} (adapter/ or model/); "
            f"train them first with: python {producer}"
        )
    return found


def trainable_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# --- trainer configs ---------------------------------------------------------------------------


def hardware_arguments(cfg: Any) -> dict[str, Any]:
    """TrainingArguments fields that depend on the device and COMPUTE_DTYPE.

    TRL's configs default ``bf16=True`` whenever fp16 is off, which fails on a CPU-only
    machine without ``use_cpu``; so precision is always set explicitly here.
    """
    import torch

    cuda = torch.cuda.is_available()
    return {
        "use_cpu": not cuda,
        "bf16": cuda and cfg.COMPUTE_DTYPE == "bfloat16",
        "fp16": cuda and cfg.COMPUTE_DTYPE == "float16",
        # 8-bit AdamW keeps two bytes of optimizer state per trained weight instead of eight: on the
        # 8 GB card it is paged out of VRAM; on a CPU (no paging there) it is what keeps full
        # fine-tuning of the 135M model under 4 GiB. Plain AdamW only without bitsandbytes.
        "optim": ("paged_adamw_8bit" if cuda else "adamw_bnb_8bit") if _has_bitsandbytes() else "adamw_torch",
        "gradient_checkpointing": bool(cfg.GRADIENT_CHECKPOINTING),
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if cfg.GRADIENT_CHECKPOINTING else None,
        "seed": int(cfg.SEED),
        "data_seed": int(cfg.SEED),
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": int(cfg.SAVE_STEPS),
        # the latest two checkpoints: resuming needs one, the other survives a kill mid-save
        "save_total_limit": 2,
        # TensorBoard is attached explicitly (tensorboard_callback) so the runs land in <stage>/runs
        "report_to": "none",
        "disable_tqdm": False,
        "dataloader_num_workers": 0,
    }


def _trl_config(config_class: Any, cfg: Any, where: Layout, stage: str, changes: dict[str, Any], **fields: Any) -> Any:
    """A TRL config for ``stage``: its batch, accumulation, rate and steps (both trainers' constants
    follow one naming: SFT_BATCH_SIZE, GRPO_BATCH_SIZE, ...), ``fields``, the hardware arguments,
    then ``changes`` (the memory probe's overrides)."""
    prefix = stage.upper()
    return config_class(**{**dict(
        output_dir=str(where.checkpoints(stage)),
        per_device_train_batch_size=getattr(cfg, f"{prefix}_BATCH_SIZE"),
        gradient_accumulation_steps=getattr(cfg, f"{prefix}_GRAD_ACCUM"),
        learning_rate=getattr(cfg, f"{prefix}_LEARNING_RATE"),
        max_steps=getattr(cfg, f"{prefix}_MAX_STEPS"),
        **fields,
        **hardware_arguments(cfg),
    ), **changes})


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def sft_config(cfg: Any, where: Layout, **changes: Any) -> Any:
    """TRL SFTConfig for prompt-completion rows: TRL masks the prompt tokens out of the labels
    (completion_only_loss), so only the assistant's answer is learned. ``changes`` override
    fields (the memory probe runs a few steps without saving)."""
    from trl import SFTConfig

    return _trl_config(
        SFTConfig, cfg, where, "sft", changes,
        num_train_epochs=cfg.SFT_EPOCHS,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        max_length=cfg.MAX_SEQ_LEN,
        completion_only_loss=True,
        packing=False,
    )


def grpo_config(cfg: Any, where: Layout, use_vllm: bool, **changes: Any) -> Any:
    """TRL GRPOConfig from the GRPO_* constants; ``changes`` override fields."""
    from trl import GRPOConfig

    from finreason import rewards

    _, weights = rewards.reward_functions(cfg)
    return _trl_config(
        GRPOConfig, cfg, where, "grpo", changes,
        num_generations=cfg.NUM_GENERATIONS,
        max_completion_length=cfg.GRPO_MAX_NEW_TOKENS,
        temperature=cfg.GRPO_TEMPERATURE,
        beta=cfg.GRPO_BETA,
        loss_type=cfg.GRPO_LOSS_TYPE,
        # Dr. GRPO removes the per-group std scaling as well as the length normalisation
        scale_rewards="none" if cfg.GRPO_LOSS_TYPE == "dr_grpo" else "group",
        reward_weights=weights,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        log_completions=False,
    )


# --- checkpoints and logs ----------------------------------------------------------------------


def last_checkpoint(folder: str | os.PathLike) -> str | None:
    """transformers' ``get_last_checkpoint``, minus a save a kill cut short.

    A ``checkpoint-N`` without its trainer_state.json (written last) cannot be resumed from; it
    is removed, with a warning, and the one before it is used.
    """
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(folder)
    if not folder.is_dir():
        return None
    while (found := get_last_checkpoint(str(folder))) is not None:
        if (Path(found) / "trainer_state.json").is_file():
            return found
        _LOG.warning("%s is incomplete (killed while saving); removing it and resuming from the one before", found)
        shutil.rmtree(found)
    return None


def train(trainer: Any, where: Layout, stage: str, fresh: bool) -> tuple[Any, str | None]:
    """``trainer.train()``, resuming from the stage's newest complete checkpoint unless ``fresh``
    (a killed run continues where it stopped); returns (TRL's result, the checkpoint resumed)."""
    resume = None if fresh else last_checkpoint(where.checkpoints(stage))
    if resume:
        _LOG.info("resuming from %s", resume)
    return trainer.train(resume_from_checkpoint=resume), resume


def tensorboard_callback(log_dir: str | os.PathLike) -> Any:
    """transformers' TensorBoard callback writing under ``log_dir`` (it has no argument for it)."""
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(log_dir)
    return callback


def step_log_callback(path: str | os.PathLike, shown: Sequence[str]) -> Any:
    """A TrainerCallback appending every training log (one line per logging step) to ``path``
    and logging the ``shown`` metrics of each step."""
    from transformers import TrainerCallback

    class StepLogCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TrainerCallback API
            if not state.is_world_process_zero or not logs:
                return
            entry = {"step": state.global_step, **{k: v for k, v in logs.items() if _scalar(v)}}
            if not any(k in entry for k in shown):
                return  # the closing summary log, not a step
            storage.append_jsonl(path, [entry])
            _LOG.info("step %d: %s", state.global_step, ", ".join(f"{k}={entry[k]:.4g}" for k in shown if _scalar(entry.get(k))))

    return StepLogCallback()


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_step_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The step log, one entry per step (a resumed run's repeated steps keep the newest entry)."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in storage.read_jsonl(path):
        step = entry.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            by_step[step] = {**by_step.get(step, {}), **entry}
    return [by_step[step] for step in sorted(by_step)]


# --- a finished stage --------------------------------------------------------------------------


def save_stage(
    trainer: Any,
    tokenizer: Any,
    cfg: Any,
    stage: str,
    summary: dict[str, Any],
    facts: Mapping[str, Any],
    card_keys: Iterable[str],
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Save a trained stage: weights (an adapter, or the whole model when every weight trained)
    under <stage>/adapter or <stage>/model, the tokenizer (left padding, as generation uses it),
    ``training_summary.json`` (``summary`` + weights hash + provenance) and README.md (TRL's
    model card, extended with ``facts`` and the ``card_keys`` constants). Returns the summary."""
    from peft import PeftModel

    from finreason import models

    where = Layout.of(cfg)
    kind = layout.ADAPTER if isinstance(trainer.model, PeftModel) else layout.MODEL
    folder = where.weights_dir(stage, kind)
    other = where.weights_dir(stage, layout.MODEL if kind == layout.ADAPTER else layout.ADAPTER)
    if other.exists():
        shutil.rmtree(other)  # one set of weights per stage: the one just trained
    trainer.save_model(str(folder))
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(folder))
    summary = {
        "stage": stage,
        "weights": str(folder),
        "weights_kind": kind,
        "weights_sha256": models.weights_fingerprint(folder),
        "base_model": cfg.MODEL_NAME,
        "evidence_mode": cfg.EVIDENCE_MODE,
        "retriever": retrieval.used_by(cfg),
        **summary,
        "provenance": provenance(cfg, data=dict(data) if data else None, model=cfg.MODEL_NAME),
    }
    storage.atomic_write_json(folder / models.TRAINING_SUMMARY, summary)
    storage.atomic_write_text(folder / "README.md", model_card(trainer, cfg, stage, summary, facts, card_keys))
    _LOG.info("%s %s saved to %s (sha256 %s)", stage.upper(), kind, folder, summary["weights_sha256"][:16])
    return summary


def model_card(trainer: Any, cfg: Any, stage: str, summary: Mapping[str, Any], facts: Mapping[str, Any], card_keys: Iterable[str]) -> str:
    """TRL's model card for the trainer (``create_model_card``), then what FinReason adds: the
    evidence mode, the facts of this training and the constants that shaped it."""
    from huggingface_hub import ModelCard

    trainer.create_model_card(model_name=f"finreason-{stage}", dataset_name="FinQA", tags=["finreason", "finqa", stage])
    card_path = Path(trainer.args.output_dir) / "README.md"
    base = ModelCard.load(card_path).content if card_path.is_file() else f"# finreason-{stage}\n"
    lines = ["", "## FinReason", "", "| | |", "|---|---|"]
    rows = {"evidence": prompts.evidence_label(cfg.EVIDENCE_MODE, summary.get("retriever")), "weights sha256": summary["weights_sha256"][:16], **facts}
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows.items()]
    lines += ["", "### Training config", "", "| constant | value |", "|---|---|"]
    lines += [f"| {key} | {_cell(getattr(cfg, key))} |" for key in card_keys if key in cfg]
    lines += ["", "Full provenance (config snapshot, package versions, data source): `training_summary.json`.", ""]
    return base.rstrip() + "\n" + "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def evaluation_brief(evaluation_summary: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an evaluation summary that a model folder records (training_summary.json)."""
    return {key: evaluation_summary.get(key) for key in (
        "stage", "split", "evidence_mode", "retriever", "n", "execution_accuracy", "execution_accuracy_ci95",
        "lenient_accuracy", "program_accuracy", "no_answer_rate", "records")}


def add_evaluation(folder: str | os.PathLike, evaluation_summary: Mapping[str, Any]) -> None:
    """Record a finished stage's evaluation beside its weights: in training_summary.json and as a
    line of the model card (the evaluation runs after the weights are saved, on the saved weights)."""
    from finreason import models

    folder = Path(folder)
    brief = evaluation_brief(evaluation_summary)
    summary_path = folder / models.TRAINING_SUMMARY
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    storage.atomic_write_json(summary_path, {**summary, "evaluation": brief})
    card = (folder / "README.md").read_text(encoding="utf-8")
    storage.atomic_write_text(folder / "README.md", card.rstrip() + f"\n\n**Evaluation:** {evaluation_text(brief)}.\n")


def evaluation_text(brief: Mapping[str, Any] | None) -> str:
    """"12.0% strict (95% CI 4.0%-22.0%) on the first 50 dev examples, gold evidence"."""
    if not brief or brief.get("execution_accuracy") is None:
        return "not evaluated"
    low, high = (brief.get("execution_accuracy_ci95") or [None, None])[:2]
    ci = f" (95% CI {stats.percent(low)}-{stats.percent(high)})" if low is not None else ""
    return (f"{stats.percent(brief['execution_accuracy'])} strict{ci} on {brief.get('n')} {brief.get('split')} examples, "
            f"{prompts.evidence_label(brief.get('evidence_mode'), brief.get('retriever'))}")
