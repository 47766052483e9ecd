"""Statistics every result is reported with: exact McNemar, bootstrap CIs, sign-flip tests, summaries."""

from __future__ import annotations

import pytest

from finreason import stats


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([True] * 5, [True] * 5, 1.0),  # no discordant pairs
        ([True] * 5, [False] * 5, 0.0625),  # 5 vs 0 discordant: 2 * 0.5**5
        ([True] * 6, [False] * 6, 0.03125),  # 6 vs 0: 2 * 0.5**6, significant at 5%
        ([True, True, True, False, False, False], [False, False, False, True, True, True], 1.0),  # balanced
        ([True, False], [False, False], 1.0),  # one discordant pair proves nothing
        ([True] * 8 + [False] * 2, [False] * 8 + [True] * 2, 0.109375),  # 8 vs 2: 2 * (1+10+45)/1024
        ([], [], 1.0),  # nothing to compare
    ],
)
def test_mcnemar_exact(a, b, expected):
    assert stats.mcnemar(a, b) == pytest.approx(expected)
    assert stats.mcnemar(b, a) == pytest.approx(expected)  # symmetric


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([True, True, False, False], [True, False, True, True], (1, 2)),  # one right only in a, two only in b
        ([True, False], [True, False], (0, 0)),  # agreeing pairs are not counted
        ([False, False, False], [True, True, True], (0, 3)),  # every pair discordant the same way
        ([], [], (0, 0)),  # nothing to compare
    ],
)
def test_discordant_counts_each_side_alone(a, b, expected):
    assert stats.discordant(a, b) == expected
    assert stats.discordant(b, a) == expected[::-1]  # swapping the sides swaps the counts


def test_discordant_refuses_unpaired():
    # zip would silently drop the longer side's tail
    with pytest.raises(ValueError):
        stats.discordant([True, False], [True])


def test_mcnemar_refuses_unpaired():
    with pytest.raises(ValueError):
        stats.mcnemar([True], [True, False])


@pytest.mark.parametrize(
    "values, low, high",
    [
        ([True] * 20, 1.0, 1.0),  # all right: no spread
        ([False] * 20, 0.0, 0.0),  # all wrong: no spread
        ([True, False] * 50, 0.38, 0.62),  # half right over 100: roughly +-10 points
        ([], None, None),  # nothing evaluated
    ],
)
def test_bootstrap_ci(values, low, high):
    interval = stats.bootstrap_ci(values, 500, seed=7)
    if low is None:
        assert interval == (None, None)
        return
    assert interval == stats.bootstrap_ci(values, 500, seed=7)  # seeded
    assert low - 1e-9 <= interval[0] <= interval[1] <= high + 1e-9
    if values and 0 < sum(values) < len(values):
        assert interval[0] < sum(values) / len(values) < interval[1]


def test_summary_program_accuracy_is_none_for_free_text():
    rows = [
        {"strict": True, "lenient": True, "program": None, "source": "answer", "operations": ["add"], "num_steps": 1, "evidence_source": "table"},
        {"strict": False, "lenient": True, "program": None, "source": "none", "operations": ["divide"], "num_steps": 1, "evidence_source": "text"},
    ]
    summary = stats.summarize(rows, bootstrap_samples=20, seed=1)
    assert summary["program_accuracy"] is None and summary["no_answer_rate"] == 0.5
    assert summary["by_operation"]["add"] == {"n": 1, "strict": 1.0, "lenient": 1.0}
    assert summary["by_evidence_source"]["text"]["strict"] == 0.0


@pytest.mark.parametrize(
    "differences, expected",
    [
        ([0, 0, 0], 1.0),  # no change at all
        ([1, 1, 1, 1, 1, 1], 2 / 64),  # six rises of six: only all-plus and all-minus are as extreme
        ([1, -1], 1.0),  # a rise and a fall cancel
        ([0.5, 0.25, 0, 0.25], 2 / 8),  # zeros carry no sign: three non-zero differences
        ([1, 1, 1, -1], 10 / 16),  # |sum| >= 2 in 10 of 16 sign patterns
    ],
)
def test_sign_flip_p_value_exact(differences, expected):
    assert stats.sign_flip_p_value(differences) == pytest.approx(expected)


def test_sign_flip_p_value_sampled_for_many_questions():
    rises = [0.25] * 40 + [-0.25] * 5
    p_value = stats.sign_flip_p_value(rises, seed=3)
    assert 0 < p_value < 1e-3 and p_value == stats.sign_flip_p_value(rises, seed=3)  # seeded, never exactly 0
    assert stats.sign_flip_p_value([0.25, -0.25] * 20, seed=3) > 0.9


@pytest.mark.parametrize(
    "before, after, difference, up, down",
    [
        ([0.5, 0.5], [0.5, 0.5], 0.0, 0, 0),  # nothing changed
        ([0.25, 0.5, 0.0], [0.5, 0.25, 0.0], 0.0, 1, 1),  # a rise and a fall of the same size cancel
        ([0.0, 0.125], [0.25, 0.375], 0.25, 2, 0),  # both up by a quarter
        ([0.75], [0.5], -0.25, 0, 1),  # a fall is negative, not its size
    ],
)
def test_paired_change_is_after_minus_before_item_by_item(before, after, difference, up, down):
    change = stats.paired_change(before, after, samples=50, seed=0)
    assert change["difference"] == pytest.approx(difference)
    assert (change["questions_up"], change["questions_down"]) == (up, down)
    assert change["p_value"] == pytest.approx(stats.sign_flip_p_value([b - a for a, b in zip(before, after)]))
    low, high = change["difference_ci95"]
    assert low <= change["difference"] <= high


def test_paired_change_refuses_unpaired_values():
    with pytest.raises(ValueError, match="paired"):
        stats.paired_change([0.5, 0.25], [0.5], samples=10, seed=0)
    empty = stats.paired_change([], [], samples=10, seed=0)
    assert empty["difference"] is None and empty["difference_ci95"] == [None, None] and empty["p_value"] == 1.0


def test_paired_table_counts_discordant_pairs():
    table = stats.paired_table({"zero_shot": [False, False, True], "sft": [True, True, True]})
    assert [row["execution_accuracy"] for row in table["stages"]] == [pytest.approx(1 / 3), 1.0]
    assert (table["pairs"][0]["a_only"], table["pairs"][0]["b_only"], table["pairs"][0]["p_value"]) == (0, 2, 0.5)


@pytest.mark.parametrize("value, text", [(0.125, "12.5%"), (None, "n/a"), (float("nan"), "n/a"), (1.0, "100.0%")])
def test_percent(value, text):
    assert stats.percent(value) == text
