"""GRPO rewards: the evaluation's own correctness check, plus a small format bonus.

Every function has TRL's reward signature ``(completions, **columns) -> list[float]``: TRL
passes the sampled completions plus every dataset column (``gold``, ``table``, ``id``) and a few
extras of its own (``prompts``, ``completion_ids``, ``trainer_state``, ``log_metric``...), so
each function takes ``**kwargs`` and ignores what it does not need. TRL logs each function
under its ``__name__`` (``rewards/correctness_reward/mean``...), which is why these are plain
module-level functions rather than lambdas or partials.

Rewards never raise: a hostile completion (empty, binary junk, a 1 MB string, a malformed
message list) scores 0.0, because one exception inside a reward would kill a long RL run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from finreason import scoring

RewardFunc = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The assistant text of one completion, whether TRL gave a string or a message list.

    Conversational completions look like ``[{"role": "assistant", "content": ...}]`` and the
    content may itself be a list of ``{"type": "text", "text": ...}`` parts.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        return "\n".join(_content_text(m.get("content")) for m in (assistant or messages))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def _column(values: Any, index: int) -> Any:
    """``values[index]`` when TRL passed a per-completion column, else None (missing column)."""
    if isinstance(values, Sequence) and not isinstance(values, str) and index < len(values):
        return values[index]
    return None


def is_correct(completion: Any, gold: Any, table: Any) -> bool:
    """The strict verdict of ``scoring.score_completion``: the same check the evaluation uses."""
    if gold is None:
        return False
    try:
        return bool(scoring.score_completion(completion_text(completion), gold, table).strict)
    except Exception:  # noqa: BLE001 - a reward must never kill training; a crash scores as wrong
        return False


def correctness_reward(completions: Sequence[Any], gold: Sequence[Any] | None = None, table: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """1.0 when the completion's Program (or Answer) strictly matches the gold answer, else 0.0.

    Inside GRPOTrainer it also logs, per step, ``correctness_mixed_group_share`` (the share of
    groups whose correctness differs inside the group: the groups correctness can teach) and
    ``correctness_zero_variance_share`` (its complement). TRL's own ``frac_reward_zero_std`` is on
    the weighted total, where the format bonus can make a group look mixed although no
    completion in it is correct.
    """
    scores = [1.0 if is_correct(c, _column(gold, i), _column(table, i)) else 0.0 for i, c in enumerate(completions)]
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        mixed = mixed_group_share(scores, kwargs.get("prompts"))
        if mixed is not None:
            log_metric("correctness_mixed_group_share", mixed)
            log_metric("correctness_zero_variance_share", 1.0 - mixed)
    return scores


def mixed_group_share(scores: Sequence[float], prompts: Any) -> float | None:
    """Share of groups (runs of identical consecutive prompts, TRL's layout) whose scores differ."""
    if not isinstance(prompts, Sequence) or len(prompts) != len(scores) or not scores:
        return None
    groups: list[list[float]] = [[scores[0]]]
    for previous, prompt, score in zip(prompts, prompts[1:], scores[1:]):
        if prompt == previous:
            groups[-1].append(score)
        else:
            groups.append([score])
    return sum(1 for group in groups if max(group) != min(group)) / len(groups)


def format_reward(completions: Sequence[Any], table: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """1.0 when the completion has a Program that executes (on its table, when given) or an
    Answer that parses, else 0.0."""
    rewards = []
    for i, completion in enumerate(completions):
        try:
            ok = bool(scoring.has_parseable_answer(completion_text(completion), _column(table, i)))
        except Exception:  # noqa: BLE001 - same reason as is_correct
            ok = False
        rewards.append(1.0 if ok else 0.0)
    return rewards


def reward_functions(cfg: Any) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions and their weights for GRPOTrainer(reward_funcs=..., args.reward_weights=...)."""
    return [correctness_reward, format_reward], [float(cfg.REWARD_CORRECT_WEIGHT), float(cfg.REWARD_FORMAT_WEIGHT)]
