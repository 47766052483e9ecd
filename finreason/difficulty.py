"""Which questions GRPO trains on, and how often a model solves them when sampled as GRPO samples.

A group whose NUM_GENERATIONS completions are all right or all wrong has zero advantage and
teaches nothing, so ``difficulty_filter`` keeps the candidate questions the SFT model sometimes,
not always, solves. ``correct_counts`` is the measurement behind it: NUM_GENERATIONS completions
per question at GRPO_TEMPERATURE and GRPO_MAX_NEW_TOKENS (exactly how GRPO samples), each scored
by the GRPO reward's own correctness check. Counts are cached per question in a JSONL file under
a key of the weights' SHA-256 and the sampling settings, and of the question's prompt, gold and
table (``row_sha256``: a reformatted training set is sampled again), so a killed or repeated run
resamples nothing it has. The same counts over the same candidates, measured again after GRPO, are the
fixed-set reward (benchmarks/cpu_learning.py): per-step training rewards move with whichever
questions were drawn, a fixed set does not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finreason import data, generation, rewards, storage
from finreason.layout import Layout
from finreason.provenance import provenance

_LOG = logging.getLogger(__name__)


def sampling_key(fingerprint: str, cfg: Any, samples: int | None = None) -> str:
    n = samples or cfg.NUM_GENERATIONS
    return f"{fingerprint}|n={n}|t={cfg.GRPO_TEMPERATURE}|max={cfg.GRPO_MAX_NEW_TOKENS}|seed={cfg.SEED}"


def correct_counts(loaded: Any, rows: Sequence[dict[str, Any]], cfg: Any, fingerprint: str, cache: str | os.PathLike,
                   progress: bool = True, samples: int | None = None) -> dict[str, int]:
    """{question id: how many of ``samples`` (default NUM_GENERATIONS) samples are strictly correct}
    for ``rows`` (GRPO rows: id, prompt, gold, table), cached in ``cache`` (see the module docstring)."""
    n = samples or cfg.NUM_GENERATIONS
    key = sampling_key(fingerprint, cfg, n)
    cache = Path(cache)
    # a count is reused only for the same question asked the same way: id, prompt and gold
    done = {(r["id"], r.get("row_sha256")): int(r["correct"]) for r in storage.read_jsonl(cache)
            if r.get("key") == key and isinstance(r.get("correct"), int)}
    keys = [(row["id"], row_sha256(row)) for row in rows]
    todo = [row for row, row_key in zip(rows, keys) if row_key not in done]
    _LOG.info("sampling %d questions x %d at temperature %g (%d cached)", len(todo), n, cfg.GRPO_TEMPERATURE, len(rows) - len(todo))
    if todo:
        storage.repair_jsonl(cache)
    # Fixed batches of ``rows``, each seeded by its position: a resumed run samples every question
    # exactly as an uninterrupted one would, and two models sampled over the same rows share the
    # random stream question by question (the fixed-set comparison is paired). A batch is written
    # whole, so a kill keeps every finished batch.
    per_batch = max(1, cfg.EVAL_BATCH_SIZE)
    errors = rewards.RewardErrors.from_cfg(cfg)
    for start in range(0, len(rows), per_batch):
        chunk = rows[start:start + per_batch]
        chunk_keys = keys[start:start + per_batch]
        if all(row_key in done for row_key in chunk_keys):
            continue
        samples = generation.sample(
            loaded, [row["prompt"] for row in chunk], n, cfg.GRPO_MAX_NEW_TOKENS, cfg.GRPO_TEMPERATURE,
            batch_size=per_batch * n, seed=cfg.SEED + start, progress=False,
        )
        lines = []
        for row, row_key, completions in zip(chunk, chunk_keys, samples):
            if row_key in done:
                continue
            scores = rewards.correctness_reward(completions, gold=[row["gold"]] * n, table=[row["table"]] * n, reward_errors=errors)
            done[row_key] = int(sum(scores))
            lines.append({"id": row["id"], "row_sha256": row_key[1], "key": key, "correct": done[row_key], "n": n})
        storage.append_jsonl(cache, lines)
        if progress:
            _LOG.info("sampled %d/%d questions", min(start + per_batch, len(rows)), len(rows))
    return {row["id"]: done[row_key] for row, row_key in zip(rows, keys)}


def row_sha256(row: dict[str, Any]) -> str:
    """What a count depends on besides the weights and sampling settings: the prompt, gold and table."""
    text = json.dumps([row["prompt"], row["gold"], row["table"]], ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def difficulty_filter(loaded: Any, rows: list[dict[str, Any]], cfg: Any, fingerprint: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows to train on, the report written to grpo/difficulty_filter.json)."""
    where = Layout.of(cfg)
    n = cfg.NUM_GENERATIONS
    if not cfg.DIFFICULTY_FILTER:
        report = {"enabled": False, "decision": "filter off: all candidates", "candidates": len(rows), "kept": len(rows)}
        storage.atomic_write_json(where.difficulty_report, {**report, "provenance": provenance(cfg)})
        return rows, report
    candidates = data.first(rows, cfg.DIFFICULTY_MAX_CANDIDATES)
    counts = correct_counts(loaded, candidates, cfg, fingerprint, where.difficulty_samples)
    kept = [row for row in candidates if 0 < counts[row["id"]] < n]
    report = {
        "enabled": True,
        "candidates": len(candidates),
        "kept": len(kept),
        "all_correct": sum(1 for c in counts.values() if c == n),
        "all_wrong": sum(1 for c in counts.values() if c == 0),
        "mean_correct": sum(counts.values()) / (n * len(counts)) if counts else None,
        "num_generations": n,
        "temperature": cfg.GRPO_TEMPERATURE,
        "max_new_tokens": cfg.GRPO_MAX_NEW_TOKENS,
        "weights_sha256": fingerprint,
        "unscreened_dropped": len(rows) - len(candidates),
        "counts": counts,
        "kept_ids": [row["id"] for row in kept],
    }
    if kept:
        report["decision"] = f"kept {len(kept)} mixed-outcome questions"
        train_rows = kept
    else:
        report["decision"] = "no question had mixed outcomes: trained on the unfiltered candidates"
        train_rows = rows
        _LOG.warning(
            "difficulty filter kept NONE of %d questions (%d always right, %d always wrong at temperature %g); "
            "falling back to the unfiltered set, where most groups will carry no gradient. Consider more SFT, "
            "a higher GRPO_TEMPERATURE or more DIFFICULTY_MAX_CANDIDATES.",
            len(candidates), report["all_correct"], report["all_wrong"], cfg.GRPO_TEMPERATURE,
        )
    _LOG.info("difficulty filter: %s (%d always right, %d always wrong)", report["decision"], report["all_correct"], report["all_wrong"])
    storage.atomic_write_json(where.difficulty_report, {**report, "provenance": provenance(cfg, weights_sha256=fingerprint)})
    return train_rows, report


def fill_generation_batch(rows: list[dict[str, Any]], cfg: Any, processes: int = 1) -> list[dict[str, Any]]:
    """``rows`` repeated up to one generation batch's distinct prompts: TRL's sampler silently
    drops a generation batch with fewer prompts than it needs, which would train on nothing."""
    per_generation = cfg.GRPO_BATCH_SIZE * cfg.GRPO_GRAD_ACCUM * processes // cfg.NUM_GENERATIONS
    if not rows or len(rows) >= per_generation:
        return rows
    _LOG.info("only %d questions for %d per generation batch: repeating them", len(rows), per_generation)
    return [rows[i % len(rows)] for i in range(per_generation)]
