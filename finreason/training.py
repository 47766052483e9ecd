"""What the two trainers share (04_train_sft.py, 05_train_grpo.py).

Input checks that run before any model loads, the TRL configs (``sft_config``, ``grpo_config``)
with the fields that depend on the hardware, checkpoint resumption (only by the same run:
``run_identity``, ``prepare_run``), TensorBoard and the step log (one format and file name,
``step_log.jsonl``, for both trainers), and ``save_stage``: a finished stage's weights (adapter
or whole model), tokenizer, SHA-256, its ``TrainingRecord`` (``training_summary.json``) and model
card, written together the same way by both scripts; ``stale_weights`` names weights trained from
since-replaced ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finreason import configuration, layout, memory, models, prompts, retrieval, rewards, stats, storage, throughput
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.precision import recorded_precision
from finreason.provenance import provenance
from finreason.training_record import TrainingRecord

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


def training_precision(cfg: Any) -> str:
    """The precision the trainers compute in (``precision_decision`` without the reason)."""
    return precision_decision(cfg)[0]


def precision_decision(cfg: Any) -> tuple[str, str]:
    """(the precision the trainers compute in, why): COMPUTE_DTYPE on a GPU; on a CPU,
    CPU_PRECISION. ``auto`` takes what ``00_check_env.py --probe`` measured on this machine for
    these settings (bfloat16 only where its real steps were faster and its projected peak fit
    CPU_MEMORY_BUDGET_GB; ``precision.recorded_precision``); without such a measurement, bfloat16
    where the measured bf16 matmul peak beats float32's (``throughput.choose_cpu_precision``)."""
    import torch

    if torch.cuda.is_available():
        return cfg.COMPUTE_DTYPE, f"COMPUTE_DTYPE={cfg.COMPUTE_DTYPE}"
    if cfg.CPU_PRECISION != "auto":
        return cfg.CPU_PRECISION, f"CPU_PRECISION={cfg.CPU_PRECISION}"
    choice, why = recorded_precision(cfg)
    if choice is None:
        choice = throughput.choose_cpu_precision("auto")
        why += f"; {choice} from the matmul peaks (00_check_env.py --probe decides from real steps and memory)"
    if process_state().num_processes == 1:
        return choice, why
    # every rank of a launch takes the main process's decision: ranks timing their own peaks
    # could land on both sides of the margin, and then disagree about resuming (run.json)
    from accelerate.utils import broadcast_object_list

    return tuple(broadcast_object_list([choice, why], from_process=0))


