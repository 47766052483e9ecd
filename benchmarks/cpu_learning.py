"""Does training help, end to end on a CPU? SmolLM2-135M through the real scripts: zero-shot vs SFT vs GRPO.

Command:
    .venv/bin/python benchmarks/cpu_learning.py [--dev 100] [--fixed-set 64] [--grpo-steps 30] [--fresh]
                                                [--previous RUN_DIR] [--KEY=value ...]
    .venv/bin/python benchmarks/cpu_learning.py --EVIDENCE_MODE=retrieved      (the standard setting: the learned
                                                                          fact ranker's top RETRIEVER_TOP_K facts)

Runs the pipeline's own scripts as subprocesses on the cpu profile (plus your overrides), each
timed and its peak memory recorded (finreason.measure), in a private folder
<OUTPUT_DIR>/bench/cpu_learning/<evidence mode>/, so it never touches the main outputs:
  1. 03_format_data.py                      SFT and GRPO rows
  2. 02_zero_shot_baseline.py --split dev   the base model on the first --dev dev questions
  3. 04_train_sft.py                        SFT, then the same dev questions (its closing evaluation)
  4. 05_train_grpo.py                       difficulty filter (NUM_GENERATIONS samples of each of the first
                                            DIFFICULTY_MAX_CANDIDATES training questions with the SFT model:
                                            the fixed set's "before"), then GRPO
  5. 06_evaluate.py --stage grpo            the GRPO model on the same dev questions
  6. the fixed set again with the GRPO model (finreason.difficulty.correct_counts, same settings): "after"
     (with --DIFFICULTY_FILTER=false no filter samples it, so "before" is sampled here with the SFT model)
  7. pass@k: the same dev questions sampled --pass-k times (default 8) at GRPO_TEMPERATURE with the SFT
     and the GRPO weights (the same sampler and check): how often a stage can write a right program,
     beside how often its greedy answer is right (pass_at_k; GRPO should close that gap), and GRPO's
     per-sample correctness minus SFT's, question by question (grpo_vs_sft_per_sample: CI, sign-flip p)
  8. the fixed set split by what GRPO did with each question (fixed_set_by_training, from the step
     log's sampled_question_ids): trained on, kept by the filter but never reached, screened out;
     each group's correctness before and after with CI and sign-flip p. A kept question the run
     never reached is the carry-over control: the filter chose it, the updates never saw it
Prints a table and writes <OUTPUT_DIR>/bench/cpu_learning.json (and cpu_learning_<mode>.json, so
both evidence modes' results are kept) with: n, evidence_mode, zero_shot_strict, sft_strict,
grpo_strict (fractions, with 95% bootstrap CIs), p_value (exact McNemar, SFT vs zero-shot),
grpo_p_value_vs_sft, grpo_mixed_group_share (share of all GRPO groups whose correctness differs),
grpo_fixed_set_reward_before/after (mean correctness of the sampled completions on the fixed set)
with the paired sign-flip p-value and CIs, the targets and whether each was met, per-stage time and
peak memory, the precision each stage trained in, and provenance. With --previous RUN_DIR (an
earlier run's folder, copied aside): against_previous, each stage's accuracy then and now on the
same questions, the exact McNemar p-value, which way it moved and whether it is within noise
(p > 0.05): a change that makes this benchmark faster must keep every stage within noise.

Resumable: every script resumes by itself (checkpoints, evaluation records, cached samples), so a
killed run continues where it stopped; --fresh starts over. Measure on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from finreason import configuration, console, data, difficulty, evaluation, measure, models, retrieval, stats, storage, training_record, trainset
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.prompts import evidence_label
from finreason.provenance import provenance
from finreason.training import read_step_log

NAME = "cpu_learning"
ROOT = Path(__file__).resolve().parent.parent
_LOG = logging.getLogger(NAME)
# The targets for this benchmark: what "training helps" has to mean here.
TARGETS = {
    "sft_gain_at_least": 0.10,  # SFT strict - zero-shot strict
    "sft_strict_at_least": 0.14,  # retrieved evidence must reach this (it was 8% with the budget-filling selection)
    "sft_p_value_below": 0.01,  # exact McNemar, SFT vs zero-shot
    "mixed_group_share_at_least": 0.25,  # GRPO groups whose correctness differs
    "fixed_set_p_value_below": 0.05,  # fixed-set correctness higher after GRPO, paired sign-flip test
    "grpo_below_sft_at_most": 0.03,  # GRPO may not lose more than 3 points on the same dev questions
    # issue 25 (learning per example): the standard setting's SFT, the easier gold setting's best stage
    "retrieved_sft_strict_at_least": 0.24,
    "gold_best_stage_strict_at_least": 0.32,
}
# samples per dev question for pass@k, drawn as GRPO draws them (GRPO_TEMPERATURE, GRPO_MAX_NEW_TOKENS):
# how often a stage can write a right program, beside how often its greedy answer is right
PASS_K = 8
SAMPLED_STAGES = ("sft", "grpo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dev", type=int, default=100, help="dev questions evaluated at every stage (default 100)")
    parser.add_argument("--fixed-set", type=int, default=64,
                        help="training questions in the fixed set, screened by the difficulty filter (default 64)")
    parser.add_argument("--grpo-steps", type=int, default=30, help="GRPO steps, one question each on the cpu profile (default 30)")
    parser.add_argument("--pass-k", type=int, default=PASS_K,
                        help=f"samples per dev question for pass@k of SFT and GRPO (default {PASS_K}; 0 = skip)")
    parser.add_argument("--fresh", action="store_true", help="delete this evidence mode's previous run first")
    parser.add_argument("--previous", type=Path, metavar="RUN_DIR",
                        help="an earlier run's folder (a copy of <OUTPUT_DIR>/bench/cpu_learning/<mode>): each stage's "
                             "answers are paired with its answers (exact McNemar), to show a speed-up kept the results")


def main(argv=None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = configuration.parse_args(__doc__, ["--PROFILE=cpu", *argv], add_arguments)
    overrides, _ = configuration.config_tokens(argv)

    # paths: a private output folder per evidence mode; the converted base model is shared
    run_dir = Layout.of(cfg).bench_dir / NAME / cfg.EVIDENCE_MODE
    if args.previous is not None and not any(Layout(args.previous).eval_records(stage).is_file() for stage in STAGES):
        raise BenchmarkError(f"--previous {args.previous} holds no evaluation records (eval/<stage>.jsonl): give a cpu_learning run folder")
    if args.previous is not None and args.previous.resolve() == run_dir.resolve():
        raise BenchmarkError(f"--previous {args.previous} is this run's own folder: copy the earlier run elsewhere first")
    if args.fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    base_path = models.resolve_model_path(cfg.MODEL_NAME, cfg.OUTPUT_DIR)
    # the benchmark's own sizes first, so a --KEY=value the user gives still wins
    common = [
        "--PROFILE=cpu", f"--GRPO_MAX_STEPS={args.grpo_steps}", f"--GRPO_TRAIN_LIMIT={args.fixed_set}",
        f"--DIFFICULTY_MAX_CANDIDATES={args.fixed_set}", *overrides, f"--OUTPUT_DIR={run_dir}", f"--MODEL_NAME={base_path}",
        "--EVAL_SPLIT=dev", f"--EVAL_LIMIT={args.dev}", "--quiet",
    ]
    run_cfg = configuration.resolve_config([token for token in common if token.startswith("--") and "=" in token])
    where = Layout(run_dir)

    # stages: the real scripts, each timed with its peak memory
    steps = [
        ("format", ["03_format_data.py", "--no-progress"]),
        ("zero_shot", ["02_zero_shot_baseline.py"]),
        ("sft", ["04_train_sft.py"]),
        ("grpo_train", ["05_train_grpo.py"]),
        ("grpo_eval", ["06_evaluate.py", "--stage", "grpo"]),
    ]
    timings: dict[str, dict[str, Any]] = {}
    for name, (script, *flags) in steps:
        _LOG.info("%s: %s", name, script)
        record = measure.run([sys.executable, str(ROOT / script), *flags, *common], name, where.root / "steps.jsonl")
        if record["exit_code"]:
            raise BenchmarkError(f"{script} failed (exit {record['exit_code']}); see its output above")
        timings[name] = {"seconds": record["seconds"], "peak_rss_gb": record["peak_rss_gb"]}

    # the fixed set before and after GRPO: the filter's candidates, sampled exactly as the filter samples them
    started = time.time()
    candidates = data.first(data.first(list(storage.read_jsonl(where.grpo_train)), run_cfg.GRPO_TRAIN_LIMIT),
                            run_cfg.DIFFICULTY_MAX_CANDIDATES)
    before = fixed_set_before(run_cfg, where, candidates)
    grpo_weights = where.weights("grpo")
    loaded = models.load_model(run_cfg, weights=grpo_weights)
    after = difficulty.correct_counts(loaded, candidates, run_cfg, models.weights_fingerprint(grpo_weights),
                                      where.root / "fixed_set_samples.jsonl")
    timings["fixed_set_after"] = {"seconds": round(time.time() - started, 1), "peak_rss_gb": None}

    # pass@k: the same dev questions sampled PASS_K times with the SFT and the GRPO weights
    sampled = {}
    if args.pass_k:
        started = time.time()
        sampled = {stage: dev_pass_counts(run_cfg, where, stage, args.pass_k) for stage in SAMPLED_STAGES}
        timings["pass_at_k"] = {"seconds": round(time.time() - started, 1), "peak_rss_gb": None}

    result = summarize(run_cfg, where, before, after, args.dev)
    result["pass_at_k"] = pass_at_k(result, where, sampled, args.pass_k, run_cfg) if sampled else None
    result["met"] = targets_met(result)
    result["precision"] = precisions(where)
    if args.previous is not None:
        result["against_previous"] = against_previous(where, Layout(args.previous), str(args.previous))
    result.update(
        timings=timings,
        total_seconds=round(sum(t["seconds"] for t in timings.values()), 1),
        peak_rss_gb=max(t["peak_rss_gb"] or 0 for t in timings.values()),
        provenance=provenance(run_cfg, model=cfg.MODEL_NAME, weights=str(grpo_weights),
                              weights_sha256=models.weights_fingerprint(grpo_weights),
                              data=_data_description(where)),
    )
    bench = Layout.of(cfg)
    storage.atomic_write_json(bench.bench_result(NAME), result)
    storage.atomic_write_json(bench.bench_result(f"{NAME}_{cfg.EVIDENCE_MODE}"), result)
    print(table(result))
    _LOG.info("wrote %s and %s", bench.bench_result(NAME), bench.bench_result(f"{NAME}_{cfg.EVIDENCE_MODE}"))
    return result


class BenchmarkError(FinReasonError):
    """A stage of the benchmark failed."""


STAGES = ("zero_shot", "sft", "grpo")


def against_previous(where: Layout, previous: Layout, label: str) -> dict[str, Any]:
    """Each stage's strict accuracy now and in the ``previous`` run on the questions both answered,
    the exact McNemar p-value of the pairs, which way it moved, and whether that is within noise
    (p > 0.05), with the precision each run trained in."""
    stages = {}
    for stage in STAGES:
        now, before = evaluation.read_stage(where, stage), evaluation.read_stage(previous, stage)
        shared = sorted(set(now) & set(before))
        if not shared:
            continue
        a = [bool(before[i].get("strict")) for i in shared]
        b = [bool(now[i].get("strict")) for i in shared]
        p_value = stats.mcnemar(a, b)
        only_previous, only_now = stats.discordant(a, b)
        moved = "up" if sum(b) > sum(a) else "down" if sum(b) < sum(a) else "same"
        stages[stage] = {"n": len(shared), "previous_strict": stats.rate(a), "strict": stats.rate(b),
                         "only_previous_right": only_previous, "only_now_right": only_now,
                         "p_value": p_value, "moved": moved, "within_noise": p_value > NOISE_P_VALUE}
    return {"previous": label, "precision": {"previous": precisions(previous), "now": precisions(where)}, "stages": stages}


# a speed-up keeps the results when no stage's answers differ from the previous run's at this level
NOISE_P_VALUE = 0.05


def precisions(where: Layout) -> dict[str, str | None]:
    """The precision each trained stage recorded; before it was recorded a CPU trained in the
    COMPUTE_DTYPE it loaded the weights in."""
    found: dict[str, str | None] = {}
    for stage in ("sft", "grpo"):
        weights = where.weights(stage)
        try:
            summary = json.loads((weights / training_record.TRAINING_SUMMARY).read_text(encoding="utf-8")) if weights else None
        except (OSError, ValueError):
            summary = None
        if isinstance(summary, dict):
            found[stage] = summary.get("precision") or summary.get("provenance", {}).get("config", {}).get("COMPUTE_DTYPE")
    return found


def fixed_set_before(cfg: Any, where: Layout, candidates: list[dict[str, Any]]) -> dict[str, int]:
    """The SFT model's correct counts on the fixed set: the difficulty filter's own when it ran
    (DIFFICULTY_FILTER=true), else sampled here with the same settings, seeds and cache key."""
    report = json.loads(where.difficulty_report.read_text(encoding="utf-8"))
    if report.get("enabled"):
        return report["counts"]
    sft_weights = where.weights("sft")
    loaded = models.load_model(cfg, weights=sft_weights)
    return difficulty.correct_counts(loaded, candidates, cfg, models.weights_fingerprint(sft_weights), where.difficulty_samples)


def dev_pass_counts(cfg: Any, where: Layout, stage: str, k: int) -> dict[str, int]:
    """{dev question id: strictly correct samples of ``k``} for the dev questions ``stage`` was
    evaluated on, with its weights: the difficulty filter's sampler and check (GRPO_TEMPERATURE,
    GRPO_MAX_NEW_TOKENS), the evaluation's prompts, cached and resumable in pass_at_k.<stage>.jsonl."""
    evaluated = evaluation.read_stage(where, stage)
    examples = [example for example in data.load_from_config(cfg, splits=("dev",), verbose=False)["dev"] if example.id in evaluated]
    weights = where.weights(stage)
    loaded = models.load_model(cfg, weights=weights)
    rows = trainset.grpo_rows(examples, loaded.tokenizer, cfg)
    _LOG.info("pass@%d: %s on %d dev questions", k, stage, len(rows))
    return difficulty.correct_counts(loaded, rows, cfg, models.weights_fingerprint(weights), where.root / f"pass_at_k.{stage}.jsonl",
                                     samples=k)


