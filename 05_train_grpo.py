"""GRPO on top of the SFT weights, rewarded by the evaluation's own correctness check.

Command:
    python 05_train_grpo.py [--PROFILE=cpu] [--KEY=value ...] [--fresh]
    accelerate launch --config_file accelerate/multi_gpu.yaml 05_train_grpo.py      (several GPUs)

Reads:  <OUTPUT_DIR>/sft/adapter/ or sft/model/     (from 04_train_sft.py; those weights keep training)
        <OUTPUT_DIR>/data/grpo_train.jsonl        ({"id", "prompt", "gold", "table"}; from 03_format_data.py)
Writes: <OUTPUT_DIR>/grpo/difficulty_samples.jsonl  (per-question correct counts; resumable, tied to the
                                                     SFT weights' SHA-256)
        <OUTPUT_DIR>/grpo/difficulty_filter.json    (how many questions were kept, and why)
        <OUTPUT_DIR>/grpo/run.json                  (this run's settings, data hash and SFT weights' SHA-256:
                                                     checkpoints and step log are resumed only by the same run)
        <OUTPUT_DIR>/grpo/checkpoints/checkpoint-N/ (every SAVE_STEPS; a killed run resumes here)
        <OUTPUT_DIR>/grpo/runs/                     (TensorBoard)
        <OUTPUT_DIR>/grpo/step_log.jsonl            (per step: mean reward, each reward function,
                                                     correctness_mixed_group_share = share of groups
                                                     whose correctness differs, i.e. that teach;
                                                     rewards/<name>/errors = completions whose reward
                                                     raised, see REWARD_MAX_ERROR_SHARE;
                                                     sampled_question_ids = the questions the step sampled)
        <OUTPUT_DIR>/grpo/adapter/ or grpo/model/   (weights + tokenizer + README.md + training_summary.json,
                                                     written together; the other kind goes to grpo/archive/)

Rewards: correctness_reward (REWARD_CORRECT_WEIGHT), the evaluation's own strict check, and
format_reward (REWARD_FORMAT_WEIGHT), from finreason.rewards. Difficulty filter (DIFFICULTY_FILTER,
finreason.difficulty): questions the SFT model always or never solves, sampled as GRPO samples,
are dropped before training, since their groups carry no gradient.
"""

from __future__ import annotations

import argparse
import logging

from finreason import configuration, console, data, difficulty, generation, models, outputlock, rewards, training
from finreason.layout import Layout
from finreason.training_record import TrainingRecord

