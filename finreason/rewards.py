"""GRPO rewards: the evaluation's own correctness check, plus a small format bonus.

Every function has TRL's reward signature ``(completions, **columns) -> list[float]``: TRL
passes the sampled completions plus every dataset column (``gold``, ``table``, ``id``) and a few
extras of its own (``prompts``, ``completion_ids``, ``trainer_state``, ``log_metric``...), so
each function takes ``**kwargs`` and ignores what it does not need. TRL logs each function
under its name (``rewards/correctness_reward/mean``...), which is why these are module-level
functions (``reward_functions`` binds a run's ``RewardErrors`` with ``functools.partial``, whose
name TRL reads through) rather than lambdas.

A hostile completion (empty, binary junk, a 1 MB string, a malformed message list) scores 0.0
without an exception: the scorer is built never to raise. When it does raise anyway, that is a
bug in the scorer, and it must not pass for "the model is never correct": ``RewardErrors``
scores that completion 0.0 so one exception does not end the step, logs the first traceback
once, logs each call's count as the step-log metric ``rewards/<name>/errors``, and stops the
run with ``RewardError`` once more than REWARD_MAX_ERROR_SHARE of the evaluations so far raised.

``SampledQuestions`` notes the ``id`` of every question whose completions the reward scored: the
questions a run trained on, which the step log records per update (``sampled_question_ids``), so
a benchmark can compare trained questions with kept ones the run never reached.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from finreason import scoring
from finreason.errors import FinReasonError

RewardFunc = Callable[..., list[float]]
_LOG = logging.getLogger(__name__)


class RewardError(FinReasonError, RuntimeError):
    """Too many reward evaluations raised: the reward code is failing, not the model."""


class RewardErrors:
    """Reward evaluations that raised during one run, counted per completion and reward function."""

    def __init__(self, max_share: float = 1.0) -> None:
        self.max_share = float(max_share)
        self.evaluated = 0
        self.raised = 0
        self.first: str | None = None

    @classmethod
    def from_cfg(cls, cfg: Any) -> "RewardErrors":
        return cls(cfg.REWARD_MAX_ERROR_SHARE)

    def scores(self, name: str, completions: Sequence[Any], score_one: Callable[[int, Any], bool], log_metric: Any = None) -> list[float]:
        """1.0 / 0.0 per completion from ``score_one(index, completion)``; a call that raises
        scores 0.0 and is counted (see the module docstring)."""
        scores, raised = [], 0
        for index, completion in enumerate(completions):
            try:
                scores.append(1.0 if score_one(index, completion) else 0.0)
            except Exception as error:  # noqa: BLE001 - one bad completion must not end the step; counted and shown
                raised += 1
                scores.append(0.0)
                if self.first is None:
                    self.first = f"{type(error).__name__}: {error}"
                    _LOG.error("%s raised on a completion (scored 0; later errors are counted, not shown):", name, exc_info=error)
        self.evaluated += len(completions)
        self.raised += raised
        if callable(log_metric):
            log_metric(f"rewards/{name}/errors", float(raised))
        if self.raised > self.max_share * self.evaluated:
            raise RewardError(
                f"{self.raised} of {self.evaluated} reward evaluations raised ({self.raised / self.evaluated:.1%}, more than "
                f"REWARD_MAX_ERROR_SHARE={self.max_share:g}): the reward code is failing, not the model; the first error "
                f"was {self.first} (traceback logged above). Fix it, or raise --REWARD_MAX_ERROR_SHARE to train anyway"
            )
        return scores


class SampledQuestions:
    """The ids of the questions the reward scored since ``take`` last emptied it, in order, once each."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def add(self, ids: Any) -> None:
        """Note TRL's per-completion ``id`` column (a group repeats its question's id); no column, nothing."""
        if isinstance(ids, Sequence) and not isinstance(ids, str):
            for question in ids:
                if question is not None and str(question) not in self.ids:
                    self.ids.append(str(question))

    def take(self) -> list[str]:
        """The ids noted so far, forgetting them."""
        taken, self.ids = self.ids, []
        return taken


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
    return bool(scoring.score_completion(completion_text(completion), gold, table).strict)


def correctness_reward(completions: Sequence[Any], gold: Sequence[Any] | None = None, table: Sequence[Any] | None = None,
                       reward_errors: RewardErrors | None = None, sampled: SampledQuestions | None = None,
                       **kwargs: Any) -> list[float]:
    """1.0 when the completion's Program (or Answer) strictly matches the gold answer, else 0.0.

    Inside GRPOTrainer it also logs, per step, ``correctness_mixed_group_share`` (the share of
    groups whose correctness differs inside the group: the groups correctness can teach) and
    ``correctness_zero_variance_share`` (its complement). TRL's own ``frac_reward_zero_std`` is on
    the weighted total, where the format bonus can make a group look mixed although no
    completion in it is correct. ``reward_errors`` counts the completions whose check raised
    (``reward_functions`` binds one per run; without it, errors are counted for this call only);
    ``sampled``, when given, notes the scored questions' ``id`` column.
    """
    if sampled is not None:
        sampled.add(kwargs.get("id"))
    log_metric = kwargs.get("log_metric")
    scores = (reward_errors or RewardErrors()).scores(
        "correctness_reward", completions, lambda i, c: is_correct(c, _column(gold, i), _column(table, i)), log_metric)
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


def format_reward(completions: Sequence[Any], table: Sequence[Any] | None = None, reward_errors: RewardErrors | None = None,
                  **kwargs: Any) -> list[float]:
    """1.0 when the completion has a Program that executes (on its table, when given) or an
    Answer that parses, else 0.0. ``reward_errors`` as in ``correctness_reward``."""
    return (reward_errors or RewardErrors()).scores(
        "format_reward", completions, lambda i, c: scoring.has_parseable_answer(completion_text(c), _column(table, i)),
        kwargs.get("log_metric"))


def reward_functions(cfg: Any, errors: RewardErrors | None = None,
                     sampled: SampledQuestions | None = None) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions and their weights for GRPOTrainer(reward_funcs=..., args.reward_weights=...).

    Both share ``errors`` (a new ``RewardErrors`` from the config when not given), the run's
    count; the correctness reward notes the questions it scores in ``sampled`` when given (one
    function is enough: TRL calls every reward function on the same completions). They are
    ``functools.partial``s, which TRL unwraps to name its metrics after the function
    (``rewards/correctness_reward/mean``...).
    """
    errors = errors or RewardErrors.from_cfg(cfg)
    funcs = [functools.partial(correctness_reward, reward_errors=errors, sampled=sampled),
             functools.partial(format_reward, reward_errors=errors)]
    return funcs, [float(cfg.REWARD_CORRECT_WEIGHT), float(cfg.REWARD_FORMAT_WEIGHT)]