def hardware_arguments(cfg: Any, precision: str | None = None) -> dict[str, Any]:
    """TrainingArguments fields that depend on the device and the run's ``precision``
    (``precision_decision``'s; decided here when not given).

    TRL's configs default ``bf16=True`` whenever fp16 is off, which fails on a CPU-only
    machine without ``use_cpu``; so precision is always set explicitly here.
    """
    import torch

    cuda = torch.cuda.is_available()
    precision = precision or training_precision(cfg)
    return {
        "use_cpu": not cuda,
        # on a CPU, bf16 means autocast over the float32 weights (CPU_PRECISION; the optimizer
        # keeps updating float32 weights, so small updates are not rounded away)
        "bf16": precision == "bfloat16",
        "fp16": cuda and precision == "float16",
        # 8-bit AdamW keeps two bytes of optimizer state per trained weight instead of eight: on the
        # 8 GB card it is paged out of VRAM; on a CPU (no paging there) it is what keeps full
        # fine-tuning of the 135M model under 4 GiB in float32. Plain AdamW only without bitsandbytes.
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


# TrainingArguments fields that hardware_arguments derives from a constant: an *_TRL_ARGS entry
# for one of them is refused, naming the constant, so the constant and the run never disagree
_HARDWARE_CONSTANTS = {
    "bf16": "COMPUTE_DTYPE (GPU) or CPU_PRECISION", "fp16": "COMPUTE_DTYPE",
    "gradient_checkpointing": "GRADIENT_CHECKPOINTING", "gradient_checkpointing_kwargs": "GRADIENT_CHECKPOINTING",
    "seed": "SEED", "data_seed": "SEED", "save_steps": "SAVE_STEPS",
}


def _trl_config(config_class: Any, cfg: Any, where: Layout, stage: str, precision: str | None, changes: dict[str, Any],
                constants: Mapping[str, str], derived: Mapping[str, str] | None = None, **fields: Any) -> Any:
    """A TRL config for ``stage``: its batch, accumulation, rate and steps (its
    ``configuration.stage_settings``), the fields set from the ``constants`` named (field:
    constant), ``fields`` (those ``derived`` maps are computed from the constant it names), the
    hardware arguments, the stage's ``*_TRL_ARGS`` (checked by TRL's own parser), then ``changes``
    (the memory probe's overrides)."""
    group = configuration.stage_settings(cfg, stage.upper())
    covered = {
        "output_dir": "OUTPUT_DIR", "per_device_train_batch_size": group.constant("batch_size"),
        "gradient_accumulation_steps": group.constant("grad_accum"), "learning_rate": group.constant("learning_rate"),
        "max_steps": group.constant("max_steps"), **_HARDWARE_CONSTANTS, **constants, **(derived or {}),
    }
    options = trl_options(config_class, group.trl_args, group.constant("trl_args"), covered)
    values = {
        "output_dir": str(where.checkpoints(stage)),
        "per_device_train_batch_size": group.batch_size,
        "gradient_accumulation_steps": group.grad_accum,
        "learning_rate": group.learning_rate,
        "max_steps": group.max_steps,
        **{field: getattr(cfg, constant) for field, constant in constants.items()},
        **fields,
        **hardware_arguments(cfg, precision),
        **options,
        **changes,
    }
    try:
        return config_class(**values)
    except ValueError as error:
        # TRL's and transformers' own checks (__post_init__): a combination they refuse
        if not options:
            raise
        raise TrainingInputError(f"--{group.constant('trl_args')}={group.trl_args}: "
                                 f"{config_class.__name__} refuses it: {str(error).splitlines()[0]}") from None


def trl_options(config_class: Any, setting: str, key: str, covered: Mapping[str, str]) -> dict[str, Any]:
    """``setting`` (``name=value[,name=value]``) as typed fields of ``config_class``, parsed by
    transformers' HfArgumentParser (how TRL's own scripts read these fields: types, booleans,
    choices), so every field of the dataclass can be set and none is listed here. A field that
    ``covered`` maps to a constant is refused, naming the constant; any mistake is one line."""
    import argparse
    import dataclasses
    import difflib

    from transformers import HfArgumentParser

    if not setting.strip():
        return {}
    parser = HfArgumentParser(config_class, exit_on_error=False, allow_abbrev=False)
    names = [field.name for field in dataclasses.fields(config_class) if field.init]
    options: dict[str, Any] = {}
    for part in setting.split(","):
        name, _, raw = part.strip().partition("=")
        if name in covered:
            raise TrainingInputError(f"--{key}: {name} is set by --{covered[name]}; change that constant instead")
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TrainingInputError(f"--{key}: TRL's {config_class.__name__} has no field {name!r}{hint}")
        try:
            parsed, _ = parser.parse_known_args([f"--{name}", raw])
        except argparse.ArgumentError as error:
            raise TrainingInputError(f"--{key}: {name}={raw}: {error.message}") from None
        options[name] = getattr(parsed, name)
    return options


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def sft_config(cfg: Any, where: Layout, precision: str | None = None, **changes: Any) -> Any:
    """TRL SFTConfig for prompt-completion rows: TRL masks the prompt tokens out of the labels
    (completion_only_loss), so only the assistant's answer is learned. ``precision``: the run's
    (decided here when not given). ``changes`` override fields (the memory probe runs a few steps
    without saving)."""
    from trl import SFTConfig

    return _trl_config(
        SFTConfig, cfg, where, "sft", precision, changes,
        {"num_train_epochs": "SFT_EPOCHS", "max_length": "MAX_SEQ_LEN"},
        {"pad_to_multiple_of": "SFT_PAD_TO_MULTIPLE"},
        # TRL's collator pads on the right, after truncation to max_length; None: to the longest row
        pad_to_multiple_of=cfg.SFT_PAD_TO_MULTIPLE if cfg.SFT_PAD_TO_MULTIPLE > 1 else None,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        completion_only_loss=True,
        packing=False,
    )


def grpo_config(cfg: Any, where: Layout, use_vllm: bool, precision: str | None = None, **changes: Any) -> Any:
    """TRL GRPOConfig from the GRPO_* constants; ``precision`` as for ``sft_config``; ``changes``
    override fields."""
    from trl import GRPOConfig

    _, weights = rewards.reward_functions(cfg)
    return _trl_config(
        GRPOConfig, cfg, where, "grpo", precision, changes,
        {"num_generations": "NUM_GENERATIONS", "max_completion_length": "GRPO_MAX_NEW_TOKENS",
         "temperature": "GRPO_TEMPERATURE", "beta": "GRPO_BETA", "loss_type": "GRPO_LOSS_TYPE"},
        {"scale_rewards": "GRPO_LOSS_TYPE", "reward_weights": "REWARD_CORRECT_WEIGHT and REWARD_FORMAT_WEIGHT",
         "use_vllm": "USE_VLLM", "pad_to_multiple_of": "GRPO_PAD_TO_MULTIPLE"},
        pad_to_multiple_of=cfg.GRPO_PAD_TO_MULTIPLE if cfg.GRPO_PAD_TO_MULTIPLE > 1 else None,
        # Dr. GRPO removes the per-group std scaling as well as the length normalisation
        scale_rewards="none" if cfg.GRPO_LOSS_TYPE == "dr_grpo" else "group",
        reward_weights=weights,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        log_completions=False,
    )


# --- checkpoints and logs ----------------------------------------------------------------------


def process_state() -> Any:
    """accelerate's PartialState as the Trainer builds it (``use_cpu`` without CUDA, see
    ``hardware_arguments``). On a CPU, only ``cpu=True`` turns a multi-process launch into gloo DDP:
    a plain ``PartialState()`` made before the Trainer's sees one process in every rank, so each
    rank would take itself for the main one (found by the two-process test)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def require_same_on_every_process(ids: Sequence[str], what: str) -> None:
    """Stop unless every process of a launch holds the same ``ids`` in the same order: ranks that
    trained on different sets would average the gradients of different runs. One process: no-op."""
    from accelerate.utils import gather_object

    state = process_state()
    if state.num_processes == 1:
        return
    digest = hashlib.sha256(json.dumps(list(ids)).encode("utf-8")).hexdigest()
    digests = gather_object([digest])
    if len(set(digests)) > 1:
        raise TrainingInputError(
            f"the {what} differ between the {state.num_processes} processes (sha256 "
            f"{', '.join(d[:12] for d in digests)}); every process must read the same OUTPUT_DIR (on several "
            "machines: a folder they all share)"
        )
    if state.is_main_process:
        _LOG.info("the same %d %s on all %d processes (sha256 %s)", len(set(ids)), what, state.num_processes, digest[:12])


def run_identity(cfg: Any, stage: str, rows: Sequence[Mapping[str, Any]], start_sha256: str, precision: str) -> dict[str, Any]:
    """What shapes a stage's weights: the constants it depends on (``configuration.training_settings``,
    also the model card's), the precision that computes (CPU_PRECISION=auto resolves per machine),
    the process count (it sets the effective batch), the SHA-256 of the training rows as trained
    on, and the starting weights' SHA-256 (the base model's for SFT, the SFT weights' for GRPO).
    Checkpoints and the step log are reused only by the same run."""
    rows_text = json.dumps(list(rows), sort_keys=True, ensure_ascii=False, default=str)
    settings = {**configuration.training_settings(cfg, stage), "precision": precision, "processes": process_state().num_processes}
    return {
        "stage": stage,
        # as run.json reads them back (tuples as lists), so the same run compares equal
        "settings": json.loads(json.dumps(settings, default=str)),
        "train_data_sha256": hashlib.sha256(rows_text.encode("utf-8")).hexdigest(),
        "start_weights_sha256": start_sha256,
    }


def identity_changes(recorded: Mapping[str, Any] | None, identity: Mapping[str, Any]) -> list[str]:
    """What differs between a recorded run and this one, as "SEED 42 -> 7" phrases ([] = the same run)."""
    if not recorded:
        return ["no record of the run that wrote them"]
    changes = []
    old, new = recorded.get("settings") or {}, identity["settings"]
    changes += [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    for key, label in (("train_data_sha256", "training data"), ("start_weights_sha256", "starting weights")):
        if recorded.get(key) != identity[key]:
            changes.append(f"{label} (sha256 {str(recorded.get(key))[:12]} -> {identity[key][:12]})")
    return changes


def prepare_run(where: Layout, stage: str, identity: Mapping[str, Any], fresh: bool) -> str | None:
    """Decide whether this run resumes, and clear what it must not read back; returns the
    checkpoint to resume from (None: start at step 0).

    Checkpoints and the step log are resumed only when ``<stage>/run.json`` records this very run
    (``identity``); after ``--fresh`` or a change they are removed, the change named in one line.
    A save a kill cut short (``<stage>/.saving``, a half-renamed weights folder) is cleaned up,
    and the step log is cut back to the resumed step. Only the main process changes files,
    first, behind a barrier; the other ranks then read the state it left and decide the same.
    """
    state = process_state()
    with state.main_process_first():
        return _prepare_run(where, stage, identity, fresh, write=state.is_main_process)


def _prepare_run(where: Layout, stage: str, identity: Mapping[str, Any], fresh: bool, write: bool) -> str | None:
    checkpoints, step_log = where.checkpoints(stage), where.step_log(stage)
    if write:
        _recover_save(where, stage)
    changes = identity_changes(storage.read_json_object(where.run_record(stage)), identity)
    leftovers = step_log.exists() or (checkpoints.is_dir() and any(checkpoints.iterdir()))
    if (fresh or changes) and leftovers and write:
        reason = "--fresh" if fresh else "changed since they were written: " + "; ".join(changes)
        _LOG.warning("%s: %s; starting afresh, removing the checkpoints and step log of the previous run", stage, reason)
        shutil.rmtree(checkpoints, ignore_errors=True)
        step_log.unlink(missing_ok=True)
    resume = None if (fresh or changes) else last_checkpoint(checkpoints, remove_incomplete=write)
    if write:
        resumed_step = int(Path(resume).name.rsplit("-", 1)[-1]) if resume else 0
        kept = [entry for entry in storage.read_jsonl(step_log) if isinstance(entry.get("step"), int) and entry["step"] <= resumed_step]
        if step_log.exists():
            storage.write_jsonl(step_log, kept)
        storage.atomic_write_json(where.run_record(stage), dict(identity))
    return resume


def _recover_save(where: Layout, stage: str) -> None:
    """Remove what a killed final save left: the staging folder, or the old weights half-renamed."""
    staging = where.saving(stage)
    if staging.exists():
        _LOG.warning("%s: removing %s, left by a final save that was killed", stage, staging)
        shutil.rmtree(staging)
    for kind in (layout.ADAPTER, layout.MODEL):
        storage.recover_folder(where.weights_dir(stage, kind))


def last_checkpoint(folder: str | os.PathLike, remove_incomplete: bool = True) -> str | None:
    """The newest ``checkpoint-N`` that can be resumed from, or None.

    A checkpoint without its trainer_state.json (written last) was cut short by a kill; it is
    skipped, and removed with a warning when ``remove_incomplete`` (the main process only)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(folder)
    if not folder.is_dir():
        return None
    numbered = [(int(path.name.rsplit("-", 1)[1]), path) for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                if path.is_dir() and path.name.rsplit("-", 1)[1].isdigit()]
    for _, found in sorted(numbered, reverse=True):
        if (found / "trainer_state.json").is_file():
            return str(found)
        if remove_incomplete:
            _LOG.warning("%s is incomplete (killed while saving); removing it and resuming from the one before", found)
            shutil.rmtree(found)
    return None


def score_labelled_positions_only() -> None:
    """Make TRL's fused LM head score only the positions that have a label, on a CPU too.

    TRL 1.16 compacts to the labelled positions only where Triton runs (CUDA, XPU); elsewhere it
    scores every position so that a compiler (Neuron) keeps one tile shape. On a CPU in eager
    mode there is nothing to recompile, and the head's 49,152-word softmax, its entropy and its
    backward then run over every prompt position too: ~85% of an SFT row is prompt, and the head
    took 1.23 s of a 448-token row in bf16 against 0.19 s for 64 positions (README, "Where an SFT
    step's time went on a CPU"). The loss, its gradients and the logged metrics are the same either way
    (tests/test_training.py). Patches TRL's module-level switch, once; a TRL without it fails
    the test that pins this, not a training run."""
    from trl.trainer import utils as trl_utils

    scores_all = getattr(trl_utils, "_use_triton", None)
    if scores_all is None or getattr(scores_all, "labelled_positions_only", False):
        return

    def compact_on_cpu(device: Any) -> bool:
        return device.type == "cpu" or scores_all(device)

    compact_on_cpu.labelled_positions_only = True
    trl_utils._use_triton = compact_on_cpu


def train(trainer: Any, resume: str | None) -> Any:
    """``trainer.train()``, resuming from ``resume`` (``prepare_run``'s checkpoint) when given,
    with the LM head scoring labelled positions only (``score_labelled_positions_only``);
    returns TRL's result."""
    if resume:
        _LOG.info("resuming from %s", resume)
    score_labelled_positions_only()
    return trainer.train(resume_from_checkpoint=resume)


def tensorboard_callback(log_dir: str | os.PathLike) -> Any:
    """transformers' TensorBoard callback writing under ``log_dir`` (it has no argument for it)."""
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(log_dir)
    return callback


def step_log_callback(path: str | os.PathLike, shown: Sequence[str], sampled: bool = False,
                      question_ids: Callable[[], list[str]] | None = None) -> Any:
    """A TrainerCallback appending every training log (one line per logging step) to ``path``
    and logging the ``shown`` metrics of each step, with the step's throughput: ``step_seconds``
    (optimizer step, wall clock), ``tokens`` (TRL's ``num_tokens`` since the previous step),
    ``tokens_per_second`` and ``mfu`` (model FLOPs per second over this machine's measured matmul
    peak in the step's ``precision``; finreason.throughput), and ``memory_gb``, the memory held
    after the step (``memory.resident_gb``: growth from step to step shows here). ``sampled``:
    the step also generated its tokens (GRPO), which costs one more forward per token.
    ``question_ids``: returns (and forgets) the ids of the questions this process sampled since the
    last log (``rewards.SampledQuestions.take``); each step's entry then lists every process's as
    ``sampled_question_ids``, empty for a step that reused earlier samples (TRL's num_iterations)."""
    from transformers import TrainerCallback

    class StepLogCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001 - TrainerCallback API
            self.shape = throughput.model_shape(model) if model is not None else None
            self.precision = "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32"
            self.peak = throughput.measured_peak(self.precision, args.device.type) if self.shape else None
            if self.peak:
                _LOG.info("MFU denominator: %s matmul peak %.0f GFLOP/s on %s", self.precision, self.peak / 1e9, args.device.type)
            self.sequences = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            # TRL's num_tokens counts from here: a resumed GRPO run restores it, SFT starts at 0
            self.tokens_seen = state.num_input_tokens_seen or None
            self.started = self.seconds = None

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback API
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback API
            self.seconds = time.perf_counter() - self.started if self.started is not None else None

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TrainerCallback API
            # before any return: every process calls on_log, and gathering their ids needs them all
            sampled_ids = gather_ids(question_ids()) if question_ids is not None else None
            if not state.is_world_process_zero or not logs:
                return
            entry = {"step": state.global_step, **{k: v for k, v in logs.items() if _scalar(v)}}
            if not any(k in entry for k in shown):
                return  # the closing summary log, not a step
            held = memory.resident_gb()
            entry.update(self.throughput(entry.get("num_tokens")), precision=self.precision,
                         **({"memory_gb": round(held, 3)} if held is not None else {}),
                         **({"sampled_question_ids": sampled_ids} if sampled_ids is not None else {}))
            storage.append_jsonl(path, [entry])
            _LOG.info("step %d: %s", state.global_step, ", ".join(
                f"{k}={entry[k]:.4g}" for k in (*shown, "tokens_per_second", "mfu", "memory_gb") if _scalar(entry.get(k))))

        def throughput(self, tokens_seen: float | None) -> dict[str, float]:
            if self.seconds is None or self.seconds <= 0:
                return {}
            seconds, self.seconds = self.seconds, None
            if tokens_seen is None:
                # an update that sampled nothing (TRL's num_iterations > 1 reuses samples) logs no
                # num_tokens: its time still counts, and the next sampling update's tokens are its own
                return {"step_seconds": round(seconds, 3)}
            tokens = tokens_seen - (self.tokens_seen or 0)
            self.tokens_seen = tokens_seen
            found = {"step_seconds": round(seconds, 3), "tokens": tokens, "tokens_per_second": round(tokens / seconds, 1)}
            if self.shape and self.peak and tokens > 0:
                flops = throughput.step_flops(self.shape, tokens, self.sequences, tokens if sampled else 0)
                found["mfu"] = round(flops / seconds / self.peak, 4)
            return found

    return StepLogCallback()


def gather_ids(ids: Sequence[str]) -> list[str]:
    """Every process's ``ids``, rank by rank, once each (a collective call: all processes make it).
    One process: ``ids`` as given."""
    if process_state().num_processes == 1:
        return list(ids)
    from accelerate.utils import gather_object

    return list(dict.fromkeys(gather_object(list(ids))))


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
    trained: TrainingRecord,
    card: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
) -> TrainingRecord | None:
    """Save a trained stage (``trained.stage``): weights (an adapter, or the whole model when every
    weight trained) under <stage>/adapter or <stage>/model, the tokenizer (left padding, as
    generation uses it), its record (``trained`` completed with the weights, their hash and
    provenance) and README.md (TRL's model card, extended with ``card`` and the constants the
    stage depends on).

    All four are written to ``<stage>/.saving`` and renamed into place together, so a kill
    leaves the old set or the new one, never a mix. Weights of the other kind are moved to
    ``<stage>/archive/`` (named in the log), not deleted. Every rank calls this (ZeRO-3/FSDP
    gather the weights from all of them inside ``save_model``); only the main process writes
    the rest, and it alone gets the record back (None elsewhere)."""
    from peft import PeftModel

    state = process_state()
    where = Layout.of(cfg)
    stage = trained.stage
    kind = layout.ADAPTER if isinstance(trainer.model, PeftModel) else layout.MODEL
    folder = where.weights_dir(stage, kind)
    staging = where.saving(stage)
    if state.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    state.wait_for_everyone()
    trainer.save_model(str(staging))
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    try:
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(str(staging))
        record = dataclasses.replace(
            trained,
            weights=str(folder),
            weights_kind=kind,
            weights_sha256=models.weights_fingerprint(staging),
            base_model=cfg.MODEL_NAME,
            evidence_mode=cfg.EVIDENCE_MODE,
            retriever=retrieval.used_by(cfg),
            provenance=provenance(cfg, data=dict(data) if data else None, model=cfg.MODEL_NAME),
        )
        record.write(staging)
        storage.atomic_write_text(staging / "README.md", model_card(trainer, cfg, record, card))
        storage.install_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _LOG.info("%s %s saved to %s (sha256 %s)", stage.upper(), kind, folder, record.weights_sha256[:16])
    other = where.weights_dir(stage, layout.MODEL if kind == layout.ADAPTER else layout.ADAPTER)
    if other.exists():
        archived = where.weights_archive(stage) / f"{other.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        archived.parent.mkdir(parents=True, exist_ok=True)
        os.replace(other, archived)
        _LOG.warning("%s: the previous %s weights (%s) were moved to %s; the new %s replaces them", stage, other.name, other, archived, kind)
    for later, reason in stale_weights(where).items():
        _LOG.warning("%s weights are now stale: %s", later.upper(), reason)
    return record