_LOG = logging.getLogger("grpo")
SHOWN_PER_STEP = (
    "reward", "rewards/correctness_reward/mean", "correctness_mixed_group_share", "rewards/format_reward/mean", "loss",
    "rewards/correctness_reward/errors", "rewards/format_reward/errors",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start from the SFT weights")


def main(argv=None) -> dict:
    args, cfg = configuration.parse_args(__doc__, argv, add_arguments)
    # one writer per output folder (the main process of a launch holds it for every rank)
    with outputlock.hold(cfg.OUTPUT_DIR):
        return run(args, cfg)


def run(args: argparse.Namespace, cfg) -> dict:
    where = Layout.of(cfg)

    # inputs: the SFT weights and the prompts, checked before anything heavy loads
    sft_weights = training.require_weights(where, "sft", producer="04_train_sft.py")
    rows = data.first(training.load_rows(where.grpo_train, training.GRPO_FIELDS), cfg.GRPO_TRAIN_LIMIT)
    sft_fingerprint = models.weights_fingerprint(sft_weights)
    _LOG.info("%d candidate questions from %s", len(rows), where.grpo_train)

    # precision: decided once, for TRL's config, the run's identity and its record
    precision, why = training.precision_decision(cfg)
    _LOG.info("training precision: %s (%s)", precision, why)

    # TRL's config, GRPO_TRL_ARGS included: a field TRL refuses stops the run before the model loads
    use_vllm = generation.vllm_usable(cfg)
    grpo_args = training.grpo_config(cfg, where, use_vllm, precision)

    # seed
    from transformers import set_seed

    set_seed(cfg.SEED)

    # model: the SFT weights, trainable (an adapter keeps training its LoRA; a whole model, every weight)
    loaded = models.load_model(cfg, weights=sft_weights, trainable=True)
    trainable, total = training.trainable_parameters(loaded.model)
    if trainable == 0:
        raise training.TrainingInputError(f"the SFT weights at {sft_weights} loaded without trainable parameters")
    _LOG.info("continuing the SFT weights: %s trainable of %s parameters", f"{trainable:,}", f"{total:,}")

    # data: the difficulty filter keeps questions the SFT model sometimes (not always) solves
    processes = training.process_state()
    with processes.main_process_first():
        train_rows, filter_report = difficulty.difficulty_filter(loaded, rows, cfg, sft_fingerprint)
    train_rows = difficulty.fill_generation_batch(train_rows, cfg, processes.num_processes)
    training.require_same_on_every_process([row["id"] for row in train_rows], "difficulty-filtered questions")

    # rewards: the evaluation's correctness check, plus a small format bonus; errors counted for the
    # run, and the questions each update sampled noted for the step log
    reward_errors = rewards.RewardErrors.from_cfg(cfg)
    sampled = rewards.SampledQuestions()
    reward_funcs, _ = rewards.reward_functions(cfg, reward_errors, sampled)

    # trainer
    from datasets import Dataset
    from trl import GRPOTrainer

    # resume only the same run: same constants, prompts (after the filter) and SFT weights
    identity = training.run_identity(cfg, "grpo", train_rows, sft_fingerprint, precision)
    resume = training.prepare_run(where, "grpo", identity, args.fresh)
    trainer = GRPOTrainer(
        model=loaded.model,
        reward_funcs=reward_funcs,
        args=grpo_args,
        train_dataset=Dataset.from_list([{k: row[k] for k in ("id", "prompt", "gold", "table")} for row in train_rows]),
        processing_class=loaded.tokenizer,
        callbacks=[
            training.tensorboard_callback(where.runs("grpo")),
            training.step_log_callback(where.step_log("grpo"), SHOWN_PER_STEP, sampled=True, question_ids=sampled.take),
        ],
    )

    # train: resume from the newest complete checkpoint when this same run was killed
    result = training.train(trainer, resume)

    # save: weights, tokenizer, hash, training_summary.json and the model card, together; every
    # rank takes part in the save (ZeRO-3/FSDP gather the weights), the main process writes
    steps = [step_brief(entry) for entry in training.read_step_log(where.step_log("grpo")) if "reward" in entry]
    first, last = (steps[0], steps[-1]) if steps else (None, None)
    mixed = [step["correctness_mixed_group_share"] for step in steps if step["correctness_mixed_group_share"] is not None]
    questions = len({row["id"] for row in train_rows})
    record = training.save_stage(trainer, loaded.tokenizer, cfg, TrainingRecord(
        stage="grpo",
        sft_weights=str(sft_weights),
        sft_weights_sha256=sft_fingerprint,
        train_data=str(where.grpo_train),
        candidates=len(rows),
        train_rows=questions,
        difficulty_filter={k: v for k, v in filter_report.items() if k not in ("kept_ids", "counts")},
        global_step=result.global_step,
        resumed_from=resume,
        train_runtime_s=result.metrics.get("train_runtime"),
        use_vllm=use_vllm,
        precision=precision,
        steps=steps,
        mixed_group_share=sum(mixed) / len(mixed) if mixed else None,
        reward_errors={"raised": reward_errors.raised, "evaluated": reward_errors.evaluated, "first": reward_errors.first},
    ), card={
        "base model": cfg.MODEL_NAME,
        "method": f"GRPO (TRL GRPOTrainer, loss {cfg.GRPO_LOSS_TYPE}, beta {cfg.GRPO_BETA}) continuing the SFT weights",
        "started from": f"{sft_weights} (sha256 {sft_fingerprint[:16]})",
        "training prompts": f"{questions} of {len(rows)} candidates ({filter_report.get('decision')})",
        "optimizer steps": result.global_step,
        "precision": precision,
        "mean correctness, first -> last step": _pair(first, last, "correctness"),
        "groups with mixed correctness (mean over steps)": f"{sum(mixed) / len(mixed):.3f}" if mixed else "n/a",
        "reward evaluations that raised": f"{reward_errors.raised} of {reward_errors.evaluated}",
    })
    return {} if record is None else record.as_dict()


def step_brief(entry: dict) -> dict:
    """One step of the log in the names the benchmark and model card use."""
    return {
        "step": entry.get("step"),
        "mean_reward": entry.get("reward"),
        "correctness": entry.get("rewards/correctness_reward/mean"),
        "correctness_mixed_group_share": entry.get("correctness_mixed_group_share"),
        "format": entry.get("rewards/format_reward/mean"),
        "reward_errors": _total(entry, ("rewards/correctness_reward/errors", "rewards/format_reward/errors")),
        "zero_variance_share": entry.get("frac_reward_zero_std"),
        "loss": entry.get("loss"),
    }


def _total(entry: dict, keys: tuple[str, ...]) -> float | None:
    """The sum of the ``keys`` the entry has; None when it has none of them (a log from before they existed)."""
    present = [entry[key] for key in keys if entry.get(key) is not None]
    return sum(present) if present else None


def _pair(first: dict | None, last: dict | None, key: str) -> str:
    if not first or not last or first.get(key) is None or last.get(key) is None:
        return "n/a"
    return f"{first[key]:.3f} -> {last[key]:.3f}"


if __name__ == "__main__":
    console.run_main(main)
