"""Supervised fine-tuning on the formatted FinQA training targets: QLoRA, or every weight.

Command:
    python 04_train_sft.py [--PROFILE=cpu] [--KEY=value ...] [--no-eval] [--fresh]
    accelerate launch --config_file accelerate/multi_gpu.yaml 04_train_sft.py      (several GPUs)

Reads:  <OUTPUT_DIR>/data/sft_train.jsonl ({"id", "prompt", "completion", "gold", "table"}; from 03_format_data.py),
        the base model MODEL_NAME, and FinQA's EVAL_SPLIT for the closing evaluation.
Writes: <OUTPUT_DIR>/sft/run.json                    (the settings, data hash and base weights' SHA-256
                                                       of this run: checkpoints and step log are resumed
                                                       only by the same run, else removed, saying why)
        <OUTPUT_DIR>/sft/checkpoints/checkpoint-N/   (every SAVE_STEPS; a killed run resumes here)
        <OUTPUT_DIR>/sft/runs/                        (TensorBoard: tensorboard --logdir outputs/sft/runs)
        <OUTPUT_DIR>/sft/step_log.jsonl               (one line per optimizer step, and with SFT_HOLDOUT > 0
                                                       one per epoch: the held-out training rows' score)
        <OUTPUT_DIR>/sft/adapter/ or sft/model/       (FINETUNE=lora: a LoRA adapter; FINETUNE=full: the
                                                       whole model; + tokenizer, README.md model card and
                                                       training_summary.json with provenance; written
                                                       together. Weights of the other kind are moved to
                                                       sft/archive/<kind>-<time>/, and GRPO weights
                                                       trained from the old ones are named stale)
        <OUTPUT_DIR>/eval/sft.*                       (the evaluation 06_evaluate.py --stage sft runs:
                                                       the first EVAL_LIMIT examples of EVAL_SPLIT; 06
                                                       then finds it done)

Epochs: with SFT_HOLDOUT > 0, that many training rows are held out and answered after every
epoch (at most SFT_EPOCHS); training stops after SFT_PATIENCE epochs without a better score, and
the best epoch's weights are the ones saved (finreason.epoch_choice; the curve is in the record).

The loss is on the completion tokens only: the rows are TRL "prompt-completion" data, for which
SFTTrainer masks the prompt tokens out of the labels (completion_only_loss, set explicitly).
"""

from __future__ import annotations

import argparse
import gc
import logging

from finreason import configuration, console, epoch_choice, evaluation, models, outputlock, storage, training, trainset
from finreason.layout import Layout
from finreason.training_record import TrainingRecord

_LOG = logging.getLogger("sft")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-eval", action="store_true", help="skip the closing evaluation (06_evaluate.py --stage sft runs it later)")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start from step 0")


def main(argv=None) -> dict:
    args, cfg = configuration.parse_args(__doc__, argv, add_arguments)
    # one writer per output folder (the main process of a launch holds it for every rank)
    with outputlock.hold(cfg.OUTPUT_DIR):
        return run(args, cfg)