def pass_at_k(result: dict[str, Any], where: Layout, counts: dict[str, dict[str, int]], k: int, cfg: Any) -> dict[str, Any]:
    """Per sampled stage, on the dev questions every stage answered: pass@k (a question counts when
    any of its k samples is right), the mean per-sample correctness, the greedy accuracy on the same
    questions, and the gap between pass@k and greedy that GRPO should close."""
    stages: dict[str, Any] = {}
    for stage, found in counts.items():
        greedy_records = evaluation.read_stage(where, stage)
        ids = sorted(set(found) & set(greedy_records))
        passed = [found[i] > 0 for i in ids]
        greedy = [bool(greedy_records[i].get("strict")) for i in ids]
        stages[stage] = {
            "n": len(ids), "pass_at_k": stats.rate(passed),
            "pass_at_k_ci95": list(stats.bootstrap_ci(passed, cfg.BOOTSTRAP_SAMPLES, cfg.SEED)),
            "sample_correct": sum(found[i] for i in ids) / (k * len(ids)) if ids else None,
            "greedy": stats.rate(greedy),
            "gap": _points(stats.rate(passed) - stats.rate(greedy)) if ids else None,
            # of the questions some sample solves, how many the greedy answer solves
            "greedy_among_passed": stats.rate([g for g, p in zip(greedy, passed) if p]),
        }
    found = {"k": k, "temperature": cfg.GRPO_TEMPERATURE, "max_new_tokens": cfg.GRPO_MAX_NEW_TOKENS, "stages": stages}
    if {"sft", "grpo"} <= set(counts):
        found["grpo_vs_sft_per_sample"] = per_sample_change(counts["sft"], counts["grpo"], k, cfg)
    return found


