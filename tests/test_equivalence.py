"""Program accuracy: the official symbolic comparison of two programs, and its size bound."""

import random

import pytest

from finreason import equivalence, programs
from finreason.equivalence import MAX_EQUAL_PROGRAM_NODES, compare_programs, equal_program
from finreason.programs import ProgramError, tokenize


@pytest.mark.parametrize(
    "gold, predicted, expected",
    [
        ("multiply(351, const_m1), add(#0, 538)", "multiply(351, const_m1), add(#0, 538)", True),  # identical
        ("multiply(351, const_m1), add(#0, 538)", "multiply(const_m1, 351), add(538, #0)", True),  # commuted arguments
        ("multiply(351, const_m1), add(#0, 538)", "subtract(538, 351)", False),  # officially const_m1 is a symbol, not -1
        ("subtract(110.59, 126.23), divide(#0, 126.23)", "divide(110.59, 126.23), divide(126.23, 126.23), subtract(#0, #1)", True),  # (a-b)/b == a/b - b/b
        (
            "table_average(operating margin, none), table_max(operating margin, none), subtract(#1, #0)",
            "table_max(operating margin, none), table_average(operating margin, none), subtract(#0, #1)",
            True,
        ),  # table steps are whole symbols; order of steps is free
        ("multiply(351, const_m1), add(#0, 538)", "multiply(351, const_m1), subtract(#0, 538)", False),  # different operation
        ("multiply(351, const_m1), add(#0, 538)", "add(187, const_0)", False),  # same value, but 187 is not a gold argument
        ("subtract(110.59, 126.23), divide(#0, 126.23)", "divide(#1, 126.23), subtract(110.59, 126.23)", False),  # forward reference
        (
            "table_average(operating margin, none), table_max(operating margin, none), subtract(#1, #0)",
            "table_min(operating margin, none), table_average(operating margin, none), subtract(#0, #1)",
            False,
        ),  # table_min is not a gold table step
        ("greater(14, 19)", "greater(19, 14)", False),  # greater is not symmetric
        ("greater(14, 19)", "greater(14, 19)", True),  # identical comparison
        ("divide(637, const_5)", "garbage", False),  # not a program
    ],
)
def test_equal_program(gold, predicted, expected):
    assert equal_program(tokenize(gold), tokenize(predicted)) is expected


def test_equal_program_every_dev_gold_equals_itself(finqa):
    # sympy is slow-ish: dev alone keeps the test in seconds while covering every op kind.
    for example in finqa["dev"]:
        tokens = tokenize(example.program)
        assert equal_program(tokens, tokens), example.id


def _rewritten(program):
    """The same program in another form, never identical to it: a dead first step added (every
    reference shifts by one), the arguments of add/multiply swapped, and the result x turned
    into a - (a - x) with the program's first number a (unless it is a yes/no or has none)."""
    steps = programs.split_steps(tokenize(program)[:-1])
    op, arg1, arg2 = steps[0]
    out = [f"{op}({arg1}, {arg2})"]

    def shift(arg):
        return f"#{int(arg[1:]) + 1}" if arg.startswith("#") else arg

    for op, arg1, arg2 in steps:
        if op not in programs.TABLE_OPS:
            arg1, arg2 = shift(arg1), shift(arg2)
            if op in ("add", "multiply"):
                arg1, arg2 = arg2, arg1
        out.append(f"{op}({arg1}, {arg2})")
    numbers = [arg for op, arg1, arg2 in steps if op not in programs.TABLE_OPS for arg in (arg1, arg2) if "#" not in arg]
    if steps[-1][0] != "greater" and numbers:
        out += [f"subtract({numbers[0]}, #{len(out) - 1})", f"subtract({numbers[0]}, #{len(out)})"]
    return ", ".join(out)


def _identities(program, number):
    """``program`` with its result x wrapped in each identity a-(a-x), a/(a/x), (x-a)+a, (x/a)*a."""
    last = len(programs.split_steps(tokenize(program)[:-1])) - 1
    return [
        f"{program}, {first}, {second}"
        for first, second in (
            (f"subtract({number}, #{last})", f"subtract({number}, #{last + 1})"),
            (f"divide({number}, #{last})", f"divide({number}, #{last + 1})"),
            (f"subtract(#{last}, {number})", f"add(#{last + 1}, {number})"),
            (f"divide(#{last}, {number})", f"multiply(#{last + 1}, {number})"),
        )
    ]