def stale_weights(where: Layout) -> dict[str, str]:
    """Stages whose weights were trained from weights that have since been replaced, with why
    (GRPO continues the SFT weights: its record holds their SHA-256)."""
    found = where.weights("grpo")
    if found is None:
        return {}
    started_from = TrainingRecord.read(found).sft_weights_sha256
    sft = where.weights("sft")
    now = TrainingRecord.read(sft).weights_sha256 if sft else None
    if not started_from or started_from == now:
        return {}
    current = f"the SFT weights are now {now[:12]}" if now else "there are no SFT weights now"
    return {"grpo": f"trained from SFT weights {started_from[:12]}, but {current}: rerun 05_train_grpo.py"}


def model_card(trainer: Any, cfg: Any, record: TrainingRecord, card: Mapping[str, Any]) -> str:
    """TRL's model card for the trainer (``create_model_card``), then what FinReason adds: the
    evidence mode, the ``card`` facts of this training and the constants that shaped it."""
    from huggingface_hub import ModelCard

    stage = record.stage
    trainer.create_model_card(model_name=f"finreason-{stage}", dataset_name="FinQA", tags=["finreason", "finqa", stage])
    card_path = Path(trainer.args.output_dir) / "README.md"
    base = ModelCard.load(card_path).content if card_path.is_file() else f"# finreason-{stage}\n"
    lines = ["", "## FinReason", "", "| | |", "|---|---|"]
    rows = {"evidence": prompts.evidence_label(cfg.EVIDENCE_MODE, record.retriever), "weights sha256": record.weights_sha256[:16], **card}
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows.items()]
    lines += ["", "### Training config", "", "| constant | value |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in configuration.training_settings(cfg, stage).items()]
    lines += ["", "Full provenance (config snapshot, package versions, data source): `training_summary.json`.", ""]
    return base.rstrip() + "\n" + "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def evaluation_brief(evaluation_summary: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an evaluation summary that a model folder records (its ``TrainingRecord.evaluation``)."""
    return {key: evaluation_summary.get(key) for key in (
        "stage", "split", "evidence_mode", "retriever", "n", "execution_accuracy", "execution_accuracy_ci95",
        "lenient_accuracy", "program_accuracy", "no_answer_rate", "records")}


def add_evaluation(record: TrainingRecord, evaluation_summary: Mapping[str, Any]) -> TrainingRecord:
    """Record a finished stage's evaluation beside its installed weights (``record.weights``): in
    its record and as a line of the model card; returns the record with it.

    A second write, after ``save_stage``'s, on purpose: the evaluation runs on the installed weights
    (what 06_evaluate.py evaluates, so its results name that folder and 06 finds them done), and
    the weights are never in place without their record and card while it runs."""
    folder = Path(record.weights)
    record = dataclasses.replace(record, evaluation=evaluation_brief(evaluation_summary))
    record.write(folder)
    card = (folder / "README.md").read_text(encoding="utf-8")
    storage.atomic_write_text(folder / "README.md", card.rstrip() + f"\n\n**Evaluation:** {evaluation_text(record.evaluation)}.\n")
    return record


def evaluation_text(brief: Mapping[str, Any] | None) -> str:
    """"12.0% strict (95% CI 4.0%-22.0%) on the first 50 dev examples, gold evidence"."""
    if not brief or brief.get("execution_accuracy") is None:
        return "not evaluated"
    low, high = (brief.get("execution_accuracy_ci95") or [None, None])[:2]
    ci = f" (95% CI {stats.percent(low)}-{stats.percent(high)})" if low is not None else ""
    return (f"{stats.percent(brief['execution_accuracy'])} strict{ci} on {brief.get('n')} {brief.get('split')} examples, "
            f"{prompts.evidence_label(brief.get('evidence_mode'), brief.get('retriever'))}")
