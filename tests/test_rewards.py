"""GRPO reward functions: TRL signature, the evaluation's correctness check, and reward errors counted, shown and bounded."""

from __future__ import annotations


import pytest

from finreason import rewards, scoring
from finreason.configuration import resolve_config

TABLE = [["", "2019", "2018"], ["revenue", "$ 120", "$ 100"], ["costs", "80", "70"]]
GOLD_CHANGE = "0.2"  # (120 - 100) / 100, as 03_format_data.py writes gold: repr(float)


def conversational(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    ("completion", "gold", "table", "correct", "formatted"),
    [
        # positive: program executes on the table and matches gold
        ("Revenue rose.\nProgram: subtract(120, 100), divide(#0, 100)\nAnswer: 20%", GOLD_CHANGE, TABLE, 1.0, 1.0),
        # positive: conversational completion is unwrapped to its assistant text
        (conversational("Program: subtract(120, 100), divide(#0, 100)\nAnswer: 0.2"), GOLD_CHANGE, TABLE, 1.0, 1.0),
        # positive: content given as a list of text parts
        ([{"role": "assistant", "content": [{"type": "text", "text": "Answer: 0.2"}]}], GOLD_CHANGE, TABLE, 1.0, 1.0),
        # positive: table-referencing program (FinQA's table_* ops) executes on the row
        ("Program: table_max(revenue, none)\nAnswer: 120", "120.0", TABLE, 1.0, 1.0),
        # positive: yes/no gold
        ("Program: greater(120, 100)\nAnswer: yes", "yes", TABLE, 1.0, 1.0),
        # negative: well-formed but wrong number still earns the format reward
        ("Program: subtract(120, 100)\nAnswer: 20", GOLD_CHANGE, TABLE, 0.0, 1.0),
        # negative: lenient-only match (20 vs 0.2 percent rescale) is not strict
        ("Answer: 20", GOLD_CHANGE, None, 0.0, 1.0),
        # negative: empty completion
        ("", GOLD_CHANGE, TABLE, 0.0, 0.0),
        # negative: prose without Program/Answer
        ("The revenue went up a lot this year.", GOLD_CHANGE, TABLE, 0.0, 0.0),
        # negative: garbage bytes and control characters
        ("\x00\xff\ufffd Program: ((((( Answer: ???", GOLD_CHANGE, TABLE, 0.0, 0.0),
        # negative: a huge completion must not raise or hang
        ("Program: add(1, 2) " * 5000, GOLD_CHANGE, TABLE, 0.0, 1.0),
        # negative: non-string completion (TRL never sends one, but a reward must not crash)
        (None, GOLD_CHANGE, TABLE, 0.0, 0.0),
        # negative: malformed message list
        ([{"role": "assistant"}, 3, "x"], GOLD_CHANGE, TABLE, 0.0, 0.0),
        # negative: gold missing / unparseable gives 0, not an exception
        ("Answer: 0.2", "n/a", TABLE, 0.0, 1.0),
    ],
)
def test_rewards_table(completion, gold, table, correct, formatted):
    assert rewards.correctness_reward([completion], gold=[gold], table=[table]) == [correct]
    assert rewards.format_reward([completion], table=[table]) == [formatted]


def test_correctness_is_the_evaluation_check():
    # the reward must agree with scoring.score_completion(...).strict on every case, by construction
    cases = ["Answer: 0.2", "Answer: 20%", "Program: divide(20, 100)", "nothing", "Answer: yes"]
    expected = [1.0 if scoring.score_completion(c, GOLD_CHANGE, TABLE).strict else 0.0 for c in cases]
    assert rewards.correctness_reward(cases, gold=[GOLD_CHANGE] * 5, table=[TABLE] * 5) == expected


def test_trl_extra_kwargs_are_ignored():
    # TRL passes prompts, completion_ids, trainer_state, log_metric, log_extra and every dataset column
    out = rewards.correctness_reward(
        ["Answer: 0.2", "Answer: 1"], prompts=["p", "p"], completion_ids=[[1], [2]], gold=[GOLD_CHANGE] * 2,
        table=[TABLE] * 2, id=["a", "a"], trainer_state=None, log_metric=lambda *a: None, log_extra=lambda *a: None,
    )
    assert out == [1.0, 0.0]


