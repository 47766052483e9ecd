"""The FinQA program language: tokenize and execute exactly.

A program is a comma-separated list of steps ``op(arg1, arg2)``; ``#k`` is the value of step k,
``const_N`` is N (``const_m1`` is -1), ``N%`` is N/100, and a table op takes a row name (the
row's first cell) and reduces the numbers in the rest of that row. The result is rounded to 5
decimals and ``greater`` yields ``"yes"``/``"no"``.

Semantics follow FinQA's official ``code/evaluate/evaluate.py`` (``program_tokenization``,
``str_to_num``, ``process_row``, ``eval_program``) step for step, including
its quirks, so that ``execute(...) == qa["exe_ans"]`` is exactly the official execution check.
Where the official code swallows every exception and answers "invalid", this module raises
``ProgramError`` with the reason. Nothing here calls ``eval``/``exec``; model output is data.

Program accuracy, the official symbolic comparison of two programs, is ``finreason.equivalence``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

ARITHMETIC_OPS = ("add", "subtract", "multiply", "divide", "exp", "greater")
TABLE_OPS = ("table_max", "table_min", "table_sum", "table_average")
ALL_OPS = ARITHMETIC_OPS + TABLE_OPS
EOF = "EOF"
# Gold programs have at most a handful of steps; these bounds only stop hostile input early.
MAX_PROGRAM_CHARS = 20_000
MAX_PROGRAM_STEPS = 256
ROUND_DIGITS = 5

Value = float | str  # a number, or "yes"/"no" from greater


class ProgramError(ValueError):
    """The program cannot be executed; ``str(error)`` says why."""


@dataclass(frozen=True)
class StepResult:
    index: int
    op: str
    arg1: str
    arg2: str
    value: Value | complex  # complex only where a fractional power of a negative number appears

    def __str__(self) -> str:
        return f"#{self.index} = {self.op}({self.arg1}, {self.arg2}) = {format_value(self.value)}"


def tokenize(program: str) -> list[str]:
    """Official ``program_tokenization``: split on ", ", cut out "op(" and ")", append EOF."""
    tokens: list[str] = []
    for piece in program.split(", "):
        current = ""
        for char in piece:
            if char == ")" and current != "":
                tokens.append(current)
                current = ""
            current += char
            if char in "()":
                tokens.append(current)
                current = ""
        if current != "":
            tokens.append(current)
    tokens.append(EOF)
    return tokens


def str_to_num(text: str) -> float | None:
    """Official ``str_to_num``: commas dropped, ``N%`` -> N/100, ``const_N`` -> N; None if not a number."""
    text = text.replace(",", "")
    try:
        return float(text)
    except ValueError:
        pass
    if "%" in text:
        try:
            return float(text.replace("%", "")) / 100.0
        except ValueError:
            return None
    if "const" in text:
        text = text.replace("const_", "")
        if text == "m1":
            text = "-1"
        try:
            return float(text)
        except ValueError:
            return None
    return None


def cell_to_num(cell: str) -> float | None:
    """Official ``process_row`` on one cell: "$" dropped, everything from "(" on dropped."""
    cell = cell.replace("$", "").strip()
    cell = cell.split("(")[0].strip()
    return str_to_num(cell)


def row_numbers(row: Sequence[str]) -> list[float] | None:
    """All cells as numbers, or None when any cell is not a number (official: the row is n/a)."""
    numbers = []
    for cell in row:
        number = cell_to_num(cell)
        if number is None:
            return None
        numbers.append(number)
    return numbers


def _check_structure(tokens: Sequence[str]) -> None:
    for index, token in enumerate(tokens):
        if index % 4 == 0 and token.strip("(") not in ALL_OPS:
            raise ProgramError(f"token {index} ({token!r}) should be an operation, one of {', '.join(ALL_OPS)}")
        if (index + 1) % 4 == 0 and token != ")":
            raise ProgramError(f"token {index} ({token!r}) should be ')': every step is op(arg1, arg2)")


def split_steps(tokens: Sequence[str]) -> list[tuple[str, str, str]]:
    """(op, arg1, arg2) per step from a token list *without* its trailing EOF, as the official code reads it."""
    if len(tokens) > 4 * MAX_PROGRAM_STEPS:
        raise ProgramError(f"program has more than {MAX_PROGRAM_STEPS} steps")
    _check_structure(tokens)
    joined = "|".join(tokens)
    steps = []
    for index, step in enumerate(joined.split(")")[:-1]):
        step = step.strip()
        parts = step.split("(")
        if len(parts) > 2:
            raise ProgramError(f"step {index} has a stray '(': {step.replace('|', ' ')!r}")
        if len(parts) < 2:
            raise ProgramError(f"step {index} has no '(': {step.replace('|', ' ')!r}")
        op = parts[0].strip("|").strip()
        args = parts[1].strip("|").strip().split("|")
        if len(args) < 2:
            raise ProgramError(f"step {index} ({op}) needs two arguments")
        steps.append((op, args[0].strip(), args[1].strip()))
    return steps


def _reference(arg: str, results: dict[int, Value | complex], index: int) -> Value | complex:
    try:
        target = int(arg.replace("#", ""))
    except ValueError:
        raise ProgramError(f"step {index}: {arg!r} is not a step reference like #0") from None
    if target not in results:
        raise ProgramError(f"step {index}: {arg!r} refers to a step that has not run yet")
    return results[target]


def _operand(arg: str, results: dict[int, Value | complex], index: int) -> Value | complex:
    if "#" in arg:
        return _reference(arg, results, index)
    number = str_to_num(arg)
    if number is None:
        raise ProgramError(f"step {index}: {arg!r} is not a number, constant, percent or #reference")
    return number


# Python's own operators on floats, as the official evaluation applies them (so its overflow,
# complex-power and string quirks are reproduced); shared with the symbolic comparison.
NUMERIC_OPS = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
    "exp": operator.pow,
}


def _arithmetic(op: str, left, right, index: int) -> Value | complex:
    try:
        if op == "greater":
            return "yes" if left > right else "no"
        return NUMERIC_OPS[op](left, right)
    except ZeroDivisionError:
        raise ProgramError(f"step {index}: division by zero in {op}") from None
    except OverflowError:
        raise ProgramError(f"step {index}: {op} overflows") from None
    except TypeError:
        raise ProgramError(f"step {index}: {op} cannot combine {left!r} and {right!r}") from None


def _table_row(table: Sequence[Sequence[str]] | None, name: str, index: int) -> list[float]:
    if table is None:
        raise ProgramError(f"step {index}: table operation but no table was given")
    rows: dict[str, Sequence[str]] = {}
    try:
        for row in table:
            rows[row[0]] = row[1:]  # a later row with the same name wins, as in the official dict
    except (IndexError, TypeError, KeyError):
        raise ProgramError(f"step {index}: the table is not a list of non-empty rows") from None
    if name not in rows:
        raise ProgramError(f"step {index}: no table row named {name!r}")
    numbers = row_numbers([str(cell) for cell in rows[name]])
    if numbers is None:
        raise ProgramError(f"step {index}: table row {name!r} has a cell that is not a number")
    return numbers


def _reduce(op: str, numbers: list[float], name: str, index: int) -> float:
    if op == "table_sum":
        return sum(numbers)
    if not numbers:
        raise ProgramError(f"step {index}: table row {name!r} has no values")
    if op == "table_max":
        return max(numbers)
    if op == "table_min":
        return min(numbers)
    return sum(numbers) / len(numbers)


def trace_tokens(tokens: Sequence[str], table: Sequence[Sequence[str]] | None) -> list[StepResult]:
    """Execute an official token list (its last token, normally EOF, is dropped as officially)."""
    if not isinstance(tokens, Sequence) or isinstance(tokens, str):
        raise ProgramError("a program token list is expected")
    if not all(isinstance(token, str) for token in tokens):
        raise ProgramError("every program token must be a string")
    steps = split_steps(list(tokens)[:-1])
    if not steps:
        raise ProgramError("empty program")
    results: dict[int, Value | complex] = {}
    trace: list[StepResult] = []
    last_row: tuple[str, list[float]] | None = None
    for index, (op, arg1, arg2) in enumerate(steps):
        if op in ARITHMETIC_OPS:
            left = _operand(arg1, results, index)
            right = _operand(arg2, results, index)
            value = _arithmetic(op, left, right, index)
        elif op in TABLE_OPS:
            if "#" in arg1:
                _reference(arg1, results, index)
                # Official quirk: a #reference as row name reuses the row of the previous table step.
                if last_row is None:
                    raise ProgramError(f"step {index}: {op} needs a row name, not {arg1!r}")
            else:
                last_row = (arg1, _table_row(table, arg1, index))
            value = _reduce(op, last_row[1], last_row[0], index)
        else:
            raise ProgramError(f"step {index}: unknown operation {op!r}")
        results[index] = value
        trace.append(StepResult(index, op, arg1, arg2, value))
    return trace


def finish(value: Value | complex) -> Value:
    """Official final rounding: numbers to 5 decimals; yes/no unchanged."""
    if value in ("yes", "no"):
        return value
    if isinstance(value, complex):
        raise ProgramError("result is a complex number (fractional power of a negative number)")
    if isinstance(value, str):
        raise ProgramError(f"result {value!r} is not a number")
    return float(round(value, ROUND_DIGITS))


def execute_tokens(tokens: Sequence[str], table: Sequence[Sequence[str]] | None) -> Value:
    """Execute an official prediction token list ``[..., "EOF"]``."""
    return finish(trace_tokens(tokens, table)[-1].value)


def trace(program: str, table: Sequence[Sequence[str]] | None) -> list[StepResult]:
    """Every step with its value (not rounded), for display."""
    if not isinstance(program, str):
        raise ProgramError("program must be a string")
    if len(program) > MAX_PROGRAM_CHARS:
        raise ProgramError(f"program longer than {MAX_PROGRAM_CHARS} characters")
    if not program.strip():
        raise ProgramError("empty program")
    return trace_tokens(tokenize(program), table)


def execute(program: str, table: Sequence[Sequence[str]] | None) -> Value:
    """Execute ``program`` over ``table`` (rows of cells, first cell = row name).

    Returns the value rounded to 5 decimals, or "yes"/"no"; raises ``ProgramError`` with the
    reason wherever the official evaluation would mark the program invalid.
    """
    return finish(trace(program, table)[-1].value)


def format_value(value: Value | complex) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, complex):
        return str(value)
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.5f}".rstrip("0").rstrip(".") if math.isfinite(value) else str(value)


def render(steps: Sequence[tuple[str, str, str]]) -> str:
    """Canonical text of a program, the inverse of tokenize for well-formed steps."""
    return ", ".join(f"{op}({arg1}, {arg2})" for op, arg1, arg2 in steps)


# the operations whose two arguments may trade places without changing the value
COMMUTATIVE_OPS = ("add", "multiply")


def commuted(program: str) -> str | None:
    """``program`` with the arguments of every add and multiply step swapped: the same calculation
    written the other way (FinQA's ``equal_program`` agrees), a second target for SFT
    (SFT_PROGRAM_VIEWS). None when no step has two different arguments to swap, or the program
    does not parse."""
    try:
        steps = split_steps(tokenize(program)[:-1])
    except ProgramError:
        return None
    swapped = [(op, arg2, arg1) if op in COMMUTATIVE_OPS else (op, arg1, arg2) for op, arg1, arg2 in steps]
    return render(swapped) if swapped != steps else None
