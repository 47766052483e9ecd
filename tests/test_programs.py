"""The FinQA program executor against real FinQA rows and the official semantics."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finreason import programs
from finreason.equivalence import equal_program
from finreason.programs import ProgramError, execute, execute_tokens, str_to_num, tokenize


@pytest.fixture(scope="module")
def examples(finqa):
    return {example.id: example for split in ("train", "dev", "test") for example in finqa[split]}


def official_program_tokenization(original_program):
    """FinQA's ``code/evaluate/evaluate.py::program_tokenization``, verbatim logic, as the oracle."""
    original_program = original_program.split(", ")
    program = []
    for tok in original_program:
        cur_tok = ""
        for c in tok:
            if c == ")":
                if cur_tok != "":
                    program.append(cur_tok)
                    cur_tok = ""
            cur_tok += c
            if c in ["(", ")"]:
                program.append(cur_tok)
                cur_tok = ""
        if cur_tok != "":
            program.append(cur_tok)
    program.append("EOF")
    return program


@pytest.mark.parametrize(
    "example_id, expected",
    [
        ("FBHS/2017/page_23.pdf-1", 1320.825),  # percent literal: multiply(25%, 5283.3), 25% is 0.25
        ("SYY/2019/page_9.pdf-2", 0.0),  # percent literals on both sides: subtract(62%, 62%)
        ("SWKS/2006/page_81.pdf-1", 187.0),  # const_m1 is -1, and #0 refers to step 0
        ("AMAT/2013/page_18.pdf-2", 7.22222),  # const_100 and a 5-decimal rounded result
        ("APD/2018/page_59.pdf-1", 4302.67611),  # exp with a percent literal divided by const_100
        ("L/2015/page_59.pdf-4", -0.1239),  # negative result of subtract then divide
        ("ABMD/2009/page_56.pdf-1", 40294.0),  # table_sum over cells written "$ 20147"
        ("GS/2014/page_136.pdf-2", -8683.0),  # table_min: "$ -8683 ( 8683 )" is cut at "(" and "$" dropped
        ("AAPL/2003/page_24.pdf-2", 0.279),  # table_max: "27.9% ( 27.9 % )" is 27.9% = 0.279
        ("LMT/2016/page_48.pdf-1", 16086.33333),  # table_average rounds to 5 decimals
        ("AON/2014/page_47.pdf-1", 0.02533),  # table_average and table_max of one row, then #refs
        ("PNC/2009/page_46.pdf-3", "no"),  # greater(14, 19) answers "no"
        ("UNP/2011/page_76.pdf-2", "yes"),  # greater(284, 197) answers "yes"
        ("SNA/2007/page_69.pdf-3", -1.32432),  # a negative literal "-3.7" as an argument
    ],
)
def test_execute_real_examples(examples, example_id, expected):
    example = examples[example_id]
    assert execute(example.program, example.table) == expected
    assert example.exe_ans == expected


@pytest.mark.parametrize(
    "program, message",
    [
        ("divide(5, const_0)", "division by zero"),  # const_0 is 0: the official code marks it invalid
        ("modulo(5, 2)", "should be an operation"),  # unknown operation
        ("add(#1, 2)", "has not run yet"),  # forward reference
        ("add(2, 3), add(#0, #0), subtract(#2, 1)", "has not run yet"),  # a step referring to itself
        ("add(#x, 2)", "not a step reference"),  # a malformed reference
        ("add(apples, 2)", "not a number"),  # a word is not an argument
        ("exp(10, 1000)", "overflows"),  # 10**1000 overflows a float
        ("exp(const_m1, 0.5)", "complex"),  # fractional power of a negative number
        ("add(1)", "two arguments"),  # one argument
        ("add(1, 2", "empty program"),  # an unclosed step never runs
        ("add(1, 2), 3)", "should be an operation"),  # a stray argument where an op belongs
        ("", "empty program"),  # nothing to run
        ("table_max(no such row, none)", "no table row"),  # row names must match the first cell exactly
        ("table_sum(, 2012, 2011)", "no table row"),  # the header row has an empty name, never matched by text
        ("add(1, 2), table_max(#0, none)", "needs a row name"),  # the #reference quirk needs an earlier table step
        ("greater(1, 2), add(#0, 1)", "cannot combine"),  # yes/no cannot be added
    ],
)
def test_execute_rejects(examples, program, message):
    table = examples["ABMD/2009/page_56.pdf-1"].table
    with pytest.raises(ProgramError, match=re.escape(message)):
        execute(program, table)


@pytest.mark.parametrize(
    "program, table, message",
    [
        ("table_max(revenue, none)", None, "no table was given"),  # table op without a table
        ("table_max(revenue, none)", [["revenue", "$ 1", "n/a"]], "not a number"),  # a text cell makes the row n/a
        ("table_sum(revenue, none)", [[]], "not a list of non-empty rows"),  # a row without a name
        ("table_average(revenue, none)", [["revenue"]], "no values"),  # nothing to average
    ],
)
def test_execute_table_errors(program, table, message):
    with pytest.raises(ProgramError, match=re.escape(message)):
        execute(program, table)