def test_missing_columns_score_zero_not_raise():
    assert rewards.correctness_reward(["Answer: 0.2"]) == [0.0]
    assert rewards.correctness_reward(["Answer: 0.2", "Answer: 0.2"], gold=[GOLD_CHANGE], table=[TABLE]) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("overrides", "weights"),
    [
        ([], [1.0, 0.1]),  # defaults from config.py
        (["--REWARD_FORMAT_WEIGHT=0"], [1.0, 0.0]),  # format bonus switched off
        (["--REWARD_CORRECT_WEIGHT=2.5", "--REWARD_FORMAT_WEIGHT=0.5"], [2.5, 0.5]),  # both overridden
    ],
)
def test_reward_functions_and_weights(overrides, weights):
    from trl.trainer.utils import get_callable_name

    funcs, got = rewards.reward_functions(resolve_config(overrides))
    assert got == weights
    # distinct names as TRL reads them: it logs rewards/<name>/mean per function
    assert [get_callable_name(f) for f in funcs] == ["correctness_reward", "format_reward"]


@pytest.mark.parametrize(
    ("scores", "prompts", "mixed"),
    [
        ([1, 0, 1, 0], ["a"] * 4, 1.0),  # one mixed group: has a gradient
        ([1, 1, 0, 0], ["a", "a", "b", "b"], 0.0),  # two uniform groups: no gradient at all
        ([1, 1, 1, 0, 0, 0], ["a"] * 3 + ["b"] * 3, 0.0),  # all-correct and all-wrong groups
        ([0.1, 1.1, 0.1, 0.1], ["a", "a", "b", "b"], 0.5),  # weighted totals: first group mixed, second uniform
    ],
)
def test_mixed_group_share(scores, prompts, mixed):
    assert rewards.mixed_group_share(scores, prompts) == mixed


@pytest.mark.parametrize(
    ("scores", "prompts"),
    [([1, 0, 1], ["a", "a"]), ([], []), ([1.0], None)],  # ragged / empty / no prompts column
)
def test_mixed_group_share_without_a_layout_is_none(scores, prompts):
    assert rewards.mixed_group_share(scores, prompts) is None


@pytest.mark.parametrize(
    ("completions", "prompts", "share"),
    [
        (["Answer: 0.2", "Answer: 1", "Answer: 1", "Answer: 1"], ["a", "a", "b", "b"], 0.5),  # a mixed, b all wrong
        (["Answer: 1"] * 4, ["a", "a", "b", "b"], 1.0),  # nothing correct: no correctness signal at all
        (["Answer: 0.2", "Answer: 1"], ["a", "a"], 0.0),  # one mixed group
    ],
)
def test_correctness_logs_its_own_zero_variance_share(completions, prompts, share):
    logged = {}
    n = len(completions)
    rewards.correctness_reward(completions, gold=[GOLD_CHANGE] * n, table=[TABLE] * n, prompts=prompts, log_metric=logged.__setitem__)
    assert logged == {"correctness_zero_variance_share": share, "correctness_mixed_group_share": 1.0 - share,
                      "rewards/correctness_reward/errors": 0.0}


def test_no_group_metric_without_prompts():
    logged = {}
    rewards.correctness_reward(["Answer: 0.2"], gold=[GOLD_CHANGE], table=[TABLE], log_metric=logged.__setitem__)
    assert logged == {"rewards/correctness_reward/errors": 0.0}


# --- a scorer that raises: counted, shown once, and a run with too many stops ------------------


def broken_scorer(*args, **kwargs):
    raise ZeroDivisionError("a bug in the scorer")