def per_sample_change(sft: dict[str, int], grpo: dict[str, int], k: int, cfg: Any) -> dict[str, Any]:
    """GRPO's per-sample correctness on the dev questions minus SFT's, question by question: the
    paired measure most sensitive to pass@k becoming pass@1 (a greedy flip needs a whole question to
    change; this counts each of its k samples), with its CI and sign-flip p-value."""
    ids = sorted(set(sft) & set(grpo))
    return {"n": len(ids), **stats.paired_change([sft[i] / k for i in ids], [grpo[i] / k for i in ids], cfg.BOOTSTRAP_SAMPLES, cfg.SEED)}


def fixed_set_by_training(cfg: Any, where: Layout, steps: list[dict[str, Any]], before: dict[str, int],
                          after: dict[str, int]) -> dict[str, Any] | None:
    """The fixed set in three groups, each with its mean correctness before and after GRPO and the
    paired change (CI, sign-flip p): ``trained`` (some update sampled it: the sampled_question_ids
    of ``steps``, GRPO's step log as ``read_step_log`` gives it), ``kept_not_trained`` (the filter
    kept it, no update reached it) and ``screened_out`` (the filter dropped it: always or never
    right). None for a step log from before the ids were recorded. Without a filter (or when it
    kept nothing and GRPO fell back to every candidate), every candidate counts as kept."""
    if not any("sampled_question_ids" in entry for entry in steps):
        return None
    trained = {question for entry in steps for question in entry.get("sampled_question_ids") or ()}
    report = json.loads(where.difficulty_report.read_text(encoding="utf-8"))
    kept = set(report.get("kept_ids") or before)
    members = {
        "trained": lambda question: question in trained,
        "kept_not_trained": lambda question: question in kept and question not in trained,
        "screened_out": lambda question: question not in kept and question not in trained,
    }
    groups = cfg.NUM_GENERATIONS
    split = {}
    for name, member in members.items():
        ids = [question for question in sorted(before) if member(question)]
        rate_before = [before[question] / groups for question in ids]
        rate_after = [after[question] / groups for question in ids]
        split[name] = {"n": len(ids), "before": float(np.mean(rate_before)) if ids else None,
                       "after": float(np.mean(rate_after)) if ids else None,
                       **stats.paired_change(rate_before, rate_after, cfg.BOOTSTRAP_SAMPLES, cfg.SEED)}
    return split


