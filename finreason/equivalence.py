"""Program accuracy: FinQA's official symbolic comparison of a predicted and a gold program.

``compare_programs`` (and ``equal_program`` as a bool) follows the official ``equal_program``
in ``code/evaluate/evaluate.py``: arguments become sympy symbols by their text, both sides are
simplified and compared. It runs within a size bound (``MAX_EQUAL_PROGRAM_NODES``): larger
programs that might be equal are "not equal" with that reason recorded, so no input can make
sympy run long; a numeric pre-check modulo a prime proves most wrong predictions unequal
without sympy. Executing a program is ``finreason.programs``' job; this module only compares.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from finreason.programs import MAX_PROGRAM_STEPS, NUMERIC_OPS, TABLE_OPS, ProgramError, split_steps

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
