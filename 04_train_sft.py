"""Supervised fine-tuning (QLoRA) on the formatted FinQA training targets.

Command:
    python 04_train_sft.py [--PROFILE=cpu] [--KEY=value ...] [--no-eval] [--fresh]
    accelerate launch --config_file accelerate/multi_gpu.yaml 04_train_sft.py      (several GPUs)

Reads:  <OUTPUT_DIR>/data/sft_train.jsonl ({"id", "prompt", "completion"}; from 03_format_data.py),
        the base model MODEL_NAME, and the FinQA dev split for the closing evaluation.
Writes: <OUTPUT_DIR>/sft/checkpoints/checkpoint-N/   (every SAVE_STEPS; a killed run resumes here)
        <OUTPUT_DIR>/sft/runs/                        (TensorBoard: tensorboard --logdir outputs/sft/runs)
        <OUTPUT_DIR>/sft/train_log.jsonl              (one line per optimizer step)
        <OUTPUT_DIR>/sft/adapter/                     (LoRA adapter + tokenizer + README.md model card
                                                       + training_summary.json with provenance)
        <OUTPUT_DIR>/eval/sft_dev.*                   (the shared evaluator on the first SFT_EVAL_LIMIT dev
                                                       examples; stage "sft_dev")

The loss is on the completion tokens only: the rows are TRL "prompt-completion" data, for which
SFTTrainer masks the prompt tokens out of the labels (completion_only_loss defaults to True for
this format in TRL 1.16; it is also set explicitly here).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
from pathlib import Path
from typing import Any

from finreason import cli, models, records, training

STAGE = "sft_dev"
CARD_KEYS = (
    "MODEL_NAME", "LOAD_IN_4BIT", "COMPUTE_DTYPE", "MAX_SEQ_LEN", "PROMPT_TOKEN_BUDGET", "LORA_R", "LORA_ALPHA",
    "LORA_DROPOUT", "LORA_TARGET_MODULES", "SFT_TRAIN_LIMIT", "SFT_BATCH_SIZE", "SFT_GRAD_ACCUM",
    "SFT_LEARNING_RATE", "SFT_EPOCHS", "SFT_MAX_STEPS", "GRADIENT_CHECKPOINTING", "SEED",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-eval", action="store_true", help="skip the closing dev-slice evaluation")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start from step 0")


def paths(cfg: Any) -> dict[str, Path]:
    root = Path(cfg.OUTPUT_DIR)
    return {
        "data": root / "data" / "sft_train.jsonl",
        "manifest": root / "data" / "manifest.json",
        "stage": root / "sft",
        "checkpoints": root / "sft" / "checkpoints",
        "runs": root / "sft" / "runs",
        "log": root / "sft" / "train_log.jsonl",
        "adapter": root / "sft" / "adapter",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, cfg = cli.parse_args(__doc__, argv, add_arguments)
    try:
        return run(args, cfg)
    except (training.TrainingInputError, models.ModelError) as error:
        sys.exit(f"04_train_sft.py: {error}")


def run(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    where = paths(cfg)

    # data: validated before anything heavy is imported or loaded
    rows = training.load_rows(where["data"], training.SFT_FIELDS, producer="03_format_data.py")
    if cfg.SFT_TRAIN_LIMIT > 0:
        rows = rows[: cfg.SFT_TRAIN_LIMIT]
    manifest = _read_json(where["manifest"]) or {}

    # lengths: rows longer than MAX_SEQ_LEN would be truncated through their Program/Answer lines
    tokenizer = models.load_tokenizer(cfg)
    rows, too_long = training.split_by_length(rows, tokenizer, cfg.MAX_SEQ_LEN)
    if too_long:
        print(
            f"[sft] warning: skipped {len(too_long)} rows longer than MAX_SEQ_LEN={cfg.MAX_SEQ_LEN} tokens "
            f"(e.g. {', '.join(too_long[:3])}); raise MAX_SEQ_LEN or lower PROMPT_TOKEN_BUDGET to keep them",
            file=sys.stderr,
        )
    if not rows:
        raise training.TrainingInputError(
            f"every training row is longer than MAX_SEQ_LEN={cfg.MAX_SEQ_LEN} tokens; raise --MAX_SEQ_LEN "
            "or rerun 03_format_data.py with a lower --PROMPT_TOKEN_BUDGET"
        )
    print(f"[sft] {len(rows)} training rows from {where['data']}", file=sys.stderr)

    # seed
    import torch
    from transformers import set_seed

    set_seed(cfg.SEED)

    # model: QLoRA base (NF4 when LOAD_IN_4BIT) with fresh trainable LoRA weights on the
    # LORA_TARGET_MODULES this architecture has (the loader builds the PEFT model)
    loaded = models.load_model(cfg, trainable=True)
    model, tokenizer, model_info = loaded.model, loaded.tokenizer, dict(loaded.info)
    # SFTTrainer pads on the right for training; generation (evaluation) uses left padding
    tokenizer.padding_side = "right"

    # trainer
    if args.fresh:
        shutil.rmtree(where["checkpoints"], ignore_errors=True)
        where["log"].unlink(missing_ok=True)
    trainer = make_trainer(cfg, where, rows, model, tokenizer)
    trainable, total = training.trainable_parameters(trainer.model)
    print(f"[sft] trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)", file=sys.stderr)

    # train: resume from the newest complete checkpoint when a previous run was killed
    resume = None if args.fresh else training.last_checkpoint(where["checkpoints"])
    if resume:
        print(f"[sft] resuming from {resume}", file=sys.stderr)
    result = trainer.train(resume_from_checkpoint=resume)
    history = training.read_step_log(where["log"])
    losses = [entry["loss"] for entry in history if "loss" in entry]
    final_loss = losses[-1] if losses else result.training_loss

    if not trainer.is_world_process_zero():
        return {}

    # save: adapter + tokenizer; tokenizer saved with the generation-side padding
    tokenizer.padding_side = "left"
    trainer.save_model(str(where["adapter"]))
    tokenizer.save_pretrained(str(where["adapter"]))
    fingerprint = training.adapter_fingerprint(where["adapter"])

    # evaluate: the shared evaluator on a fixed dev slice, with the adapter as saved
    eval_summary: dict[str, Any] | None = None
    del trainer, model, loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    from finreason import data

    bundle = data.load_from_config(cfg, splits=("dev",))
    if not args.no_eval:
        eval_summary = evaluate_adapter(cfg, bundle, where)

    # record: training_summary.json (provenance) and the model card
    summary = {
        "stage": "sft",
        "adapter": str(where["adapter"]),
        "adapter_sha256": fingerprint,
        "train_rows": len(rows),
        "skipped_too_long": too_long,
        "train_data": str(where["data"]),
        "train_data_sha256": training.file_sha256(where["data"]),
        "format_manifest": {k: manifest.get(k) for k in ("counts", "model", "tokenizer", "self_check") if k in manifest},
        "global_step": result.global_step,
        "resumed_from": resume,
        "final_loss": final_loss,
        "first_loss": losses[0] if losses else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "lora_target_modules": cfg.LORA_TARGET_MODULES.split(","),
        "trainable_parameters": trainable,
        "model_info": model_info,
        "dev_eval": _eval_brief(eval_summary),
        "provenance": records.provenance(cfg, data=bundle.describe(), model=cfg.MODEL_NAME, loader=model_info.get("loader")),
    }
    records.atomic_write_json(where["adapter"] / "training_summary.json", summary)
    facts = {
        "base model": cfg.MODEL_NAME,
        "method": f"{'QLoRA (NF4 base)' if cfg.LOAD_IN_4BIT else 'LoRA'} SFT with TRL SFTTrainer, loss on completion tokens only",
        "training data": f"{where['data']} ({len(rows)} rows, from FinQA {bundle.describe()['source']} train split)",
        "optimizer steps": result.global_step,
        "final training loss": final_loss,
        f"dev strict accuracy (first {cfg.SFT_EVAL_LIMIT} dev examples)": _accuracy_text(eval_summary),
        "adapter sha256": fingerprint[:16],
    }
    records.atomic_write_text(
        where["adapter"] / "README.md",
        training.model_card("FinReason SFT adapter", facts, CARD_KEYS, cfg, notes="LoRA adapter for FinQA numerical reasoning: brief reasoning, a `Program:` line in the FinQA program language, then `Answer:`."),
    )
    print(f"[sft] adapter saved to {where['adapter']} (final loss {final_loss:.4f}, {result.global_step} steps)", file=sys.stderr)
    if eval_summary is not None:
        print(f"[sft] dev strict accuracy: {_accuracy_text(eval_summary)}", file=sys.stderr)
    return summary


def make_trainer(cfg: Any, where: dict[str, Path], rows: list[dict[str, Any]], model: Any, tokenizer: Any) -> Any:
    """TRL SFTTrainer on prompt-completion rows: TRL tokenizes prompt and prompt + completion and
    sets the prompt tokens' labels to -100, so only the assistant's answer is learned."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    sft_args = SFTConfig(
        output_dir=str(where["checkpoints"]),
        per_device_train_batch_size=cfg.SFT_BATCH_SIZE,
        gradient_accumulation_steps=cfg.SFT_GRAD_ACCUM,
        learning_rate=cfg.SFT_LEARNING_RATE,
        num_train_epochs=cfg.SFT_EPOCHS,
        max_steps=cfg.SFT_MAX_STEPS,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        max_length=cfg.MAX_SEQ_LEN,
        completion_only_loss=True,
        packing=False,
        **training.hardware_arguments(cfg),
    )
    dataset = Dataset.from_list([{"prompt": row["prompt"], "completion": row["completion"]} for row in rows])
    return SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[training.tensorboard_callback(where["runs"]), training.step_log_callback(where["log"], keys=("loss",))],
    )