def summarize(cfg: Any, where: Layout, before: dict[str, int], after: dict[str, int], n: int) -> dict[str, Any]:
    """The benchmark's numbers from the files the scripts wrote."""
    records = {stage: evaluation.read_stage(where, stage) for stage in ("zero_shot", "sft", "grpo")}
    ids = sorted(set.intersection(*(set(r) for r in records.values())))
    strict = {stage: [bool(records[stage][i].get("strict")) for i in ids] for stage in records}
    samples, seed = cfg.BOOTSTRAP_SAMPLES, cfg.SEED
    groups = cfg.NUM_GENERATIONS
    per_question_before = np.array([before[i] / groups for i in sorted(before)])
    per_question_after = np.array([after[i] / groups for i in sorted(before)])
    fixed_change = stats.paired_change(per_question_before, per_question_after, samples, seed)
    log = read_step_log(where.step_log("grpo"))
    # with TRL's num_iterations > 1 only the updates that sampled log rewards; every update logs a loss
    steps = [entry for entry in log if "correctness_mixed_group_share" in entry]
    mixed = [entry["correctness_mixed_group_share"] for entry in steps]
    acc = {stage: stats.rate(flags) for stage, flags in strict.items()}
    retriever = retrieval.used_by(cfg)
    result = {
        "n": len(ids),
        "evidence_mode": cfg.EVIDENCE_MODE,
        "evidence": evidence_label(cfg.EVIDENCE_MODE, retriever),
        "retriever": retriever,
        "zero_shot_strict": acc["zero_shot"],
        "sft_strict": acc["sft"],
        "grpo_strict": acc["grpo"],
        "ci95": {stage: list(stats.bootstrap_ci(flags, samples, seed)) for stage, flags in strict.items()},
        "p_value": stats.mcnemar(strict["zero_shot"], strict["sft"]),
        "grpo_p_value_vs_sft": stats.mcnemar(strict["sft"], strict["grpo"]),
        "grpo_mixed_group_share": sum(mixed) / len(mixed) if mixed else None,
        "grpo_steps": sum(1 for entry in log if "loss" in entry),
        "grpo_sampled_steps": len(steps),
        "fixed_set_by_training": fixed_set_by_training(cfg, where, log, before, after),
        "grpo_correctness_first_last": [steps[0].get("rewards/correctness_reward/mean"), steps[-1].get("rewards/correctness_reward/mean")] if steps else None,
        "fixed_set": {"questions": len(before), "samples_per_question": groups, "temperature": cfg.GRPO_TEMPERATURE,
                      "max_new_tokens": cfg.GRPO_MAX_NEW_TOKENS},
        "grpo_fixed_set_reward_before": float(per_question_before.mean()) if before else None,
        "grpo_fixed_set_reward_after": float(per_question_after.mean()) if before else None,
        "grpo_fixed_set_reward_ci95": {
            "before": list(stats.bootstrap_ci(per_question_before, samples, seed)),
            "after": list(stats.bootstrap_ci(per_question_after, samples, seed)),
            "difference": fixed_change["difference_ci95"],
        },
        "grpo_fixed_set_p_value": fixed_change["p_value"],
        "requested_dev": n,
    }
    result["targets"] = TARGETS
    result["met"] = targets_met(result)
    return result


