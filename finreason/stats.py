"""The statistics every result is reported with: bootstrap intervals, exact McNemar, paired
sign-flip tests, and the accuracy summary of a list of evaluation records.

Pure numpy and math; no model, no files.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

# Exact sign-flip tests enumerate 2^n sign patterns up to this n; above it they sample.
EXACT_SIGN_FLIP_MAX = 16
SIGN_FLIP_SAMPLES = 100_000


def rate(flags: Iterable[Any]) -> float | None:
    """Share of truthy values; None for no values."""
    values = [bool(flag) for flag in flags]
    return sum(values) / len(values) if values else None


def bootstrap_ci(values: Sequence[bool | float], samples: int, seed: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean; (None, None) for no values; the mean twice
    when ``samples`` is 0."""
    import numpy as np

    if len(values) == 0:
        return None, None
    data = np.asarray(values, dtype=float)
    if samples <= 0:
        mean = float(data.mean())
        return mean, mean
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))


def discordant(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(right only in ``a``, right only in ``b``): the pairs McNemar's test counts."""
    if len(a) != len(b):
        raise ValueError(f"paired results needed, got {len(a)} and {len(b)}")
    return sum(1 for x, y in zip(a, b) if x and not y), sum(1 for x, y in zip(a, b) if y and not x)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value (binomial test on the discordant pairs)."""
    only_a, only_b = discordant(a, b)
    discordant_pairs = only_a + only_b
    if discordant_pairs == 0:
        return 1.0
    tail = sum(math.comb(discordant_pairs, k) for k in range(min(only_a, only_b) + 1)) / 2.0 ** discordant_pairs
    return min(1.0, 2.0 * tail)


def sign_flip_p_value(differences: Sequence[float], seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(differences) == 0 (e.g. a question's mean reward
    after minus before): exact over every sign pattern for up to EXACT_SIGN_FLIP_MAX non-zero
    differences, Monte Carlo (SIGN_FLIP_SAMPLES, seeded) above."""
    import numpy as np

    nonzero = np.asarray([d for d in differences if d != 0], dtype=float)
    if nonzero.size == 0:
        return 1.0
    observed = abs(nonzero.sum()) - 1e-12  # float noise must not make the observed pattern "less extreme"
    if nonzero.size <= EXACT_SIGN_FLIP_MAX:
        patterns = ((np.arange(2 ** nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1) * 2 - 1
        return float(np.mean(np.abs(patterns @ nonzero) >= observed))
    patterns = np.random.default_rng(seed).choice((-1, 1), size=(SIGN_FLIP_SAMPLES, nonzero.size))
    # the observed pattern counts as one of the sampled ones, so a sampled p is never 0
    return float((np.sum(np.abs(patterns @ nonzero) >= observed) + 1) / (SIGN_FLIP_SAMPLES + 1))


def paired_change(before: Sequence[float], after: Sequence[float], samples: int, seed: int) -> dict[str, Any]:
    """``after`` minus ``before``, item by item (the same questions, in the same order): the mean
    difference, its bootstrap interval, the sign-flip p-value, and how many items rose and fell."""
    if len(before) != len(after):
        raise ValueError(f"paired_change needs paired values, got {len(before)} and {len(after)}")
    difference = [float(b) - float(a) for a, b in zip(before, after)]
    return {
        "difference": sum(difference) / len(difference) if difference else None,
        "difference_ci95": list(bootstrap_ci(difference, samples, seed)),
        "p_value": sign_flip_p_value(difference, seed=seed),
        "questions_up": sum(d > 0 for d in difference), "questions_down": sum(d < 0 for d in difference),
    }


def _group(records: Sequence[Mapping[str, Any]], keys_of: Callable[[Mapping[str, Any]], Iterable[Any]]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        for key in keys_of(record):
            groups[str(key)].append(record)
    return {
        key: {"n": len(group), "strict": rate(r.get("strict") for r in group), "lenient": rate(r.get("lenient") for r in group)}
        for key, group in sorted(groups.items())
    }


def summarize(records: Sequence[Mapping[str, Any]], bootstrap_samples: int = 1000, seed: int = 42) -> dict[str, Any]:
    """Accuracy with 95% bootstrap CIs and breakdowns of evaluation records; program accuracy is
    None when no completion contains a program (free-text answers)."""
    strict = [bool(r.get("strict")) for r in records]
    lenient = [bool(r.get("lenient")) for r in records]
    has_program = any(r.get("program") for r in records)
    return {
        "n": len(records),
        "execution_accuracy": rate(strict),
        "execution_accuracy_ci95": list(bootstrap_ci(strict, bootstrap_samples, seed)),
        "lenient_accuracy": rate(lenient),
        "lenient_accuracy_ci95": list(bootstrap_ci(lenient, bootstrap_samples, seed)),
        "program_accuracy": rate(r.get("program_correct") for r in records) if has_program else None,
        "no_answer_rate": rate(r.get("source") == "none" for r in records),
        "answer_source": {key: sum(1 for r in records if r.get("source") == key) for key in ("program", "answer", "none")},
        "by_operation": _group(records, lambda r: sorted(set(r.get("operations") or [])) or ["none"]),
        "by_num_steps": _group(records, lambda r: [r.get("num_steps")]),
        "by_evidence_source": _group(records, lambda r: [r.get("evidence_source")]),
        "bootstrap_samples": bootstrap_samples,
    }


def paired_table(strict_by_stage: Mapping[str, Sequence[bool]]) -> dict[str, Any]:
    """Accuracy of each stage on the same questions and an exact McNemar test for every pair."""
    names = list(strict_by_stage)
    rows = [{"stage": name, "n": len(flags), "execution_accuracy": rate(flags)} for name, flags in strict_by_stage.items()]
    pairs = []
    for left_index, left in enumerate(names):
        for right in names[left_index + 1:]:
            a, b = strict_by_stage[left], strict_by_stage[right]
            a_only, b_only = discordant(a, b)
            pairs.append({
                "a": left,
                "b": right,
                "a_only": a_only,
                "b_only": b_only,
                "p_value": mcnemar(a, b) if a else None,
            })
    return {"stages": rows, "pairs": pairs}


def percent(value: float | None, digits: int = 1) -> str:
    """"12.5%", or "n/a" for no value: the one way results print a share."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.{digits}f}%"
