"""Does training help, end to end on CPU? SmolLM2-135M: zero-shot vs SFT vs SFT+GRPO.

Command:
    .venv/bin/python benchmarks/cpu_learning.py [--train 256] [--dev 32] [--sft-steps 96]
        [--grpo-steps 3] [--grpo-candidates 8] [--sft-lr 5e-4] [--fresh] [--KEY=value ...]

Runs the real pipeline functions with config overrides (cpu profile), in its own output folder
<OUTPUT_DIR>/bench/cpu_learning/ so it never touches the main outputs:
  1. 03_format_data.main      SFT/GRPO rows from the first --train training examples
  2. evaluation.evaluate      zero-shot base model on the first --dev dev examples
  3. 04_train_sft.main        SFT for --sft-steps optimizer steps, then the same dev slice (stage sft_dev)
  4. 05_train_grpo.main       GRPO from the SFT adapter (difficulty filter included)
  5. evaluation.evaluate      the GRPO adapter on the same dev slice
Prints a table and writes <OUTPUT_DIR>/bench/cpu_learning.json: n, zero_shot_strict, sft_strict,
p_value (exact McNemar, SFT vs zero-shot on the same examples), grpo_strict, grpo_p_value_vs_sft,
grpo_first_step / grpo_last_step {mean_reward, zero_variance_share (total reward, TRL's
frac_reward_zero_std), correctness_zero_variance_share}, stage timings, provenance.

Every stage sees the cpu profile's prompts (PROMPT_TOKEN_BUDGET, the few-shot example), exactly
what run_pipeline.sh and the app use. Sized for under 30 minutes on 2 free CPU cores: on an idle
machine one SFT step of 2 sequences of ~800 tokens takes ~9 s and greedy evaluation ~2.5 s per
example. With n=32 the McNemar test only detects large differences; the point is the trend and
that the whole loop runs. Resumable: a killed run continues where it stopped (checkpoints, cached
evaluation records); --fresh starts over.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from finreason import cli, records
from finreason.scripts import load_script

NAME = "cpu_learning"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", type=int, default=256, help="training examples formatted for SFT (default 256)")
    parser.add_argument("--dev", type=int, default=32, help="dev examples evaluated at every stage (default 32)")
    parser.add_argument("--sft-steps", type=int, default=96, help="SFT optimizer steps (default 96: 192 sequences at the cpu batch of 2)")
    parser.add_argument("--grpo-steps", type=int, default=3, help="GRPO optimizer steps (default 3)")
    parser.add_argument("--grpo-candidates", type=int, default=8, help="questions screened by the difficulty filter (default 8)")
    parser.add_argument("--sft-lr", type=float, default=5e-4, help="SFT learning rate for this short run (default 5e-4)")
    parser.add_argument("--fresh", action="store_true", help="delete this benchmark's previous run first")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, cfg = cli.parse_args(__doc__, argv, add_arguments)
    from finreason import data, evaluation, models

    # paths: a private output folder; the converted base model is shared with the main outputs
    run_dir = Path(cfg.OUTPUT_DIR) / "bench" / NAME
    if args.fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    base_path = models.resolve_model_path(cfg.MODEL_NAME, cfg.OUTPUT_DIR)
    overrides = [
        f"--PROFILE={cfg.PROFILE}", f"--OUTPUT_DIR={run_dir}", f"--MODEL_NAME={base_path}", f"--SEED={cfg.SEED}",
        f"--DATA_DIR={cfg.DATA_DIR}", f"--DOWNLOAD_DATA={cfg.DOWNLOAD_DATA}",
        f"--PROMPT_TOKEN_BUDGET={cfg.PROMPT_TOKEN_BUDGET}", f"--FEW_SHOT_EXAMPLE={cfg.FEW_SHOT_EXAMPLE}",
        f"--MAX_SEQ_LEN={cfg.MAX_SEQ_LEN}",
        # SFT targets run to ~105 tokens; a shorter limit would cut correct answers off
        "--MAX_NEW_TOKENS=112",
        f"--SFT_TRAIN_LIMIT={args.train}", f"--SFT_MAX_STEPS={args.sft_steps}", f"--SFT_EVAL_LIMIT={args.dev}",
        f"--SAVE_STEPS={max(1, args.sft_steps // 4)}", f"--SFT_BATCH_SIZE={cfg.SFT_BATCH_SIZE}", "--SFT_GRAD_ACCUM=1",
        # twenty steps at the default 2e-4 barely move a zero-initialised LoRA (measured: greedy
        # output unchanged after 4 steps); a higher rate is the usual choice for so short a run
        f"--SFT_LEARNING_RATE={args.sft_lr}",
        f"--GRPO_TRAIN_LIMIT={args.grpo_candidates}", f"--DIFFICULTY_MAX_CANDIDATES={args.grpo_candidates}",
        f"--GRPO_MAX_STEPS={args.grpo_steps}", "--NUM_GENERATIONS=4", "--GRPO_BATCH_SIZE=4", "--GRPO_GRAD_ACCUM=1",
        "--GRPO_MAX_NEW_TOKENS=96", "--GRPO_LEARNING_RATE=2e-5",
    ]
    sub_cfg = cli.resolve_config(overrides)
    timings: dict[str, float] = {}

    # data: the real formatter on the first --train training examples
    started = time.time()
    load_script("03_format_data.py").main([*overrides, "--no-progress"])
    bundle = data.load_from_config(sub_cfg, splits=("dev",), verbose=False)
    sft = load_script("04_train_sft.py")
    examples = sft.dev_slice(bundle, args.dev)
    timings["format_s"] = time.time() - started

    # zero-shot: the base model on the fixed dev slice
    started = time.time()
    zero = evaluation.evaluate(models.load_model(sub_cfg), examples, sub_cfg, stage="bench_zero_shot", out_dir=run_dir, split="dev", data=bundle.describe())
    timings["zero_shot_eval_s"] = time.time() - started

    # sft: the real script (its closing evaluation is the same dev slice, stage sft_dev)
    started = time.time()
    sft_summary = sft.main(overrides)
    timings["sft_train_and_eval_s"] = time.time() - started

    # grpo: the real script from the SFT adapter, then the same dev slice
    started = time.time()
    grpo_summary = load_script("05_train_grpo.py").main(overrides)
    timings["grpo_train_s"] = time.time() - started
    started = time.time()
    grpo_loaded = models.load_model(sub_cfg, adapter=str(run_dir / "grpo" / "adapter"))
    grpo = evaluation.evaluate(grpo_loaded, examples, sub_cfg, stage="bench_grpo", out_dir=run_dir, split="dev", data=bundle.describe())
    timings["grpo_eval_s"] = time.time() - started

    # compare: paired strict verdicts on the same examples
    ids = [example.id for example in examples]
    verdicts = {stage: evaluation.read_stage(run_dir, stage) for stage in ("bench_zero_shot", "sft_dev", "bench_grpo")}
    strict = {stage: [bool(verdicts[stage][i].get("strict")) for i in ids] for stage in verdicts}
    result = {
        "n": len(ids),
        "train_examples": sft_summary.get("train_rows"),
        "sft_steps": sft_summary.get("global_step"),
        "zero_shot_strict": zero["execution_accuracy"],
        "sft_strict": (sft_summary.get("dev_eval") or {}).get("execution_accuracy"),
        "p_value": evaluation.mcnemar(strict["bench_zero_shot"], strict["sft_dev"]),
        "grpo_strict": grpo["execution_accuracy"],
        "grpo_p_value_vs_sft": evaluation.mcnemar(strict["sft_dev"], strict["bench_grpo"]),
        "grpo_steps": grpo_summary.get("global_step"),
        "grpo_difficulty_filter": grpo_summary.get("difficulty_filter"),
        "grpo_first_step": grpo_summary.get("first_step"),
        "grpo_last_step": grpo_summary.get("last_step"),
        "no_answer_rate": {"zero_shot": zero.get("no_answer_rate"), "sft": (sft_summary.get("dev_eval") or {}).get("no_answer_rate"), "grpo": grpo.get("no_answer_rate")},
        "sft_loss": {"first": sft_summary.get("first_loss"), "final": sft_summary.get("final_loss")},
        "timings_s": {key: round(value, 1) for key, value in timings.items()},
        "settings": {key: value for key, value in vars(args).items()},
        "provenance": records.provenance(sub_cfg, data=bundle.describe(), model=cfg.MODEL_NAME, loader=grpo_loaded.info.get("loader")),
    }
    out = Path(cfg.OUTPUT_DIR) / "bench" / f"{NAME}.json"
    records.atomic_write_json(out, result)
    print(table(result))
    print(f"wrote {out}", file=sys.stderr)
    return result


def table(result: dict[str, Any]) -> str:
    def pct(value: Any) -> str:
        return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "-"

    def num(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    first, last = result.get("grpo_first_step") or {}, result.get("grpo_last_step") or {}
    rows = [
        ("stage", "strict acc", "vs previous (McNemar p)"),
        ("zero-shot", pct(result["zero_shot_strict"]), ""),
        (f"SFT ({result['sft_steps']} steps)", pct(result["sft_strict"]), num(result["p_value"])),
        (f"SFT+GRPO ({result['grpo_steps']} steps)", pct(result["grpo_strict"]), num(result["grpo_p_value_vs_sft"])),
    ]
    width = [max(len(str(row[i])) for row in rows) for i in range(3)]
    lines = [f"cpu_learning: n={result['n']} dev examples, {result['train_examples']} SFT examples"]
    lines += ["  ".join(str(cell).ljust(width[i]) for i, cell in enumerate(row)) for row in rows]
    lines.append(
        f"GRPO mean reward {num(first.get('mean_reward'))} -> {num(last.get('mean_reward'))}, "
        f"zero-variance groups {num(first.get('zero_variance_share'))} -> {num(last.get('zero_variance_share'))} "
        f"(correctness alone {num(first.get('correctness_zero_variance_share'))} -> "
        f"{num(last.get('correctness_zero_variance_share'))}; first -> last step)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