def run(args: argparse.Namespace, cfg) -> dict:
    where = Layout.of(cfg)

    # data: validated before anything heavy is imported or loaded; SFT_HOLDOUT rows are kept out
    # of training to choose the epoch (never dev or test)
    rows = trainset.first_examples(training.load_rows(where.sft_train, training.SFT_FIELDS), cfg.SFT_TRAIN_LIMIT)
    rows, held_out = epoch_choice.hold_out(rows, cfg.SFT_HOLDOUT, cfg.SEED)

    # precision: decided once, for TRL's config, the run's identity and its record
    precision, why = training.precision_decision(cfg)
    _LOG.info("training precision: %s (%s)", precision, why)

    # TRL's config, SFT_TRL_ARGS included: a field TRL refuses stops the run before the model loads
    sft_args = training.sft_config(cfg, where, precision)

    # tokenizer: the base model's, from the local folder the model loads from too; rows longer
    # than MAX_SEQ_LEN would be truncated through their Program/Answer lines
    base_path = models.resolve_model_path(cfg.MODEL_NAME, cfg.OUTPUT_DIR)
    tokenizer = models.load_tokenizer(cfg, base_path)
    rows, too_long = training.split_by_length(rows, tokenizer, cfg.MAX_SEQ_LEN)
    if too_long:
        _LOG.warning("skipped %d rows longer than MAX_SEQ_LEN=%d tokens (e.g. %s); raise MAX_SEQ_LEN or lower "
                     "PROMPT_TOKEN_BUDGET to keep them", len(too_long), cfg.MAX_SEQ_LEN, ", ".join(too_long[:3]))
    if not rows:
        raise training.TrainingInputError(
            f"every training row is longer than MAX_SEQ_LEN={cfg.MAX_SEQ_LEN} tokens; raise --MAX_SEQ_LEN "
            "or rerun 03_format_data.py with a lower --PROMPT_TOKEN_BUDGET"
        )
    _LOG.info("%d training rows from %s%s", len(rows), where.sft_train,
              f" ({len(held_out)} more held out to choose the epoch)" if held_out else "")

    # seed
    from transformers import set_seed

    set_seed(cfg.SEED)

    # model: FINETUNE=lora: the base (NF4 when LOAD_IN_4BIT) with fresh LoRA weights on the
    # LORA_TARGET_MODULES it has; FINETUNE=full: every weight of the base
    loaded = models.load_model(cfg, trainable=True, base_path=base_path, tokenizer=tokenizer)
    # SFTTrainer pads on the right for training; save_stage restores the generation-side padding
    tokenizer.padding_side = "right"

    # trainer
    from datasets import Dataset
    from trl import SFTTrainer

    # resume only the same run: same constants, rows and base weights (else start afresh, saying why)
    identity = training.run_identity(cfg, "sft", rows, models.weights_fingerprint(base_path), precision)
    resume = training.prepare_run(where, "sft", identity, args.fresh)
    callbacks = [training.tensorboard_callback(where.runs("sft")), training.step_log_callback(where.step_log("sft"), ("loss",))]
    if held_out:
        callbacks.append(epoch_choice.epoch_rule_callback(held_out, tokenizer, cfg, where.step_log("sft")))
    trainer = SFTTrainer(
        model=loaded.model,
        args=sft_args,
        train_dataset=Dataset.from_list([{"prompt": row["prompt"], "completion": row["completion"]} for row in rows]),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainable, total = training.trainable_parameters(trainer.model)
    _LOG.info("trainable parameters: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))

    # train: resume from the newest complete checkpoint when this same run was killed; then the
    # best epoch's weights when held-out rows chose one
    result = training.train(trainer, resume)
    choice = epoch_choice.restore_best(trainer) if held_out else None

    # save: weights, tokenizer, hash, training_summary.json and the model card, together; every
    # rank takes part in the save (ZeRO-3/FSDP gather the weights), the main process writes
    main_process = trainer.is_world_process_zero()
    losses = [entry["loss"] for entry in training.read_step_log(where.step_log("sft")) if "loss" in entry] if main_process else []
    final_loss = losses[-1] if losses else result.training_loss
    record = training.save_stage(trainer, tokenizer, cfg, TrainingRecord(
        stage="sft",
        train_data=str(where.sft_train),
        train_rows=len(rows),
        skipped_too_long=too_long,
        global_step=result.global_step,
        resumed_from=resume,
        first_loss=losses[0] if losses else None,
        final_loss=final_loss,
        train_runtime_s=result.metrics.get("train_runtime"),
        trainable_parameters=trainable,
        epoch_choice=choice,
        precision=precision,
        model_info=loaded.info,
    ), card={
        "base model": cfg.MODEL_NAME,
        "method": _method(cfg) + " SFT with TRL SFTTrainer, loss on completion tokens only",
        "training data": f"{where.sft_train} ({len(rows)} rows; {cfg.SFT_TARGET} targets)",
        "optimizer steps": result.global_step,
        **({"epoch kept": epoch_choice.card_text(choice)} if choice else {}),
        "precision": precision,
        "final training loss": final_loss,
    }, data=_read_manifest_data(where) if main_process else None)
    if record is None:
        return {}

    # evaluate: what 06_evaluate.py --stage sft runs (EVAL_SPLIT, EVAL_LIMIT), on the saved weights
    if not args.no_eval:
        del trainer, loaded
        gc.collect()
        record = training.add_evaluation(record, evaluation.run_stage(cfg, "sft"))
        _LOG.info("evaluation: %s", training.evaluation_text(record.evaluation))
    return record.as_dict()


def _method(cfg) -> str:
    if cfg.FINETUNE == "full":
        return "full fine-tuning (every weight)"
    return "QLoRA (NF4 base)" if cfg.LOAD_IN_4BIT else "LoRA"


def _read_manifest_data(where: Layout) -> dict | None:
    """The data description 03_format_data.py recorded for these rows (None if unreadable)."""
    recorded = storage.read_json_object(where.data_manifest).get("provenance")
    return recorded.get("data") if isinstance(recorded, dict) else None


if __name__ == "__main__":
    console.run_main(main)