def targets_met(result: dict[str, Any]) -> dict[str, bool]:
    """Each target against the numbers; a number that is missing (no records, no GRPO steps) meets nothing."""
    def known(*keys: str) -> bool:
        return all(result.get(key) is not None for key in keys)

    sft, zero, grpo = result.get("sft_strict"), result.get("zero_shot_strict"), result.get("grpo_strict")
    before, after = result.get("grpo_fixed_set_reward_before"), result.get("grpo_fixed_set_reward_after")
    fixed_p = result.get("grpo_fixed_set_p_value")
    return {
        "sft_gain": known("sft_strict", "zero_shot_strict") and _points(sft - zero) >= TARGETS["sft_gain_at_least"],
        "sft_at_least_14_percent": known("sft_strict") and sft >= TARGETS["sft_strict_at_least"],
        "sft_p_value": known("p_value") and result["p_value"] < TARGETS["sft_p_value_below"],
        "mixed_group_share": known("grpo_mixed_group_share") and result["grpo_mixed_group_share"] >= TARGETS["mixed_group_share_at_least"],
        "fixed_set_not_lower": known("grpo_fixed_set_reward_before", "grpo_fixed_set_reward_after") and after >= before,
        "fixed_set_significantly_higher": (known("grpo_fixed_set_reward_before", "grpo_fixed_set_reward_after", "grpo_fixed_set_p_value")
                                           and after > before and fixed_p < TARGETS["fixed_set_p_value_below"]),
        "grpo_within_3_points_of_sft": known("sft_strict", "grpo_strict") and _points(sft - grpo) <= TARGETS["grpo_below_sft_at_most"],
        "grpo_not_below_sft": known("sft_strict", "grpo_strict") and grpo >= sft,
        "grpo_above_sft": known("sft_strict", "grpo_strict") and grpo > sft,
        "retrieved_sft_at_least_24_percent": (result.get("evidence_mode") == "retrieved" and known("sft_strict")
                                              and sft >= TARGETS["retrieved_sft_strict_at_least"]),
        "gold_best_stage_at_least_32_percent": (result.get("evidence_mode") == "gold" and known("sft_strict", "grpo_strict")
                                                and max(sft, grpo) >= TARGETS["gold_best_stage_strict_at_least"]),
        "greedy_closer_to_pass_at_k_after_grpo": _gap_closed(result.get("pass_at_k")),
    }


