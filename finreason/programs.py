"""The FinQA program language: tokenize, execute exactly, compare symbolically.

A program is a comma-separated list of steps ``op(arg1, arg2)``; ``#k`` is the value of step k,
``const_N`` is N (``const_m1`` is -1), ``N%`` is N/100, and a table op takes a row name (the
row's first cell) and reduces the numbers in the rest of that row. The result is rounded to 5
decimals and ``greater`` yields ``"yes"``/``"no"``.

Semantics follow FinQA's official ``code/evaluate/evaluate.py`` (``program_tokenization``,
``str_to_num``, ``process_row``, ``eval_program``, ``equal_program``) step for step, including
its quirks, so that ``execute(...) == qa["exe_ans"]`` is exactly the official execution check.
Where the official code swallows every exception and answers "invalid", this module raises
``ProgramError`` with the reason. Nothing here calls ``eval``/``exec``; model output is data.

Program accuracy (``compare_programs``, and ``equal_program`` as a bool) is the official
symbolic comparison within a size bound (``MAX_EQUAL_PROGRAM_NODES``): larger programs that
might be equal are "not equal" with that reason recorded, so no input can make sympy run long.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass

ARITHMETIC_OPS = ("add", "subtract", "multiply", "divide", "exp", "greater")
TABLE_OPS = ("table_max", "table_min", "table_sum", "table_average")
ALL_OPS = ARITHMETIC_OPS + TABLE_OPS
EOF = "EOF"
# Gold programs have at most a handful of steps; these bounds only stop hostile input early.
MAX_PROGRAM_CHARS = 20_000
MAX_PROGRAM_STEPS = 256
# compare_programs leaves sympy out (not equal, with the reason) for a side whose final expression
# tree has more nodes than this (a step used twice counts twice; a table step is one node).
# simplify's cost climbs steeply with nested divisions: the worst CPU time of the symbolic path
# found over adversarial programs (long chains, continued fractions, sums of ratios, repeated
# references, powers, comparisons, and a hill-climbing search over random programs; 6, 8 and 16
# gold symbols; sympy 1.14, sympy cache cleared, on a loaded 2-core box) was 0.19 s at 15 nodes
# (a 7-step continued fraction; single noisy timings peaked at 0.27 s), 0.37 s at 17 and 0.56 s
# at 21. The 40-step chain of add, divide, multiply, subtract (81 nodes) took 2 s.
# Vendored gold programs have at most 11 nodes, and a prediction identical to its gold is equal
# at any size. A size bound, not a clock, so that verdicts do not depend on the machine's load.
MAX_EQUAL_PROGRAM_NODES = 15
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


def _reference_index(arg: str) -> int | None:
    """The step a ``#k`` argument names (``int`` of its text without '#', as officially), or None."""
    try:
        return int(arg.replace("#", ""))
    except ValueError:
        return None


def expression_size(steps: Sequence[tuple[str, str, str]]) -> int:
    """Nodes in the final step's expression tree (a step used twice counts twice), capped.

    A table step is one node: the symbolic comparison treats it as a single symbol.
    """
    sizes: list[int] = []
    for index, (op, arg1, arg2) in enumerate(steps):
        size = 1
        if op not in TABLE_OPS:
            for arg in (arg1, arg2):
                reference = _reference_index(arg) if "#" in arg else None
                if reference is not None and 0 <= reference < index:
                    size += sizes[reference]
                else:
                    size += 1
        sizes.append(min(size, MAX_EQUAL_PROGRAM_NODES + 1))
    return sizes[-1] if sizes else 0


@dataclass(frozen=True)
class ProgramComparison:
    """``compare_programs``' verdict.

    ``reason`` is None when FinQA's official comparison decided ``equal``. It says why when the
    official comparison was not carried out and ``equal`` is False by this module's choice: a side
    over a documented bound, a malformed gold program, or sympy failing on the expressions.
    """

    equal: bool
    reason: str | None = None


_NOT_EQUAL = ProgramComparison(False)

# The numeric pre-check works modulo this prime (2**61 - 1), at these two fixed points.
_MODULUS = (1 << 61) - 1
_POINT_SEEDS = (20_240_611, 7_919)