def evaluate_adapter(cfg: Any, bundle: Any, where: dict[str, Path]) -> dict[str, Any]:
    """Shared evaluator on the first SFT_EVAL_LIMIT dev examples (it discards results of any
    other adapter by itself: its records carry a run fingerprint with the adapter's hash)."""
    from finreason import evaluation

    loaded = models.load_model(cfg, adapter=str(where["adapter"]))
    examples = dev_slice(bundle, cfg.SFT_EVAL_LIMIT)
    return evaluation.evaluate(loaded, examples, cfg, stage=STAGE, out_dir=cfg.OUTPUT_DIR, split="dev", data=bundle.describe())


def dev_slice(bundle: Any, limit: int) -> list[Any]:
    """The fixed dev slice every SFT evaluation uses: the first ``limit`` dev examples (0 = all)."""
    examples = list(bundle["dev"])
    return examples[:limit] if limit > 0 else examples


def _eval_brief(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if not summary:
        return None
    keys = ("stage", "n", "execution_accuracy", "execution_accuracy_ci95", "lenient_accuracy", "program_accuracy", "no_answer_rate", "records")
    return {key: summary.get(key) for key in keys}


def _accuracy_text(summary: dict[str, Any] | None) -> str:
    if not summary or summary.get("execution_accuracy") is None:
        return "not evaluated"
    low, high = (summary.get("execution_accuracy_ci95") or [None, None])[:2]
    ci = f", 95% CI {low:.3f}-{high:.3f}" if isinstance(low, float) and isinstance(high, float) else ""
    return f"{summary['execution_accuracy']:.3f} (n={summary.get('n')}{ci})"


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    main()