def _gap_closed(found: dict[str, Any] | None) -> bool:
    """Whether GRPO's greedy accuracy is closer to its pass@k than SFT's was (both measured)."""
    stages = (found or {}).get("stages") or {}
    gaps = [stages.get(stage, {}).get("gap") for stage in ("sft", "grpo")]
    return None not in gaps and _points(gaps[1]) < _points(gaps[0])


def _points(difference: float) -> float:
    """A difference of two rates without float noise: 0.24 - 0.14 is 0.09999999999999998, which
    missed a 10-point bar it meets, and 0.35 - 0.24 came out below 0.34 - 0.23, which called an
    unchanged gap to pass@k closed (a measured run)."""
    return round(difference, 9)


def table(result: dict[str, Any]) -> str:
    pct = stats.percent

    def row(label: str, stage: str, p_value: float | None, timed: str) -> tuple[str, ...]:
        low, high = result["ci95"][stage]
        timing = result["timings"][timed]
        return (label, pct(result[f"{stage}_strict"]), f"[{pct(low)}, {pct(high)}]", _num(p_value, ".2g"),
                f"{timing['seconds']:.0f}s", f"{timing['peak_rss_gb']:.2f} GiB")

    fixed = result["grpo_fixed_set_reward_ci95"]
    stages = [row("zero-shot", "zero_shot", None, "zero_shot"), row("SFT", "sft", result["p_value"], "sft"),
              row("SFT+GRPO", "grpo", result["grpo_p_value_vs_sft"], "grpo_train")]
    lines = [
        console.table(stages, ("stage", "strict", "95% CI", "McNemar p vs previous", "time", "peak mem"),
                      title=f"cpu_learning: n={result['n']} dev questions, {result['evidence']}"),
        f"GRPO: {result['grpo_steps']} steps ({result['grpo_sampled_steps']} sampled), "
        f"groups with mixed correctness {_num(result['grpo_mixed_group_share'])}; "
        f"fixed set ({result['fixed_set']['questions']} training questions x {result['fixed_set']['samples_per_question']} samples) "
        f"mean correctness {_num(result['grpo_fixed_set_reward_before'])} -> {_num(result['grpo_fixed_set_reward_after'])} "
        f"(difference 95% CI [{_num(fixed['difference'][0])}, {_num(fixed['difference'][1])}], sign-flip p = "
        f"{_num(result['grpo_fixed_set_p_value'], '.2g')})",
        *_by_training_lines(result.get("fixed_set_by_training")),
        *_pass_at_k_lines(result.get("pass_at_k")),
        f"targets met: {', '.join(f'{k}={v}' for k, v in result['met'].items())}",
        f"total {result['total_seconds'] / 60:.1f} min, largest stage {result['peak_rss_gb']:.2f} GiB",
    ]
    previous = result.get("against_previous")
    if previous:
        lines.append(f"against {previous['previous']} (precision {previous['precision']['previous']} -> {previous['precision']['now']}): " + "; ".join(
            f"{stage} {pct(row['previous_strict'])} -> {pct(row['strict'])} ({row['moved']}, McNemar p = {row['p_value']:.2g}"
            f"{'' if row['within_noise'] else ', NOT within noise'})" for stage, row in previous["stages"].items()))
    return "\n".join(lines)


