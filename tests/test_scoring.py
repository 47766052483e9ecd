"""score_completion: the one correctness check, on taught, sloppy and hostile completions."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finreason import equivalence, scoring
from finreason.programs import format_value, tokenize
from finreason.scoring import (
    has_parseable_answer,
    official_prediction_verdict,
    parse_completion,
    parse_number,
    score_completion,
    score_official_prediction,
)

GOLD = 0.01639  # subtract(5829, 5735), divide(#0, 5735) = 94 / 5735 rounded to 5 decimals
PROGRAM = "subtract(5829, 5735), divide(#0, 5735)"


@pytest.mark.parametrize(
    "completion, gold, strict, lenient, source",
    [
        (f"The change is small.\nProgram: {PROGRAM}\nAnswer: 0.01639", GOLD, True, True, "program"),  # the taught format
        (f"Program: {PROGRAM}\nAnswer: 5", GOLD, True, True, "program"),  # the program wins over a wrong Answer line
        ("Program: subtract(5829, 5000), divide(#0, 5735)\nAnswer: 0.01639", GOLD, False, False, "program"),  # wrong program, right Answer: program wins -> wrong
        ("Answer: 0.01639", GOLD, True, True, "answer"),  # no program: the stated answer, exact
        ("Answer: 1.639%", GOLD, True, True, "answer"),  # official percent rule: 1.639% is 0.01639
        ("Answer: 1.64", GOLD, False, True, "answer"),  # percent written as a number, 0.06% off after /100: lenient only
        ("Answer: 1.639", GOLD, False, True, "answer"),  # percent written as a number: lenient only
        ("Answer: 0.0165", GOLD, False, True, "answer"),  # 0.7% off: inside the 1% tolerance
        ("Answer: 0.017", GOLD, False, False, "answer"),  # 3.7% off: outside the tolerance
        ("Answer: 0.016390", GOLD, True, True, "answer"),  # trailing zero is the same number
        ("Answer: 1.6390584%", GOLD, True, True, "answer"),  # answer numbers are rounded to 5 decimals like programs
        ("Answer: 0.01639", "0.01639", True, True, "answer"),  # gold given as a string (grpo_train.jsonl) is coerced
        ("In 2008 revenue rose by a lot.\nAnswer: 5.2", 5.2, True, True, "answer"),  # the year before the answer is not the answer
        ("In 2008 revenue rose by a lot.\nAnswer: 5.2", 2008.0, False, False, "answer"),  # ... and 2008 never scores
        ("In 2008 revenue rose by 5.2", 5.2, False, False, "none"),  # no marker at all: no answer, whatever the text holds
        ("the answer: we subtract 5.2 from 10", 5.2, False, False, "none"),  # lower-case mid-sentence "answer:" is prose
        ("Answer: yes", "yes", True, True, "answer"),  # yes/no exact
        ("Answer: No, it fell.", "no", True, True, "answer"),  # yes/no at the start of the answer text
        ("Answer: no", "yes", False, False, "answer"),  # wrong yes/no
        ("Answer: 1", "yes", False, False, "answer"),  # a number is never a yes/no
        ("Program: greater(284, 197)\nAnswer: no", "yes", True, True, "program"),  # greater answers yes, program wins
        ("Answer: true", "yes", False, False, "none"),  # only yes/no count as yes/no: "true" is no answer
        ("Answer: (1,234)", -1234.0, True, True, "answer"),  # accounting parentheses are negative
        ("Answer: $1,234.5", 1234.5, True, True, "answer"),  # currency sign and thousands separator
        ("Answer: €1,234,567", 1234567.0, True, True, "answer"),  # several thousands groups
        ("Answer: $5.2 million", 5.2, True, True, "answer"),  # scale words are units: values are in table units
        ("Answer: $5.2 million", 5200000.0, False, False, "answer"),  # ... so they are never multiplied out
        ("Answer: \u221216", -16.0, True, True, "answer"),  # unicode minus sign
        ("Answer: 2.5% (from 1,200 to 1,230)", 0.025, True, True, "answer"),  # the first number of the answer line
        ("Answer: 0", 0.0, True, True, "answer"),  # gold zero, exact
        ("Answer: 0.0001", 0.0, False, False, "answer"),  # gold zero: lenient needs |pred| <= 1e-9
        ("**Answer:** 0.01639", GOLD, True, True, "answer"),  # markdown bold around the label
        ("- Final answer: `0.01639`", GOLD, True, True, "answer"),  # bullet, "Final answer", backticks
        ("So \\boxed{0.01639}", GOLD, True, True, "answer"),  # \boxed{} is an answer marker
        ("The answer is 0.01639.", GOLD, True, True, "answer"),  # "the answer is X" when nothing stronger exists
        ("Answer: 0.01639\nThe answer is computed as 94 / 5735.", GOLD, True, True, "answer"),  # the Answer label beats later "the answer is"
        ("Answer: 5\nWait, let me recompute.\nAnswer: 0.01639", GOLD, True, True, "answer"),  # the last Answer line wins
        (f"Program: {PROGRAM}, EOF\nAnswer: 0.01639", GOLD, True, True, "program"),  # a trailing EOF token is stripped
        ("Program: subtract(5829,5735), divide(#0,5735)\nAnswer: 9", GOLD, True, True, "program"),  # missing spaces after commas are repaired
        ("Program: add(1,234, 5)", 1239.0, True, True, "program"),  # a thousands separator is not an argument comma
        ("Program: Subtract(5829, 5735), Divide(#0, 5735).", GOLD, True, True, "program"),  # op case and a final full stop
        (f"Program: {PROGRAM} Answer: 0.5", GOLD, True, True, "program"),  # program and answer on one line
        ("Program: subtract(5829, apples)\nAnswer: 0.01639", GOLD, True, True, "answer"),  # program fails: fall back to the Answer
        ("Program: table_max(revenue, none)\nAnswer: 3", 3.0, True, True, "answer"),  # table op but no table: fall back
        ("Program: subtract(5829, 5735) then divide(#0, 5735)\nAnswer: 1", GOLD, False, False, "answer"),  # prose between steps is not repaired
        ("", GOLD, False, False, "none"),  # empty completion
        (None, GOLD, False, False, "none"),  # not a string at all
        (12345, GOLD, False, False, "none"),  # a number is not a completion
        ("\x00Answer:\x07 0.01639\x1b", GOLD, True, True, "answer"),  # control characters around the answer
        ("Answer: \uff10.\uff10\uff11\uff16\uff13\uff19", GOLD, True, True, "answer"),  # full-width digits
        ("Answer: \u0660.\u0660\u0661", 0.01, False, False, "none"),  # Arabic-Indic digits are not numbers here
        ("Answer: 0.01639", None, False, False, "answer"),  # unusable gold: wrong, not a crash
        ("Answer: 0.01639", "n/a", False, False, "answer"),  # unusable gold string
    ],
)
def test_score_completion(completion, gold, strict, lenient, source):
    verdict = score_completion(completion, gold, None)
    assert (verdict.strict, verdict.lenient, verdict.source) == (strict, lenient, source), verdict


def test_table_program_uses_the_table(finqa):
    example = {e.id: e for e in finqa["dev"]}["AON/2014/page_47.pdf-1"]
    completion = f"Operating margin peaked in 2014.\nProgram: {example.program}\nAnswer: 2.53%"
    verdict = score_completion(completion, example.exe_ans, example.table)
    assert verdict.strict and verdict.source == "program" and verdict.predicted == 0.02533


def test_program_error_is_reported():
    verdict = score_completion("Program: divide(5, const_0)\nAnswer: 3", 3.0, None)
    assert verdict.source == "answer" and verdict.strict
    assert verdict.error and "division by zero" in verdict.error


@pytest.mark.parametrize(
    "rel_tol, lenient",
    [
        (0.01, True),  # 1.64 / 100 is 0.06% off: inside 1%
        (0.001, True),  # ... and inside 0.1%
        (0.0001, False),  # ... but outside 0.01%
        (0.0, False),  # zero tolerance: only rescaled exact matches
        (float("nan"), False),  # a nonsense tolerance is treated as zero, never a crash
    ],
)
def test_rel_tol(rel_tol, lenient):
    assert score_completion("Answer: 1.64", GOLD, None, rel_tol=rel_tol).lenient is lenient


_GARBAGE = ("(#0, 1,2,3 Answer Program \\boxed{ " * 30_000)[:1_000_000]


@pytest.mark.parametrize(
    ("completion", "strict"),
    [
        (_GARBAGE, False),  # a megabyte of half-markers
        ("Answer:" * 150_000, False),  # a million characters of empty answers
        ("\n" * 1_000_000, False),  # a million blank lines
        ("Answer: " + "9" * 1_000_000, False),  # one value a million digits long
        (_GARBAGE + "\nAnswer: 0.01639", True),  # the last answer is still found after a megabyte
    ],
)
def test_hostile_megabyte_is_scanned_within_the_bound(monkeypatch, completion, strict):
    # A bound on work done, not a clock: the marker scan sees at most MAX_SCAN_CHARS characters.
    scanned = []
    real = scoring._markers
    monkeypatch.setattr(scoring, "_markers", lambda text: scanned.append(len(text)) or real(text))
    assert score_completion(completion, GOLD, None).strict is strict
    assert scanned and max(scanned) <= scoring.MAX_SCAN_CHARS


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.01639", 0.01639),  # plain
        ("1,234.5", 1234.5),  # thousands separator
        ("$ 1,234", 1234.0),  # currency with a space
        ("£12", 12.0),  # pound sign
        ("(1,234)", -1234.0),  # accounting negative
        ("$(1,234)", -1234.0),  # currency outside the parentheses
        ("(2.1)%", -0.021),  # accounting negative percent
        ("-5%", -0.05),  # negative percent
        ("-$5", -5.0),  # minus before the currency sign
        ("12 percent", 0.12),  # "percent" is %
        ("3.5 percentage points", 0.035),  # percentage points are percent too
        ("5.2 billion", 5.2),  # scale words are units
        ("2.5k", 2.5),  # ... abbreviated too
        ("1,23", 1.0),  # a broken thousands group ends the number at the comma
        ("FY2019 revenue was 12", 12.0),  # a number glued to letters is not the answer
        ("about 7.5 (up from 6)", 7.5),  # the first number
        ("1.5e-3", 0.0015),  # scientific notation
        ("1e999", None),  # non-finite is not a number
        ("yes", "yes"),  # yes
        ("**No**", "no"),  # no, in bold
        ("none", None),  # "none" is not "no"
        ("n/a", None),  # nothing
        ("", None),  # empty
        (None, None),  # not a string
        ("\\$1{,}234\\text{ million}", 1234.0),  # LaTeX wrapping
    ],
)
def test_parse_number(text, expected):
    result = parse_number(text)
    if isinstance(expected, float):
        assert result == pytest.approx(expected, rel=1e-12)
    else:
        assert result == expected


@pytest.mark.parametrize(
    "text, program, answer",
    [
        (f"Program: {PROGRAM}\nAnswer: 0.01639", PROGRAM, "0.01639"),  # taught format
        (f"PROGRAM: {PROGRAM} EOF\nANSWER: 1", PROGRAM, "1"),  # upper case labels, trailing EOF
        (f"Program: add(1, 2)\nProgram: {PROGRAM}", PROGRAM, None),  # the last program wins; no answer
        ("Answer:\n\n  42", None, "42"),  # the value on the next non-empty line
        ("Answer:\nProgram: add(1, 2)", "add(1, 2)", None),  # ... unless that line is a label itself
        ("Answer: 3\nAnswer:", None, "3"),  # an empty last label falls back to the one before
        ("**Final Answer**: 7", None, "7"),  # bold label with the colon outside
        ("> # Answer: 7", None, "7"),  # quote and heading markdown
        ("we think the program: is fine", None, None),  # lower-case mid-line "program:" is prose
        ("\\boxed{\\text{yes}}", None, "\\text{yes}"),  # nested braces
        ("\\boxed{12", None, None),  # an unclosed \boxed is nothing
    ],
)
def test_parse_completion(text, program, answer):
    assert parse_completion(text) == scoring.Parsed(program, answer)


@pytest.mark.parametrize(
    "completion, table, expected",
    [
        (f"Program: {PROGRAM}", None, True),  # a well-formed program without a table to run on
        ("Program: table_max(revenue, none)", [["revenue", "1", "2"]], True),  # executes on the table
        ("Program: table_max(profit, none)", [["revenue", "1", "2"]], False),  # does not execute on the table
        ("Answer: 12%", None, True),  # an answer that parses
        ("Answer: unclear", None, False),  # an answer that does not
        ("Program: do the math", None, False),  # not a program
        ("The revenue was 12.", None, False),  # no marker
        (None, None, False),  # not a string
    ],
)
def test_has_parseable_answer(completion, table, expected):
    assert has_parseable_answer(completion, table) is expected


@pytest.mark.parametrize(
    "predicted, expected, sympy_calls",
    [
        (tokenize("multiply(351, const_m1), add(#0, 538)"), (True, True), 0),  # the gold tokens: identical, no sympy
        (tokenize("multiply(const_m1, 351), add(538, #0)"), (True, True), 1),  # symbolically the gold program: sympy decides
        (tokenize("add(187, const_0)"), (True, False), 0),  # right value, arguments not from the gold program
        (tokenize("multiply(351, const_m1), subtract(#0, 538)"), (False, False), 0),  # wrong program: the numeric pre-check decides
        (tokenize("add(351, 538), " + ", ".join(f"multiply(#{i}, #{i})" for i in range(12))), (False, False), 0),  # 2**12-node tree: refused before sympy
        (["EOF"], (False, False), 0),  # empty program
        ("multiply(351, const_m1), add(#0, 538)", (False, False), 0),  # a string, not a token list
        ([1, 2, 3], (False, False), 0),  # not tokens
        (None, (False, False), 0),  # nothing
    ],
)
def test_score_official_prediction(finqa, monkeypatch, predicted, expected, sympy_calls):
    # A bound on work done, not a clock: sympy, the one costly step, runs only where it must.
    calls = []
    real = equivalence._symbolic_equal
    monkeypatch.setattr(equivalence, "_symbolic_equal", lambda *args: calls.append(args) or real(*args))
    example = {e.id: e for e in finqa["dev"]}["SWKS/2006/page_81.pdf-1"]
    assert score_official_prediction(predicted, example) == expected
    assert len(calls) == sympy_calls


_SWKS_PADDED = "multiply(351, const_m1), add(#0, 538)" + "".join(f", add(#{k}, 538), subtract(#{k + 1}, 538)" for k in range(1, 40, 2))


@pytest.mark.parametrize(
    "predicted, expected",
    [
        (tokenize("multiply(351, const_m1), add(#0, 538)"), (True, True, None)),  # the gold: the official comparison decided
        (tokenize("multiply(351, const_m1), subtract(#0, 538)"), (False, False, None)),  # wrong: decided officially, no note
        (tokenize(_SWKS_PADDED), (True, False, "too large to compare symbolically")),  # symbolically the gold, 42 steps: the bound decides
        (tokenize(", ".join(["add(351, 538)"] * 300)), (False, False, "more than 256 steps")),  # past the step limit: not even run
        (None, (False, False, None)),  # not tokens: the verdict's error says so, not this note
    ],
)
def test_official_prediction_verdict_notes(finqa, predicted, expected):
    example = {e.id: e for e in finqa["dev"]}["SWKS/2006/page_81.pdf-1"]
    exe_correct, program_correct, note = official_prediction_verdict(predicted, example)
    assert (exe_correct, program_correct) == expected[:2]
    if expected[2] is None:
        assert note is None
    else:
        assert expected[2] in note
    assert score_official_prediction(predicted, example) == expected[:2]


def test_official_prediction_verdict_on_a_non_example():
    assert official_prediction_verdict(tokenize("add(1, 2)"), object()) == (False, False, "the example has no table, exe_ans or program")


def test_round_trip_every_vendored_example(finqa):
    # The SFT target format must score strict-correct for every gold program and answer.
    failures = []
    for split in ("train", "dev", "test"):
        for example in finqa[split]:
            completion = f"Program: {example.program}\nAnswer: {format_value(example.exe_ans)}"
            verdict = score_completion(completion, example.exe_ans, example.table)
            answer_only = score_completion(f"Answer: {format_value(example.exe_ans)}", example.exe_ans, None)
            if not (verdict.strict and verdict.source == "program" and answer_only.strict):
                failures.append((split, example.id, verdict, answer_only))
    assert not failures, failures[:5]


_GOLDS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10), st.sampled_from(["yes", "no"]), st.none(), st.integers()
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), _GOLDS, st.floats())
def test_score_completion_never_raises(text, gold, rel_tol):
    verdict = score_completion(text, gold, [["revenue", "1", "2"]], rel_tol=rel_tol)
    assert isinstance(verdict.strict, bool) and isinstance(verdict.lenient, bool)
    assert verdict.lenient or not verdict.strict


_PIECES = st.sampled_from(
    ["Program:", "Answer:", "**", "`", "\\boxed{", "}", "(", ")", ",", ", ", "#0", "#1", "const_m1", "%", "$", "-",
     "add", "divide", "table_max", "greater", "none", "EOF", "\n", " ", "1,234", "5829", "0.5", "yes", "the answer is"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=40), st.floats(allow_nan=False, min_value=-1e6, max_value=1e6))
def test_score_completion_never_raises_on_near_misses(pieces, gold):
    text = "".join(pieces)
    verdict = score_completion(text, gold, [["none", "1", "( 2 )"], ["add", "$ 3"]])
    assert verdict.source in ("program", "answer", "none")
    assert has_parseable_answer(text) in (True, False)


# --- answers as people publish them: the percent scale and the tolerant (rounding) rule ----------

@pytest.mark.parametrize(
    "completion, gold, scale, strict, tolerant",
    [
        ("Answer: 0.12976", 13.0, "percent", False, True),  # the question: 12.976% rounds to 13.0%
        ("Answer: 0.12976", "12.98", "percent", False, True),  # two decimals as written
        ("Answer: 0.125", 12.5, "percent", True, True),  # a model's fraction is the percent gold exactly
        ("Answer: 12.5%", 12.5, "percent", True, True),  # a stated percent parses to the same fraction
        ("Answer: 12.5", 12.5, "percent", False, False),  # the percent number itself is not the fraction
        ("Answer: 12.57", "12.6", "", False, True),  # rounds to the gold's one decimal
        ("Answer: 12.649", "12.6", "", False, True),  # still 12.6 at one decimal
        ("Answer: 12.65", "12.6", "", False, False),  # half up: 12.7, not 12.6
        ("Answer: 12.5", 13, "", False, True),  # gold without decimals: whole-number rounding
        ("Answer: 12.4", 13, "", False, False),  # rounds to 12
        ("Answer: 1452.4", "1,452.4", "million", True, True),  # a unit scale compares as written
        ("Answer: 1.4524", "1,452.4", "million", False, False),  # units are not converted
        ("Answer: -0.033", -3.3, "percent", True, True),  # percentage points as a fraction
        ("Answer: yes", "yes", "", True, True),  # yes/no: tolerant only when strict
        ("Answer: no", "yes", "", False, False),  # wrong yes/no
        ("no answer here", 13.0, "percent", False, False),  # nothing predicted
        ("Answer: 0.12976", "12.60", "bogus", False, False),  # an unknown scale is no scale
    ],
)
def test_published_answers(completion, gold, scale, strict, tolerant):
    verdict = scoring.score_completion(completion, gold, None, 0.01, scale)
    assert (verdict.strict, verdict.tolerant) == (strict, tolerant)


@pytest.mark.parametrize(
    "gold, decimals",
    [
        ("12.60", 2),  # trailing zeros are written precision
        (12.6, 1),  # a JSON number: as Python prints it
        (13, 0),  # an integer
        ("1,452.4", 1),  # thousands separators ignored
        ("$ 5", 0),  # a currency sign ignored
        ("yes", None),  # not a number
        (float("nan"), None),  # not a finite number
        (True, None),  # a boolean is not an answer
    ],
)
def test_gold_decimals(gold, decimals):
    assert scoring.gold_decimals(gold) == decimals


def test_finqa_strict_rule_unchanged_by_the_tolerant_one(finqa):
    # FinQA's gold with no scale: strict is exactly the official round(pred, 5) == gold
    example = finqa["dev"][0]
    verdict = scoring.score_completion(f"Answer: {example.exe_ans}", example.exe_ans, example.table)
    assert verdict.strict and verdict.tolerant
    near = scoring.score_completion("Answer: 5829.04", 5829.0, None)
    assert not near.strict and near.tolerant  # strict stays exact; tolerant rounds to the gold's one decimal


@pytest.mark.parametrize(
    "gold, expected",
    [
        (12.5, 12.5),  # a JSON number
        (3, 3.0),  # an integer
        ("0.01639", 0.01639),  # a numeric string
        ("1,234.5", 1234.5),  # thousands grouped by commas
        ("-0.5", -0.5),  # a sign
        ("1e3", 1000.0),  # an exponent
        (" YES ", "yes"),  # yes/no in any case, spaces around
        ("0x10", None),  # hex: parse_number's fallback read it as 0.0
        ("12abc", None),  # trailing letters: was 12
        ("1.2.3", None),  # two decimal points: was 1.2
        ("1_000", None),  # Python's digit grouping is not a published number
        ("1,23", None),  # a broken thousands group
        ("nan", None),  # not finite
        ("inf", None),  # not finite either
        (10**400, None),  # an integer too large for a float: was OverflowError
        (float("inf"), None),  # JSON's 1e400
        (True, None),  # a boolean is no answer
        ("", None),  # nothing
    ],
)
def test_coerce_gold_is_strict(gold, expected):
    assert scoring.coerce_gold(gold) == expected


@pytest.mark.parametrize(
    ("predicted", "key"),
    [
        (0.016390584, 0.01639),  # rounded as the strict check rounds: 5 decimals
        (12, 12.0),  # an integer is the same number as its float
        ("yes", "yes"),  # yes/no as it is
        (None, None),  # no answer
        ("nan", None),  # evaluation records keep a non-finite result as text: not an answer
        ("12.5", None),  # nor is any other text: the strict check never accepts it
        (float("inf"), None),  # a non-finite number is never right
    ],
)
def test_answer_key(predicted, key):
    assert scoring.answer_key(predicted) == key


@pytest.mark.parametrize(
    ("predictions", "index"),
    [
        ([1.0, 2.0, 2.0], 1),  # two of three agree: the first of them
        ([1.0, 2.0, 3.0], 0),  # no two agree: the first answer
        ([1.0, 2.0, 2.0, 1.0], 0),  # a tie: the answer given first
        ([None, "nan", 3.0], 2),  # the only answer wins, however few
        ([None, None], None),  # no answer at all
        ([0.5, 0.123456, 0.1234649], 1),  # different floats, one answer after FinQA's rounding: 0.12346 twice
        ([0.5, 0.123456, 0.123454], 0),  # ... and two that round apart do not agree
        (["no", "yes", "yes"], 1),  # yes/no vote as numbers do
        ([], None),  # nothing to vote on
    ],
)
def test_vote(predictions, index):
    assert scoring.vote(predictions) == index


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True), st.sampled_from(["yes", "no", "nan"])), max_size=8))
@settings(max_examples=200, deadline=None)
def test_vote_picks_an_answer_no_other_answer_outnumbers(predictions):
    index = scoring.vote(predictions)
    keys = [scoring.answer_key(predicted) for predicted in predictions]
    answers = [key for key in keys if key is not None]
    if index is None:
        assert not answers
    else:
        assert keys[index] is not None and all(answers.count(keys[index]) >= answers.count(key) for key in answers)