def test_equal_program_every_dev_gold_equals_a_rewritten_self(finqa):
    # Not identical, so this goes through the numeric pre-check and sympy for every gold program.
    for example in finqa["dev"]:
        rewritten = _rewritten(example.program)
        assert rewritten != example.program
        assert compare_programs(tokenize(example.program), tokenize(rewritten)) == equivalence.ProgramComparison(True), example.id


def test_every_vendored_gold_is_within_the_symbolic_bound(finqa):
    # The bound is for hostile predictions; a gold program over it could only equal itself.
    sizes = {
        example.id: equivalence.expression_size(programs.split_steps(tokenize(example.program)[:-1]))
        for split in ("train", "dev", "test")
        for example in finqa[split]
    }
    assert max(sizes.values()) <= MAX_EQUAL_PROGRAM_NODES, max(sizes.items(), key=lambda item: item[1])


TOO_LARGE = "too large to compare symbolically"


@pytest.mark.parametrize(
    "gold, predicted, equal, reason",
    [
        ("subtract(5829, 5735), divide(#0, 5735)", "subtract(5829, 5735), divide(#0, 5735)", True, None),  # identical
        ("subtract(5829, 5735), divide(#0, 5735)", "divide(5829, 5735), divide(5735, 5735), subtract(#0, #1)", True, None),  # equal after simplify
        ("subtract(5829, 5735), divide(#0, 5735)", "subtract(5829, 5735), divide(#0, 5829)", False, None),  # differs: decided officially, no reason
        ("subtract(5829, 5735), divide(#0, 5735)", "add(5829, 1)", False, None),  # 1 is not a gold argument
        ("add(14, 19)", "greater(14, 14)", False, None),  # a comparison simplified to false is not an expression (was a TypeError)
        ("add(14, 19)", "greater(14, 19), add(#0, 14)", False, None),  # a yes/no cannot be an operand
        ("add(14, 19)", "add(14, 19), add(#-1, 14)", False, None),  # a negative reference is not an earlier step
        ("add(14, 19)", "add(14, 19), add(#0, #0), subtract(#1, #0)", True, None),  # repeated references, small: sympy decides
        ("exp(14, 19)", "exp(14, 19), multiply(#0, 19), divide(#1, 19)", True, None),  # exp has no numeric pre-check: sympy decides
        ("garbage", "add(14, 19)", False, "gold program is malformed"),  # not our verdict to make: the reason says so
        ("add(14, 19), add(#1, 14)", "add(14, 19)", False, "gold program is malformed"),  # a gold step refers to itself
        ("add(#1, 14), add(14, 19)", "add(19, 14)", True, None),  # a bad gold step the final one never uses is ignored, as officially
    ],
)
def test_compare_programs_rows(gold, predicted, equal, reason):
    assert_verdict(compare_programs(tokenize(gold), tokenize(predicted)), equal, reason)


def assert_verdict(result, equal, reason):
    """``reason`` None: the official comparison decided; else the reason names why it did not."""
    assert result.equal is equal
    if reason is None:
        assert result.reason is None
    else:
        assert reason in result.reason


GOLD = "subtract(29, 4), divide(#0, 4)"


def _chain(length):
    # The program: add, divide, multiply, subtract in turn over the gold's own numbers.
    ops, numbers = ("add", "divide", "multiply", "subtract"), ("29", "4")
    return ", ".join(["add(29, 4)"] + [f"{ops[k % 4]}(#{k - 1}, {numbers[k % 2]})" for k in range(1, length)])


def _padded(pairs):
    # The gold's value, then pairs of add 4 / subtract 4: equal to the gold, but long.
    steps = ["subtract(29, 4)", "divide(#0, 4)"]
    for _ in range(pairs):
        steps.append(f"add(#{len(steps) - 1}, 4)")
        steps.append(f"subtract(#{len(steps) - 1}, 4)")
    return ", ".join(steps)


def _nested_identity(depth):
    # gold * (x / x) with x a continued fraction nested `depth` deep: equal to the gold.
    steps = ["subtract(29, 4)", "divide(#0, 4)", "divide(29, 4)"]
    for k in range(depth):
        steps.append(f"add(4, #{len(steps) - 1})" if k % 2 == 0 else f"divide(29, #{len(steps) - 1})")
    x = len(steps) - 1
    steps += [f"divide(#{x}, #{x})", f"multiply(#1, #{x + 1})"]
    return ", ".join(steps)