def _program_steps(tokens: object) -> list[tuple[str, str, str]]:
    if not isinstance(tokens, Sequence) or isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise ProgramError("not a list of program tokens")
    steps = split_steps(list(tokens)[:-1])
    if not steps:
        raise ProgramError("empty program")
    return steps


def _reachable(steps: Sequence[tuple[str, str, str]]) -> list[int]:
    """Indices of the steps the final step depends on (itself included), ascending.

    Raises ``ProgramError`` where the official symbolic code would fail on those steps: a
    reference that is not to an earlier step, or a ``greater`` result used as an operand.
    """
    seen = {len(steps) - 1}
    pending = [len(steps) - 1]
    while pending:
        index = pending.pop()
        op, arg1, arg2 = steps[index]
        if op in TABLE_OPS:
            continue  # a table step is one symbol, whatever its arguments say
        for arg in (arg1, arg2):
            if "#" not in arg:
                continue
            reference = _reference_index(arg)
            if reference is None or not 0 <= reference < index:
                raise ProgramError(f"step {index}: {arg!r} is not a reference to an earlier step")
            if steps[reference][0] == "greater":
                raise ProgramError(f"step {index}: the yes/no of step {reference} cannot be an operand")
            if reference not in seen:
                seen.add(reference)
                pending.append(reference)
    return sorted(seen)


def _modular_value(steps: Sequence[tuple[str, str, str]], reachable: list[int], symbols: dict[object, int], point: list[int]) -> int | None:
    """The final step's value modulo ``_MODULUS`` with symbol k set to ``point[k]``; None where
    that says nothing (``exp``/``greater`` are not rational operations; a division by zero)."""
    values: dict[int, int] = {}
    for index in reachable:
        op, arg1, arg2 = steps[index]
        if op in TABLE_OPS:
            values[index] = point[symbols[(op, arg1, arg2)]]
            continue
        if op not in ("add", "subtract", "multiply", "divide"):
            return None
        left, right = (values[_reference_index(arg)] if "#" in arg else point[symbols[arg]] for arg in (arg1, arg2))
        if op == "add":
            values[index] = (left + right) % _MODULUS
        elif op == "subtract":
            values[index] = (left - right) % _MODULUS
        elif op == "multiply":
            values[index] = left * right % _MODULUS
        elif right == 0:
            return None
        else:
            values[index] = left * pow(right, -1, _MODULUS) % _MODULUS
    return values[reachable[-1]]


def _differ_numerically(gold, predicted, symbols: dict[object, int]) -> bool:
    """True only when the two programs are certainly different functions of their symbols.

    Both sides are evaluated exactly, in the integers modulo a prime, at fixed points. Two
    programs that are the same rational function give the same value at any point where neither
    divides by zero (reduction modulo a prime is a ring homomorphism), so different values prove
    them different, and then neither ``simplify(gold) == simplify(predicted)`` (the official
    test) nor ``simplify(gold - predicted) == 0`` can hold: simplify preserves value. This is
    what keeps long wrong predictions out of sympy. Agreement proves nothing: sympy decides.
    """
    for seed in _POINT_SEEDS:
        rng = random.Random(seed)
        point = [rng.randrange(1, _MODULUS) for _ in range(len(symbols))]
        gold_value = _modular_value(*gold, symbols, point)
        predicted_value = _modular_value(*predicted, symbols, point)
        if gold_value is None or predicted_value is None:
            return False
        if gold_value != predicted_value:
            return True
    return False


def _symbolic_equal(gold, predicted, symbols: dict[object, int]) -> bool:
    """The official comparison: both sides simplified by sympy and compared, then (this module's
    one addition, kept from before) ``simplify(gold - predicted) == 0`` for two expressions."""
    import sympy

    names = {key: sympy.Symbol(f"a{number}") for key, number in symbols.items()}

    def build(steps, reachable):
        built: dict[int, object] = {}
        for index in reachable:
            op, arg1, arg2 = steps[index]
            if op in TABLE_OPS:
                built[index] = names[(op, arg1, arg2)]
                continue
            left, right = (built[_reference_index(arg)] if "#" in arg else names[arg] for arg in (arg1, arg2))
            if op == "greater":
                built[index] = sympy.StrictGreaterThan(left, right, evaluate=False)
            else:
                built[index] = NUMERIC_OPS[op](left, right)
        return built[reachable[-1]]

    gold_expr = sympy.simplify(build(*gold))
    predicted_expr = sympy.simplify(build(*predicted))
    if gold_expr == predicted_expr:
        return True
    # Only two expressions can be subtracted: not a relational, nor the true/false it may become.
    if isinstance(gold_expr, sympy.Expr) and isinstance(predicted_expr, sympy.Expr):
        return sympy.simplify(gold_expr - predicted_expr) == 0
    return False