def _by_training_lines(split: dict[str, Any] | None) -> list[str]:
    if not split:
        return []
    return ["fixed set by what GRPO did: " + "; ".join(
        f"{name.replace('_', ' ')} {group['n']}: {_num(group['before'])} -> {_num(group['after'])}"
        + (f" (p = {group['p_value']:.2g})" if group["n"] else "") for name, group in split.items())]


def _pass_at_k_lines(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    pct = stats.percent
    return [f"{stage}: greedy {pct(row['greedy'])}, pass@{found['k']} {pct(row['pass_at_k'])} "
            f"[{pct(row['pass_at_k_ci95'][0])}, {pct(row['pass_at_k_ci95'][1])}], per sample {_num(row['sample_correct'])} "
            f"(temperature {found['temperature']:g}); greedy right on {pct(row['greedy_among_passed'])} of the questions a sample solves"
            for stage, row in found["stages"].items()] + _per_sample_line(found.get("grpo_vs_sft_per_sample"))


def _per_sample_line(change: dict[str, Any] | None) -> list[str]:
    if not change or change["difference"] is None:
        return []
    low, high = change["difference_ci95"]
    return [f"per sample, GRPO - SFT on the same dev questions: {change['difference']:+.3f} (95% CI [{low:+.3f}, {high:+.3f}], "
            f"sign-flip p = {change['p_value']:.2g}; {change['questions_up']} questions up, {change['questions_down']} down)"]


def _num(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else f"{value:{spec}}"


def _data_description(where: Layout) -> dict[str, Any] | None:
    try:
        return json.loads(where.data_manifest.read_text(encoding="utf-8"))["provenance"]["data"]
    except (OSError, ValueError, KeyError):
        return None


if __name__ == "__main__":
    console.run_main(main)