@pytest.mark.parametrize(
    ("steps", "refusal"),
    [
        (programs.MAX_PROGRAM_STEPS + 1, "more than 256 steps"),  # one step past the step bound: refused before any step runs
        (2_000, "longer than 20000 characters"),  # far past any real program: the length bound refuses it first
        (programs.MAX_PROGRAM_STEPS, None),  # at the step bound: every step runs
    ],
)
def test_program_bounds_refuse_before_running(monkeypatch, steps, refusal):
    # A bound on work done, not a clock: count the arithmetic steps the executor carries out.
    ran = []
    real = programs._arithmetic
    monkeypatch.setattr(programs, "_arithmetic", lambda *args: ran.append(args[0]) or real(*args))
    program = ", ".join(["add(1, 2)"] + [f"add(#{index}, 1)" for index in range(steps - 1)])
    if refusal:
        with pytest.raises(ProgramError, match=refusal):
            execute(program, None)
        assert ran == []
    else:
        assert execute(program, None) == float(steps + 2)
        assert len(ran) == steps


def test_every_vendored_gold_program_reproduces_exe_ans(finqa):
    mismatches = []
    for split in ("train", "dev", "test"):
        for example in finqa[split]:
            try:
                value = execute(example.program, example.table)
            except ProgramError as error:
                mismatches.append((split, example.id, example.program, f"ProgramError: {error}"))
                continue
            if value != example.exe_ans:
                mismatches.append((split, example.id, example.program, f"{value!r} != {example.exe_ans!r}"))
    assert not mismatches, "\n".join(map(str, mismatches))


@pytest.mark.parametrize(
    "program, expected",
    [
        ("subtract(5829, 5735), divide(#0, 5735)", ["subtract(", "5829", "5735", ")", "divide(", "#0", "5735", ")", "EOF"]),  # two steps
        ("table_max(net sales, none)", ["table_max(", "net sales", "none", ")", "EOF"]),  # a row name with a space
        ("add(1,234, 5)", ["add(", "1,234", "5", ")", "EOF"]),  # only ", " splits; a thousands comma stays
        ("subtract(5829,5735)", ["subtract(", "5829,5735", ")", "EOF"]),  # no space: one (invalid) argument, as officially
    ],
)
def test_tokenize_rows(program, expected):
    assert tokenize(program) == expected
    assert official_program_tokenization(program) == expected


@pytest.mark.parametrize(
    "program, expected",
    [
        ("add(500, 350), divide(#0, 2248)", "add(350, 500), divide(#0, 2248)"),  # add trades its arguments; divide keeps them
        ("subtract(5, 2), multiply(#0, const_100)", "subtract(5, 2), multiply(const_100, #0)"),  # a reference moves like a number
        ("add(1, 2), add(#0, 3)", "add(2, 1), add(3, #0)"),  # every commutative step, not only the first
        ("subtract(5829, 5735), divide(#0, 5735)", None),  # nothing commutes: no second target
        ("add(7, 7)", None),  # equal arguments: swapping writes the same program
        ("table_sum(revenue, none)", None),  # table operations take a row, not two numbers
        ("add(1, 2", None),  # does not parse: no view rather than an error
    ],
)
def test_commuted_rows(program, expected):
    assert programs.commuted(program) == expected


def test_commuted_programs_are_equal_and_give_the_same_answer(finqa):
    rewritten = [(example, programs.commuted(example.program)) for example in finqa["train"]]
    rewritten = [(example, program) for example, program in rewritten if program is not None]
    assert rewritten  # the vendored train split has add and multiply steps to swap
    for example, program in rewritten:
        assert equal_program(tokenize(example.program), tokenize(program)), example.id
        assert execute(program, example.table) == pytest.approx(execute(example.program, example.table)), example.id


def test_tokenize_matches_official_on_vendored_programs(finqa):
    for split in ("train", "dev", "test"):
        for example in finqa[split]:
            assert tokenize(example.program) == official_program_tokenization(example.program), example.id


def test_execute_tokens_is_execute(examples):
    example = examples["AON/2014/page_47.pdf-1"]
    assert execute_tokens(tokenize(example.program), example.table) == execute(example.program, example.table)


_NUMBERS = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(_NUMBERS, _NUMBERS)
def test_add_matches_python(a, b):
    assert execute(f"add({a!r}, {b!r})", None) == round(a + b, 5)


@settings(max_examples=200, deadline=None)
@given(_NUMBERS, _NUMBERS.filter(lambda value: value != 0))
def test_divide_matches_python(a, b):
    assert execute(f"divide({a!r}, {b!r})", None) == round(a / b, 5)


@settings(max_examples=200, deadline=None)
@given(_NUMBERS)
def test_str_to_num_round_trips(value):
    assert str_to_num(repr(value)) == value
    assert str_to_num(f"{value!r}%") == value / 100.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_str_to_num_never_raises(text):
    assert str_to_num(text) is None or isinstance(str_to_num(text), float)


_PROGRAM_ALPHABET = "addsubtractmultiplydivideexpgreatertable_maxminsumaverage(),# %.-0123456789const_m1none"


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=120), st.text(alphabet=_PROGRAM_ALPHABET, max_size=120)))
def test_execute_raises_only_program_error(text):
    table = [["revenue", "$ 1,200", "( 3 )"], ["none", "1", "2"]]
    try:
        value = execute(text, table)
    except ProgramError:
        return
    assert value in ("yes", "no") or isinstance(value, float)


def test_format_value_rows():
    # format_value feeds the Answer: line of SFT targets; it must read back as the same value.
    assert programs.format_value(187.0) == "187"
    assert programs.format_value(0.01639) == "0.01639"
    assert programs.format_value(-0.1239) == "-0.1239"
    assert programs.format_value("yes") == "yes"