def _exp_tail(length):
    # A long chain that ends in exp: the numeric pre-check cannot decide exp, so the bound does.
    return _chain(length) + f", exp(#{length - 1}, 4)"


@pytest.mark.parametrize(
    "predicted, reason",
    [
        (_chain(81), None),  # the 81-step chain (over 300 s before): differs numerically, the official verdict
        (_chain(256), None),  # the step limit: still decided exactly, without sympy
        (", ".join(["add(29, 4)"] + [f"multiply(#{k - 1}, #{k - 1})" for k in range(1, 200)]), None),  # 2^199-fold repeated references
        (_padded(7), TOO_LARGE),  # equal to the gold but 16 steps: the bound decides, and says so
        (_padded(127), TOO_LARGE),  # the same at the step limit
        (_nested_identity(30), TOO_LARGE),  # deep nesting that cancels: might be equal, too large to ask sympy
        (_exp_tail(60), TOO_LARGE),  # exp defeats the pre-check: the bound decides
        (", ".join(["add(29, 4)"] * 300), "more than 256 steps"),  # past the step limit: not even parsed
    ],
)
def test_hostile_programs_are_decided_by_the_bound(predicted, reason):
    assert_verdict(compare_programs(tokenize(GOLD), tokenize(predicted)), False, reason)
    assert equal_program(tokenize(GOLD), tokenize(predicted)) is False


def test_the_bound_is_the_boundary():
    # Both equal the gold; the first has exactly MAX_EQUAL_PROGRAM_NODES nodes (sympy decides),
    # the second the next possible size (a tree of binary steps has an odd number of nodes).
    inside = "subtract(29, 4), divide(#0, 4), add(#1, 4), subtract(#2, 4), subtract(4, 4), multiply(#4, 29), add(#3, #5)"
    outside = _padded(3)
    assert MAX_EQUAL_PROGRAM_NODES == 15
    size = equivalence.expression_size
    assert size(programs.split_steps(tokenize(inside)[:-1])) == MAX_EQUAL_PROGRAM_NODES
    assert size(programs.split_steps(tokenize(outside)[:-1])) > MAX_EQUAL_PROGRAM_NODES
    assert compare_programs(tokenize(GOLD), tokenize(inside)) == equivalence.ProgramComparison(True)
    assert TOO_LARGE in compare_programs(tokenize(GOLD), tokenize(outside)).reason


def test_numeric_pre_check_never_changes_the_symbolic_verdict():
    # The pre-check may only answer "not equal" where sympy would: compare the two on random
    # small programs over the gold's numbers, about half of them rewrites that are equal.
    rng = random.Random(7)
    gold = "add(3, 5), subtract(#0, 7), divide(#1, 5)"
    numbers = ["3", "5", "7"]
    gold_steps = programs.split_steps(tokenize(gold)[:-1])
    gold_side = (gold_steps, equivalence._reachable(gold_steps))
    symbols = {number: index for index, number in enumerate(numbers)}
    candidates = [_rewritten(gold), "add(5, 3), divide(#0, 5), divide(7, 5), subtract(#1, #2)"]
    candidates += [program for number in numbers for program in _identities(gold, number)]
    candidates += [program for number in numbers for program in _identities("add(3, 5), divide(#0, 5)", number)]  # unequal
    for _ in range(30):
        steps = []
        for k in range(rng.randrange(1, 5)):
            args = [f"#{rng.randrange(k)}" if k and rng.random() < 0.5 else rng.choice(numbers) for _ in range(2)]
            steps.append(f"{rng.choice(['add', 'subtract', 'multiply', 'divide'])}({args[0]}, {args[1]})")
        candidates.append(", ".join(steps))
    verdicts = []
    for predicted in candidates:
        predicted_steps = programs.split_steps(tokenize(predicted)[:-1])
        try:
            predicted_side = (predicted_steps, equivalence._reachable(predicted_steps))
        except ProgramError:
            continue
        symbolic = equivalence._symbolic_equal(gold_side, predicted_side, symbols)
        assert compare_programs(tokenize(gold), tokenize(predicted)).equal is symbolic, predicted
        verdicts.append(symbolic)
    assert True in verdicts and False in verdicts
