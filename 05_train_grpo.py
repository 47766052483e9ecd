"""GRPO on top of the SFT adapter, rewarded by the evaluation's own correctness check.

Command:
    python 05_train_grpo.py [--PROFILE=cpu] [--KEY=value ...] [--fresh]
    accelerate launch --config_file accelerate/multi_gpu.yaml 05_train_grpo.py      (several GPUs)

Reads:  <OUTPUT_DIR>/sft/adapter/                 (from 04_train_sft.py; its LoRA weights keep training)
        <OUTPUT_DIR>/data/grpo_train.jsonl        ({"id", "prompt", "gold", "table"}; from 03_format_data.py)
Writes: <OUTPUT_DIR>/grpo/difficulty_samples.jsonl  (per-question correct counts; resumable, tied to the
                                                     SFT adapter's SHA-256)
        <OUTPUT_DIR>/grpo/difficulty_filter.json    (how many questions were kept, and why)
        <OUTPUT_DIR>/grpo/checkpoints/checkpoint-N/ (every SAVE_STEPS; a killed run resumes here)
        <OUTPUT_DIR>/grpo/runs/                     (TensorBoard)
        <OUTPUT_DIR>/grpo/step_log.jsonl            (per step: mean reward, each reward function,
                                                     frac_reward_zero_std = share of groups with no gradient)
        <OUTPUT_DIR>/grpo/adapter/                  (adapter + tokenizer + README.md + training_summary.json)

Rewards: correctness_reward (REWARD_CORRECT_WEIGHT) and format_reward (REWARD_FORMAT_WEIGHT) from
finreason.rewards. Difficulty filter (DIFFICULTY_FILTER): a group whose NUM_GENERATIONS completions
are all right or all wrong has zero advantage and teaches nothing, so questions the SFT model
always or never solves (sampled at GRPO_TEMPERATURE) are dropped before training.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

from finreason import cli, models, records, rewards, training

CARD_KEYS = (
    "MODEL_NAME", "LOAD_IN_4BIT", "COMPUTE_DTYPE", "GRPO_TRAIN_LIMIT", "NUM_GENERATIONS", "GRPO_MAX_NEW_TOKENS",
    "GRPO_TEMPERATURE", "GRPO_LEARNING_RATE", "GRPO_BETA", "GRPO_LOSS_TYPE", "GRPO_BATCH_SIZE", "GRPO_GRAD_ACCUM",
    "GRPO_MAX_STEPS", "REWARD_CORRECT_WEIGHT", "REWARD_FORMAT_WEIGHT", "DIFFICULTY_FILTER",
    "DIFFICULTY_MAX_CANDIDATES", "SEED",
)
STEP_KEYS = (
    "reward", "frac_reward_zero_std", "correctness_zero_variance_share", "rewards/correctness_reward/mean",
    "rewards/format_reward/mean", "loss",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start from the SFT adapter")


def paths(cfg: Any) -> dict[str, Path]:
    root = Path(cfg.OUTPUT_DIR)
    return {
        "data": root / "data" / "grpo_train.jsonl",
        "sft_adapter": root / "sft" / "adapter",
        "stage": root / "grpo",
        "checkpoints": root / "grpo" / "checkpoints",
        "runs": root / "grpo" / "runs",
        "log": root / "grpo" / "step_log.jsonl",
        "samples": root / "grpo" / "difficulty_samples.jsonl",
        "filter": root / "grpo" / "difficulty_filter.json",
        "adapter": root / "grpo" / "adapter",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, cfg = cli.parse_args(__doc__, argv, add_arguments)
    try:
        return run(args, cfg)
    except (training.TrainingInputError, models.ModelError) as error:
        sys.exit(f"05_train_grpo.py: {error}")


def run(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    where = paths(cfg)

    # inputs: the SFT adapter and the prompts, checked before anything heavy loads
    training.require_adapter(where["sft_adapter"], producer="04_train_sft.py")
    rows = training.load_rows(where["data"], training.GRPO_FIELDS, producer="03_format_data.py")
    if cfg.GRPO_TRAIN_LIMIT > 0:
        rows = rows[: cfg.GRPO_TRAIN_LIMIT]
    check_batch_geometry(cfg)
    sft_fingerprint = training.adapter_fingerprint(where["sft_adapter"])
    print(f"[grpo] {len(rows)} candidate questions from {where['data']}", file=sys.stderr)

    # seed
    import torch
    from accelerate import PartialState
    from transformers import set_seed

    set_seed(cfg.SEED)

    # model: base (NF4 when LOAD_IN_4BIT) + the SFT LoRA, loaded trainable (PEFT is_trainable=True)
    loaded = models.load_model(cfg, adapter=str(where["sft_adapter"]), trainable=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    trainable, total = training.trainable_parameters(model)
    if trainable == 0:
        raise training.TrainingInputError(f"the SFT adapter at {where['sft_adapter']} loaded without trainable weights")
    print(f"[grpo] continuing the SFT LoRA: {trainable:,} trainable of {total:,} parameters", file=sys.stderr)

    # difficulty filter: keep questions the SFT model sometimes (not always) solves
    with PartialState().main_process_first():
        train_rows, filter_report = difficulty_filter(model, tokenizer, rows, cfg, where, sft_fingerprint)

    # batch: TRL's sampler drops a generation batch with fewer distinct prompts than it needs
    per_generation = cfg.GRPO_BATCH_SIZE * cfg.GRPO_GRAD_ACCUM * PartialState().num_processes // cfg.NUM_GENERATIONS
    if len(train_rows) < per_generation:
        print(f"[grpo] only {len(train_rows)} questions for {per_generation} per generation batch: repeating them", file=sys.stderr)
        train_rows = [train_rows[i % len(train_rows)] for i in range(per_generation)]

    # trainer
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if args.fresh:
        shutil.rmtree(where["checkpoints"], ignore_errors=True)
        where["log"].unlink(missing_ok=True)
    funcs, weights = rewards.reward_functions(cfg)
    use_vllm = bool(cfg.USE_VLLM and torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None)
    grpo_args = GRPOConfig(
        output_dir=str(where["checkpoints"]),
        per_device_train_batch_size=cfg.GRPO_BATCH_SIZE,
        gradient_accumulation_steps=cfg.GRPO_GRAD_ACCUM,
        learning_rate=cfg.GRPO_LEARNING_RATE,
        max_steps=cfg.GRPO_MAX_STEPS,
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
        **training.hardware_arguments(cfg),
    )
    step_log = training.step_log_callback(where["log"], keys=STEP_KEYS, echo=lambda line: print(f"[grpo] {line}", file=sys.stderr))
    dataset = Dataset.from_list([{k: row[k] for k in ("id", "prompt", "gold", "table")} for row in train_rows])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=grpo_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[training.tensorboard_callback(where["runs"]), step_log],
    )

    # train: resume from the newest complete checkpoint when a previous run was killed
    resume = None if args.fresh else training.last_checkpoint(where["checkpoints"])
    if resume:
        print(f"[grpo] resuming from {resume}", file=sys.stderr)
    result = trainer.train(resume_from_checkpoint=resume)
    if not trainer.is_world_process_zero():
        return {}

    # save
    trainer.save_model(str(where["adapter"]))
    tokenizer.save_pretrained(str(where["adapter"]))
    history = training.read_step_log(where["log"])
    steps = [entry for entry in history if "reward" in entry]
    first, last = (step_brief(steps[0]), step_brief(steps[-1])) if steps else (None, None)
    summary = {
        "stage": "grpo",
        "adapter": str(where["adapter"]),
        "adapter_sha256": training.adapter_fingerprint(where["adapter"]),
        "sft_adapter": str(where["sft_adapter"]),
        "sft_adapter_sha256": sft_fingerprint,
        "train_data": str(where["data"]),
        "train_data_sha256": training.file_sha256(where["data"]),
        "candidates": len(rows),
        "train_rows": len({row["id"] for row in train_rows}),
        "difficulty_filter": {k: v for k, v in filter_report.items() if k != "kept_ids"},
        "global_step": result.global_step,
        "resumed_from": resume,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "use_vllm": use_vllm,
        "first_step": first,
        "last_step": last,
        "provenance": records.provenance(cfg, model=cfg.MODEL_NAME, adapter=str(where["sft_adapter"]), loader=loaded.info.get("loader")),
    }
    records.atomic_write_json(where["adapter"] / "training_summary.json", summary)
    facts = {
        "base model": cfg.MODEL_NAME,
        "method": f"GRPO (TRL GRPOTrainer, loss {cfg.GRPO_LOSS_TYPE}, beta {cfg.GRPO_BETA}) continuing the SFT LoRA",
        "started from": f"{where['sft_adapter']} (sha256 {sft_fingerprint[:16]})",
        "training prompts": f"{summary['train_rows']} of {len(rows)} candidates ({filter_report.get('decision')})",
        "optimizer steps": result.global_step,
        "mean reward, first -> last step": _pair(first, last, "mean_reward"),
        "groups without gradient, first -> last step": _pair(first, last, "zero_variance_share"),
    }
    records.atomic_write_text(
        where["adapter"] / "README.md",
        training.model_card("FinReason GRPO adapter", facts, CARD_KEYS, cfg, notes="LoRA adapter after GRPO with verifiable rewards (strict FinQA correctness + format)."),
    )
    print(f"[grpo] adapter saved to {where['adapter']} ({result.global_step} steps)", file=sys.stderr)
    return summary


def check_batch_geometry(cfg: Any) -> None:
    """TRL needs whole groups per generation batch; say which constants to change, up front."""
    if cfg.NUM_GENERATIONS < 2:
        raise training.TrainingInputError("NUM_GENERATIONS must be at least 2 (GRPO compares completions within a group)")
    per_generation = cfg.GRPO_BATCH_SIZE * cfg.GRPO_GRAD_ACCUM
    if per_generation % cfg.NUM_GENERATIONS:
        raise training.TrainingInputError(
            f"GRPO_BATCH_SIZE * GRPO_GRAD_ACCUM ({per_generation}) must be a multiple of NUM_GENERATIONS "
            f"({cfg.NUM_GENERATIONS}); e.g. --GRPO_BATCH_SIZE={cfg.NUM_GENERATIONS}"
        )


def difficulty_filter(model: Any, tokenizer: Any, rows: list[dict[str, Any]], cfg: Any, where: dict[str, Path], fingerprint: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows to train on, and the report written to difficulty_filter.json.

    Samples are cached per question in difficulty_samples.jsonl under a key of the SFT adapter's
    hash and the sampling settings, so a killed or repeated run resamples nothing it already has.
    """
    n = cfg.NUM_GENERATIONS
    if not cfg.DIFFICULTY_FILTER:
        report = {"enabled": False, "decision": "filter off: all candidates", "candidates": len(rows), "kept": len(rows)}
        records.atomic_write_json(where["filter"], {**report, "provenance": records.provenance(cfg)})
        return rows, report
    limit = cfg.DIFFICULTY_MAX_CANDIDATES
    candidates = rows[:limit] if limit > 0 else rows
    key = f"{fingerprint}|n={n}|t={cfg.GRPO_TEMPERATURE}|max={cfg.GRPO_MAX_NEW_TOKENS}|seed={cfg.SEED}"
    done = {r["id"]: r for r in records.read_jsonl(where["samples"]) if r.get("key") == key and isinstance(r.get("correct"), int)}
    todo = [row for row in candidates if row["id"] not in done]
    print(f"[grpo] difficulty filter: {len(candidates)} candidates, {len(done)} cached, sampling {len(todo)} x {n}", file=sys.stderr)
    if todo:
        records.repair_jsonl(where["samples"])
        samples = training.sample_completions(
            model, tokenizer, [row["prompt"] for row in todo], num_samples=n,
            max_new_tokens=cfg.GRPO_MAX_NEW_TOKENS, temperature=cfg.GRPO_TEMPERATURE,
            batch_size=max(n, cfg.EVAL_BATCH_SIZE), seed=cfg.SEED, stop_ids=models.stop_token_ids(tokenizer, model),
        )
        for index, completions in samples:
            row = todo[index]
            scores = rewards.correctness_reward(completions, gold=[row["gold"]] * n, table=[row["table"]] * n)
            record = {"id": row["id"], "key": key, "correct": int(sum(scores)), "n": n}
            records.append_jsonl(where["samples"], [record])
            done[row["id"]] = record
    counts = [done[row["id"]]["correct"] for row in candidates]
    kept = [row for row, c in zip(candidates, counts) if 0 < c < n]
    report = {
        "enabled": True,
        "candidates": len(candidates),
        "kept": len(kept),
        "all_correct": sum(1 for c in counts if c == n),
        "all_wrong": sum(1 for c in counts if c == 0),
        "num_generations": n,
        "temperature": cfg.GRPO_TEMPERATURE,
        "max_new_tokens": cfg.GRPO_MAX_NEW_TOKENS,
        "sft_adapter_sha256": fingerprint,
        "unscreened_dropped": len(rows) - len(candidates),
        "kept_ids": [row["id"] for row in kept],
    }
    if kept:
        report["decision"] = f"kept {len(kept)} mixed-outcome questions"
        train_rows = kept
    else:
        report["decision"] = "no question had mixed outcomes: trained on the unfiltered candidates"
        train_rows = rows
        print(
            f"[grpo] difficulty filter kept NONE of {len(candidates)} questions ({report['all_correct']} always right, "
            f"{report['all_wrong']} always wrong at temperature {cfg.GRPO_TEMPERATURE}); falling back to the unfiltered "
            "set, where most groups will carry no gradient. Consider more SFT, a higher GRPO_TEMPERATURE or more "
            "DIFFICULTY_MAX_CANDIDATES.",
            file=sys.stderr,
        )
    print(f"[grpo] difficulty filter: {report['decision']} ({report['all_correct']} always right, {report['all_wrong']} always wrong)", file=sys.stderr)
    records.atomic_write_json(where["filter"], {**report, "provenance": records.provenance(cfg, adapter=str(where["sft_adapter"]))})
    return train_rows, report


def step_brief(entry: dict[str, Any]) -> dict[str, Any]:
    """One step of the log in the names the benchmark and model card use."""
    return {
        "step": entry.get("step"),
        "mean_reward": entry.get("reward"),
        "zero_variance_share": entry.get("frac_reward_zero_std"),
        "correctness_zero_variance_share": entry.get("correctness_zero_variance_share"),
        "correctness": entry.get("rewards/correctness_reward/mean"),
        "format": entry.get("rewards/format_reward/mean"),
        "loss": entry.get("loss"),
    }


def _pair(first: dict[str, Any] | None, last: dict[str, Any] | None, key: str) -> str:
    if not first or not last or first.get(key) is None or last.get(key) is None:
        return "n/a"
    return f"{first[key]:.3f} -> {last[key]:.3f}"


if __name__ == "__main__":
    main()