@pytest.mark.parametrize(
    ("max_share", "stops"),
    [
        (0.0, True),  # no error allowed: the first call that raises stops the run
        (0.5, True),  # every evaluation raises: 100% is over half at the first call
        (1.0, False),  # 1 = never stop: every call still scores 0 and counts its errors
    ],
)
def test_a_raising_scorer_is_counted_shown_once_and_bounded(monkeypatch, caplog, max_share, stops):
    monkeypatch.setattr(scoring, "score_completion", broken_scorer)
    monkeypatch.setattr(scoring, "has_parseable_answer", broken_scorer)
    funcs, _ = rewards.reward_functions(resolve_config([f"--REWARD_MAX_ERROR_SHARE={max_share}"]))
    logged = []

    def call(func):
        return func(["Answer: 0.2", "Answer: 1"], gold=[GOLD_CHANGE] * 2, table=[TABLE] * 2,
                    log_metric=lambda name, value: logged.append((name, value)))

    if stops:
        with pytest.raises(rewards.RewardError, match="2 of 2 reward evaluations raised .*ZeroDivisionError: a bug in the scorer"):
            call(funcs[0])
        assert logged == [("rewards/correctness_reward/errors", 2.0)]
    else:
        for _ in range(3):
            assert [call(func) for func in funcs] == [[0.0, 0.0], [0.0, 0.0]]
        assert logged.count(("rewards/correctness_reward/errors", 2.0)) == 3
        assert logged.count(("rewards/format_reward/errors", 2.0)) == 3
    # the first error's traceback is shown once, however many follow
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1 and "ZeroDivisionError: a bug in the scorer" in caplog.text


@pytest.mark.parametrize(
    ("raising", "max_share", "stops"),
    [
        ([True, False, False, False], 0.25, False),  # 1 of 4 is exactly the share allowed: not more
        ([True, True, False, False], 0.25, True),  # 2 of 4 is more than a quarter
        ([False, False, False, False], 0.0, False),  # nothing raised: even a zero share never stops
    ],
)
def test_the_share_is_over_every_evaluation_so_far(raising, max_share, stops):
    errors = rewards.RewardErrors(max_share)

    def score_one(index, completion):
        if raising[index]:
            raise ValueError("boom")
        return True

    if stops:
        with pytest.raises(rewards.RewardError, match=r"2 of 4 reward evaluations raised \(50.0%"):
            errors.scores("r", ["c"] * 4, score_one)
    else:
        assert errors.scores("r", ["c"] * 4, score_one) == [0.0 if r else 1.0 for r in raising]
    assert (errors.raised, errors.evaluated) == (sum(raising), 4)


def test_without_a_run_counter_a_call_counts_its_own_errors(monkeypatch):
    # difficulty sampling and tests call the reward directly: errors still show in the metric
    monkeypatch.setattr(scoring, "score_completion", broken_scorer)
    logged = {}
    assert rewards.correctness_reward(["Answer: 0.2"] * 3, gold=[GOLD_CHANGE] * 3, log_metric=logged.__setitem__) == [0.0] * 3
    assert logged["rewards/correctness_reward/errors"] == 3.0


# --- which questions the reward scored: the step log's sampled_question_ids --------------------


@pytest.mark.parametrize(
    ("columns", "noted"),
    [
        ([["q1", "q1", "q2", "q2"]], ["q1", "q2"]),  # TRL's layout: a group repeats its question's id, noted once
        ([["q2", "q2"], ["q1", "q1"], ["q2", "q2"]], ["q2", "q1"]),  # several calls before a log: order kept, once each
        ([[7, 7]], ["7"]),  # a numeric id column is noted as text, as the records store ids
        ([[None, "q1"]], ["q1"]),  # a missing id is not a question
        ([None], []),  # no id column (a dataset without one): nothing noted, nothing raised
        (["q1"], []),  # a bare string is not a per-completion column
    ],
)
def test_sampled_questions_note_each_scored_question_once(columns, noted):
    sampled = rewards.SampledQuestions()
    for column in columns:
        sampled.add(column)
    assert sampled.take() == noted
    assert sampled.take() == []  # taken: the next step starts empty


def test_only_the_correctness_reward_notes_the_scored_questions():
    sampled = rewards.SampledQuestions()
    funcs, _ = rewards.reward_functions(resolve_config([]), sampled=sampled)
    for func in funcs:  # TRL calls every reward function on the same completions
        func(["Answer: 0.2", "Answer: 1"], gold=[GOLD_CHANGE] * 2, table=[TABLE] * 2, id=["q1", "q1"])
    assert sampled.take() == ["q1"]
    # without a recorder the reward is the same and notes nothing
    assert rewards.correctness_reward(["Answer: 0.2"], gold=[GOLD_CHANGE], table=[TABLE], id=["q1"]) == [1.0]