def compare_programs(gold_tokens: Sequence[str], predicted_tokens: Sequence[str]) -> ProgramComparison:
    """Official program accuracy, bounded: is the predicted program symbolically the gold one?

    Arguments become symbols by their literal text (the gold's mapping); table steps are
    symbols as a whole; a predicted argument the gold does not use, or a reference that is not
    to an earlier step, makes the programs unequal (all as the official ``equal_program``).
    Then, in order: identical steps are equal; programs that differ at a point modulo a prime
    are unequal (exactly what simplify would find, see ``_differ_numerically``); a side whose
    expression tree has more than ``MAX_EQUAL_PROGRAM_NODES`` nodes is unequal with that reason;
    otherwise sympy decides as the official script does (``_symbolic_equal``).
    """
    try:
        gold_steps = _program_steps(gold_tokens)
        gold_reachable = _reachable(gold_steps)
    except ProgramError as error:
        return ProgramComparison(False, f"gold program is malformed: {error}")
    symbols: dict[object, int] = {}  # a table step's (op, arg1, arg2), or a literal argument's text
    for op, arg1, arg2 in gold_steps:
        if op in TABLE_OPS:
            symbols.setdefault((op, arg1, arg2), len(symbols))
            continue
        for arg in (arg1, arg2):
            if "#" not in arg:
                symbols.setdefault(arg, len(symbols))

    if isinstance(predicted_tokens, Sequence) and len(predicted_tokens) > 4 * MAX_PROGRAM_STEPS + 1:
        return ProgramComparison(False, f"predicted program has more than {MAX_PROGRAM_STEPS} steps: not compared")
    try:
        predicted_steps = _program_steps(predicted_tokens)
        for index, (op, arg1, arg2) in enumerate(predicted_steps):
            if op in TABLE_OPS:
                if (op, arg1, arg2) not in symbols:
                    return _NOT_EQUAL
                continue
            for arg in (arg1, arg2):
                if "#" in arg:
                    reference = _reference_index(arg)
                    if reference is None or not 0 <= reference < index:
                        return _NOT_EQUAL
                elif arg not in symbols:
                    return _NOT_EQUAL
        predicted_reachable = _reachable(predicted_steps)
    except ProgramError:
        return _NOT_EQUAL

    if predicted_steps == gold_steps:
        return ProgramComparison(True)
    gold = (gold_steps, gold_reachable)
    predicted = (predicted_steps, predicted_reachable)
    if _differ_numerically(gold, predicted, symbols):
        return _NOT_EQUAL
    for side, steps in (("gold", gold_steps), ("predicted", predicted_steps)):
        nodes = expression_size(steps)
        if nodes > MAX_EQUAL_PROGRAM_NODES:
            return ProgramComparison(
                False,
                f"{side} program too large to compare symbolically: its expression has more than "
                f"{MAX_EQUAL_PROGRAM_NODES} nodes (MAX_EQUAL_PROGRAM_NODES)",
            )
    try:
        return ProgramComparison(_symbolic_equal(gold, predicted, symbols))
    except Exception as error:  # noqa: BLE001 - sympy is a large black box; hostile input must not crash scoring
        return ProgramComparison(False, f"symbolic comparison failed: {type(error).__name__}: {str(error)[:200]}")


def equal_program(gold_tokens: Sequence[str], predicted_tokens: Sequence[str]) -> bool:
    """Official program accuracy as a bool (see ``compare_programs``, which also says why)."""
    return compare_programs(gold_tokens, predicted_tokens).equal
