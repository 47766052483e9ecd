"""The one correctness check: is a model's completion right for a FinQA question?

Evaluation, the GRPO reward and the app all call ``score_completion``; nothing else decides.
Pure Python (no torch), never raises, bounded time on any input.

Answer format taught to the model::

    brief reasoning ...
    Program: subtract(5829, 5735), divide(#0, 5735)
    Answer: 0.01639

Parsing (``parse_completion``)
    * Markers: a ``Program:`` / ``Answer:`` / ``Final answer:`` label (any case) at the start of a
      line, after optional markdown (``**Answer:**``, ``- Answer:``, ``# Answer``, backticks); a
      capitalised ``Program:``/``Answer:`` or any-case ``final answer:`` may also sit mid-line
      (``Program: add(1, 2) Answer: 3`` on one line). Lower-case "the answer: ..." mid-sentence is
      prose, not a marker. ``\\boxed{...}`` is an answer marker too; "the answer is X" is a
      weaker one, used only when there is no answer label and no ``\\boxed{}``.
    * The LAST program marker and the LAST answer marker win (models restate and self-correct);
      a marker with nothing after it takes the next non-empty line, and when that is empty too
      the marker before it is used. A label's value ends at the end of its line or at the next
      label on the same line.
    * A completion with no answer marker has no answer: no number is ever picked out of free
      text, so "In 2008 revenue rose ..." cannot score 2008.
    * Only the last ``MAX_SCAN_CHARS`` characters are scanned and every captured value is cut to
      ``MAX_VALUE_CHARS``: hostile megabytes cost milliseconds.

Numbers (``parse_number``, for the answer text)
    * The FIRST number of the answer text is the stated answer ("2.5% (from 1,200 to 1,230)"
      is 0.025); a number glued to letters ("FY2019") is skipped.
    * ``1,234.5`` thousands separators (a comma must be followed by exactly three digits; "1,5"
      reads as 1); ``$ € £ ¥`` signs; ``-``/Unicode minus; ``(1,234)`` is -1234; full-width digits.
    * ``N%`` / "N percent" / "N percentage points" is N/100, FinQA's official rule (``str_to_num``).
    * Scale words (thousand, million, billion, bn, m, k, ...) are UNITS and are ignored:
      FinQA values are in the table's units, so "$5.2 million" is 5.2.
    * An answer text starting with the word "yes" or "no" is that yes/no (not true/false).
    * Non-finite numbers and non-ASCII digits other than full-width ones are not numbers.

Programs
    The program is run with ``finreason.programs.execute`` on the example's table, first
    verbatim (after removing the marker, surrounding markdown/quotes and a trailing ``EOF``);
    only when that raises ``ProgramError`` is a normalised form tried: text after the last ``)``
    dropped, op names lower-cased, ``$`` removed from numeric arguments, steps re-joined with
    ", " and a comma between two arguments split when unambiguous (``subtract(5829,5735)``),
    never a thousands separator (a comma after a digit followed by exactly three digits and a
    non-digit, as in ``add(1,234, 5)``). A step whose two arguments cannot be told apart, or text
    between steps, leaves the program as it was (and so failing).

Verdicts (``score_completion``)
    * Prediction: the program's value when a program is present and executes to yes/no or a
      finite number (source "program"); otherwise the stated answer (source "answer"); otherwise
      none (source "none", both verdicts False). A program that executes wins even when the
      Answer line disagrees.
    * strict = FinQA's official execution accuracy: ``round(pred, 5) == gold`` exactly
      (the program value is already rounded so; the answer-line number is rounded the same way);
      yes/no must equal the gold yes/no.
    * lenient = strict, or for numbers any of ``pred``, ``pred*100``, ``pred/100`` (percent vs
      fraction of the same quantity) within ``rel_tol`` of gold: ``|c - gold| <= rel_tol*|gold|``
      (an absolute 1e-9 when gold is 0; a 1e-9 relative allowance for float noise from the
      rescaling). yes/no is never lenient-only. Only the prediction is compared (a wrong program
      with a right Answer line is wrong under both).
    * ``gold`` may be a float, "yes"/"no", or a string form of a number ("0.01639"); anything
      else gives both verdicts False with the reason in ``error``.
    * ``vote``: of several predictions for one question (other models' answers), the one most
      agree on, agreement being what strict compares (``answer_key``), so the vote never counts
      as one answer two predictions the strict check would tell apart.

Answers as people publish them (question files, ``finreason.questions``)
    FinQA's strict rule above is unchanged for FinQA (``scale`` ""). Two rules serve gold answers
    written the way reports write them:

    * ``scale="percent"``: the gold answer is in percent, so gold 12.5 means 12.5% = 0.125 and
      strict compares the prediction with 0.125 (a model's fraction 0.125 is strictly right, its
      "12.5" is not). The other scales ("thousand", "million", "billion") are units, like the
      scale words in an answer: the gold is in the table's units and is compared as written.
    * tolerant (``Verdict.tolerant``): a gold answer given with d decimals matches a prediction
      that rounds to it at d decimals (half up), in the gold's units: gold "12.6" matches 12.57
      and 12.649, not 12.65; gold 13 (no decimals) matches 12.5 and 13.4; with ``scale="percent"``
      gold "13.0" matches the fraction 0.12976 (12.976%). The decimals are read from the gold as
      written ("12.60" has two, a JSON number 12.6 has one). yes/no is tolerant only when strict.
      Tolerant is strict or the rounding match; lenient (1%, any of three scales) is separate.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from finreason import equivalence, programs
from finreason.programs import ProgramError

# Completions are a few hundred tokens; these bounds only keep hostile input cheap.
MAX_SCAN_CHARS = 100_000
MAX_VALUE_CHARS = 2_000
MAX_NUMBER_TEXT = 500
GOLD_ZERO_ABS_TOL = 1e-9
FLOAT_NOISE_REL = 1e-9
# The units a published gold answer may be in ("" = the table's units, as in FinQA).
SCALES = ("", "thousand", "million", "billion", "percent")
# Decimals a gold answer may state; more is float noise written out, not a reported precision.
MAX_GOLD_DECIMALS = 10

# Errors an executor bug or a hostile table could still raise; ProgramError is the expected one.
_EXECUTION_ERRORS = (ProgramError, ArithmeticError, TypeError, ValueError, IndexError, KeyError, AttributeError, RecursionError)


@dataclass(frozen=True)
class Parsed:
    program: str | None
    answer_text: str | None


@dataclass(frozen=True)
class Verdict:
    strict: bool
    lenient: bool
    predicted: float | str | None
    source: str  # "program" | "answer" | "none"
    program: str | None
    answer_text: str | None
    error: str | None
    tolerant: bool = False  # the published-rounding rule (module docstring); strict implies it

    def as_dict(self) -> dict[str, Any]:
        return {
            "strict": self.strict,
            "lenient": self.lenient,
            "tolerant": self.tolerant,
            "predicted": self.predicted,
            "source": self.source,
            "program": self.program,
            "answer_text": self.answer_text,
            "error": self.error,
        }


# ------------------------------------------------------------------------------------------
# parsing the completion

# Markdown that may decorate a label: bold/italic, code, headings, quotes, bullets.
_DECOR = r"[ \t*_`#>\-•]*"
# One character class between label and colon keeps matching linear (no nested quantifiers).
_LABEL_TAIL = r"[ \t*_`]*[:：]"
# A label at the start of a line; public because the app cuts the shown reasoning at the first
# one, so the page and the verdict agree on where the Program/Answer lines begin.
LINE_START_MARKER = re.compile(
    r"(?im)^" + _DECOR + r"(?P<label>(?:final\s+)?(?:program|answer))" + _LABEL_TAIL
)
_MID_LINE_MARKER = re.compile(
    r"(?<![A-Za-z])(?P<label>(?i:final\s+answer)|Program|PROGRAM|Answer|ANSWER)" + _LABEL_TAIL
)
_ANSWER_IS = re.compile(r"(?i)\bthe\s+(?:final\s+)?answer\s+is\b[\s:*_`]*")
_BOXED = re.compile(r"\\boxed\s*\{")
_TRAILING_EOF = re.compile(r"(?:[\s,]*\bEOF)+[\s.]*$")
_WRAPPERS = "`*_\"' \t"


# How many markers, from the last backwards, are tried for a non-empty value.
_MAX_MARKERS_TRIED = 20


@dataclass(frozen=True)
class _Marker:
    start: int
    value_start: int
    kind: str  # "program" | "answer" (a label) | "boxed" | "answer_is" (the weak marker)


def _markers(text: str) -> list[_Marker]:
    found: dict[int, _Marker] = {}
    for pattern in (LINE_START_MARKER, _MID_LINE_MARKER):
        for match in pattern.finditer(text):
            kind = "program" if "program" in match.group("label").lower() else "answer"
            # "Final Answer:" also matches as "Answer:"; one marker per value, the earliest label.
            found.setdefault(match.end(), _Marker(match.start("label"), match.end(), kind))
    for match in _ANSWER_IS.finditer(text):
        found.setdefault(match.end(), _Marker(match.start(), match.end(), "answer_is"))
    for match in _BOXED.finditer(text):
        found.setdefault(match.end(), _Marker(match.start(), match.end(), "boxed"))
    return sorted(found.values(), key=lambda marker: marker.start)


def _braced(text: str, start: int) -> str:
    """Content up to the matching ``}`` (nesting allowed); "" when unclosed within bounds."""
    depth = 1
    end = min(len(text), start + MAX_VALUE_CHARS)
    for index in range(start, end):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:index].strip()
    return ""


def _line(text: str, start: int) -> tuple[str, int]:
    """(the line starting at ``start``, capped at MAX_VALUE_CHARS; where that line ends)."""
    end = text.find("\n", start, start + MAX_VALUE_CHARS)
    if end < 0:
        end = min(len(text), start + MAX_VALUE_CHARS)
    return text[start:end], end


def _value(text: str, marker: _Marker, next_label: int) -> str:
    """The rest of the marker's line (up to the next label), else the next non-empty line."""
    if marker.kind == "boxed":
        return _braced(text, marker.value_start)
    line, line_end = _line(text, marker.value_start)
    end = min(line_end, next_label)
    value = text[marker.value_start:end].strip().strip(_WRAPPERS).strip()
    if value or end < line_end:
        return value
    # "Answer:" alone on its line: the value is on the next non-empty line, unless that line
    # is itself a labelled line (then this marker had no value).
    position = line_end + 1
    for _ in range(3):
        if position >= len(text):
            break
        line, line_end = _line(text, position)
        candidate = line.strip().strip(_WRAPPERS).strip()
        if candidate:
            return "" if LINE_START_MARKER.match(line) else candidate
        position = line_end + 1
    return ""


def _last_value(text: str, markers: list[_Marker], kinds: tuple[str, ...], label_starts: list[int]) -> str | None:
    """Value of the last marker of ``kinds`` that has one (the few last tried)."""
    tried = 0
    for marker in reversed(markers):
        if marker.kind not in kinds:
            continue
        position = bisect.bisect_right(label_starts, marker.start)
        next_label = label_starts[position] if position < len(label_starts) else len(text)
        value = _value(text, marker, next_label)
        if value:
            return value
        tried += 1
        if tried >= _MAX_MARKERS_TRIED:
            break
    return None


def parse_completion(text: Any) -> Parsed:
    """The last ``Program:`` and the last answer marker of a completion (see module docstring)."""
    if not isinstance(text, str) or not text:
        return Parsed(None, None)
    text = text[-MAX_SCAN_CHARS:]
    markers = _markers(text)
    # Only the labels cut a value short: "Answer: the answer is 5" keeps "the answer is 5".
    label_starts = [marker.start for marker in markers if marker.kind in ("program", "answer")]
    program = _last_value(text, markers, ("program",), label_starts)
    # "the answer is X" is a weaker marker: used only when no Answer label or \boxed{} exists.
    answer = _last_value(text, markers, ("answer", "boxed"), label_starts)
    if answer is None:
        answer = _last_value(text, markers, ("answer_is",), label_starts)
    program = _clean_program(program) if program else None
    return Parsed(program or None, answer)


def _clean_program(value: str) -> str:
    value = value.strip().strip(_WRAPPERS).strip()
    value = _TRAILING_EOF.sub("", value)
    return value.strip().rstrip(",;").strip().strip(_WRAPPERS).strip()


# ------------------------------------------------------------------------------------------
# program normalisation and execution

_STEP = re.compile(r"([A-Za-z_]+)\s*\(([^()]*)\)")
_BETWEEN_STEPS = re.compile(r"[\s,;]*")
_COMMA_SPACE = re.compile(r",\s+")
_DOLLAR_NUMBER = re.compile(r"^\$\s*(-?[\d,]*\.?\d+%?)$")


def _split_arguments(inner: str) -> tuple[str, str] | None:
    """Two arguments of one step, or None when the split is ambiguous."""
    parts = _COMMA_SPACE.split(inner)
    if len(parts) == 2:
        return parts[0], parts[1]
    if len(parts) > 2:
        return None
    # No ", ": split at the one comma that is not a thousands separator.
    separators = []
    for index, char in enumerate(inner):
        if char != ",":
            continue
        thousands = (
            index > 0
            and inner[index - 1].isdigit()
            and inner[index + 1:index + 4].isdigit()
            and len(inner[index + 1:index + 4]) == 3
            and not inner[index + 4:index + 5].isdigit()
        )
        if not thousands:
            separators.append(index)
    if len(separators) != 1:
        return None
    cut = separators[0]
    return inner[:cut], inner[cut + 1:]


def _clean_argument(arg: str) -> str:
    arg = arg.strip().strip("`*\"'").strip()
    match = _DOLLAR_NUMBER.match(arg)
    return match.group(1) if match else arg


def normalise_program(program: str) -> str | None:
    """The repaired form of a program (see module docstring), or None when no repair applies."""
    if not isinstance(program, str):
        return None
    text = program[:MAX_VALUE_CHARS]
    last = text.rfind(")")
    if last < 0:
        return None
    text = text[:last + 1]
    steps = []
    position = 0
    for match in _STEP.finditer(text):
        if not _BETWEEN_STEPS.fullmatch(text, position, match.start()):
            return None
        arguments = _split_arguments(match.group(2))
        if arguments is None:
            return None
        steps.append((match.group(1).lower(), _clean_argument(arguments[0]), _clean_argument(arguments[1])))
        position = match.end()
    if not steps or position != len(text):
        return None
    return programs.render(steps)


def _finite_or_yes_no(value: Any) -> bool:
    if value in ("yes", "no"):
        return True
    return isinstance(value, float) and math.isfinite(value)


def run_program(program: str, table: Sequence[Sequence[str]] | None) -> tuple[float | str | None, str | None, str | None]:
    """(value, program that ran, error): verbatim first, then the normalised form."""
    try:
        value = programs.execute(program, table)
    except _EXECUTION_ERRORS as error:
        first_error = str(error) or type(error).__name__
    else:
        if _finite_or_yes_no(value):
            return value, program, None
        first_error = f"result {value!r} is not a finite number"
    normalised = normalise_program(program)
    if normalised is not None and normalised != program:
        try:
            value = programs.execute(normalised, table)
        except _EXECUTION_ERRORS:
            return None, None, first_error
        if _finite_or_yes_no(value):
            return value, normalised, None
    return None, None, first_error


def run_tokens(tokens: Any, table: Sequence[Sequence[str]] | None) -> tuple[float | str | None, list[str] | None, str | None]:
    """(value, tokens, error) for an official token-list prediction; never raises."""
    if not isinstance(tokens, (list, tuple)) or not all(isinstance(token, str) for token in tokens):
        return None, None, "predicted is not a list of program tokens"
    try:
        value = programs.execute_tokens(list(tokens), table)
    except _EXECUTION_ERRORS as error:
        return None, None, str(error) or type(error).__name__
    if not _finite_or_yes_no(value):
        return None, None, f"result {value!r} is not a finite number"
    return value, list(tokens), None


def program_is_well_formed(program: str) -> bool:
    """Structure only (for when no table is at hand): op(arg, arg) steps with known ops."""
    for candidate in (program, normalise_program(program)):
        if not isinstance(candidate, str) or len(candidate) > programs.MAX_PROGRAM_CHARS:
            continue
        try:
            steps = programs.split_steps(programs.tokenize(candidate)[:-1])
        except _EXECUTION_ERRORS:
            continue
        if steps:
            return True
    return False


# ------------------------------------------------------------------------------------------
# numbers

_NUMBER_TRANSLATION = str.maketrans(
    {
        "\u2212": "-", "\ufe63": "-", "\uff0d": "-",  # minus signs
        "\uff0c": ",", "\uff0e": ".", "\uff05": "%", "\uff04": "$", "\uff08": "(", "\uff09": ")",
        **{chr(0xFF10 + digit): str(digit) for digit in range(10)},  # full-width digits
    }
)
# LaTeX a model may wrap a number in: \boxed{}, \text{}, \, thin spaces, \% and \$, {,}.
_LATEX = re.compile(r"\\[A-Za-z]+|\\[,!;: ]|\\(?=[%$])|\{,\}|[{}]")
_YES_NO = re.compile(r"(?i)^[^A-Za-z0-9]*(yes|no)\b")
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])"
    r"(?P<open>\(\s*)?"
    r"(?P<sign1>-\s*)?"
    r"(?P<currency>[$€£¥]\s*)?"
    r"(?P<sign2>-\s*)?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,]*\d)|\d+(?:\.\d+)?|\.\d+)"
    r"(?P<exponent>[eE][-+]?\d+)?"
    r"(?P<percent>\s*(?:%|percent(?:age)?(?:\s+points?)?\b|per\s+cent\b|pct\b))?",
    re.ASCII,
)
# The ")" closing an accounting negative; "(2.1)%" still carries its percent.
_CLOSE = re.compile(r"[ \t]*\)(?P<percent>[ \t]*%)?")


def parse_number(text: Any) -> float | str | None:
    """The stated answer in ``text``: a float, "yes"/"no", or None (see module docstring)."""
    if not isinstance(text, str):
        return None
    text = _LATEX.sub("", text[:MAX_NUMBER_TEXT].translate(_NUMBER_TRANSLATION)).replace("*", "").replace("`", "")
    yes_no = _YES_NO.match(text)
    if yes_no:
        return yes_no.group(1).lower()
    match = _NUMBER.search(text)
    if match is None:
        return None
    # A thousands group that breaks off ("1,23") ends the number at its first comma.
    digits = match.group("digits")
    try:
        value = float(digits.replace(",", "") + (match.group("exponent") or ""))
    except ValueError:
        return None
    if match.group("sign1") or match.group("sign2"):
        value = -value
    percent = bool(match.group("percent"))
    if match.group("open"):
        close = _CLOSE.match(text, match.end())
        if close:
            value = -value  # accounting negative: (1,234)
            percent = percent or bool(close.group("percent"))
    if percent:
        value = value / 100.0
    if not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------------
# verdicts


# A published gold answer as text: a plain decimal number, thousands grouped by commas or not,
# an exponent allowed. Nothing else ("0x10", "12abc", "1.2.3", "1_000", "nan") is a number here.
_GOLD_NUMBER = re.compile(r"[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def coerce_gold(gold: Any) -> float | str | None:
    """Gold as float or "yes"/"no", or None if it is not exactly one of those: a finite number,
    a string that is wholly a number ("1,234.5", "-0.5", "1e3") or "yes"/"no" (any case)."""
    if isinstance(gold, bool):
        return None
    if isinstance(gold, str):
        stripped = gold.strip().lower()
        if stripped in ("yes", "no"):
            return stripped
        if len(stripped) > MAX_NUMBER_TEXT or not _GOLD_NUMBER.fullmatch(stripped):
            return None
        gold = stripped.replace(",", "")
    if isinstance(gold, (int, float, str)):
        try:
            value = float(gold)
        except (OverflowError, ValueError):
            return None  # an integer too large for a float
        return value if math.isfinite(value) else None
    return None


def _close(candidate: float, gold: float, rel_tol: float) -> bool:
    if not math.isfinite(candidate):
        return False
    tolerance = rel_tol * abs(gold) if gold != 0 else GOLD_ZERO_ABS_TOL
    return abs(candidate - gold) <= tolerance or math.isclose(candidate, gold, rel_tol=FLOAT_NOISE_REL)


def answer_key(predicted: Any) -> float | str | None:
    """What the strict check compares of a prediction: yes/no as it is, a number rounded as FinQA
    rounds it; None for no answer, a value that cannot be rounded, or any other text (evaluation
    records keep a non-finite result as "inf"/"nan"). Two predictions with the same key get the
    same strict verdict on every question."""
    if isinstance(predicted, str):
        return predicted if predicted in ("yes", "no") else None
    if predicted is None:
        return None
    try:
        rounded = float(round(predicted, programs.ROUND_DIGITS))
    except (OverflowError, ValueError, TypeError):
        return None
    return rounded if math.isfinite(rounded) else None


def vote(predictions: Sequence[Any]) -> int | None:
    """The index of the prediction most of ``predictions`` agree on, agreement being the strict
    check's (``answer_key``); a tie goes to the answer given first, so list the most trusted
    source first. None when no prediction is an answer."""
    keys = [answer_key(predicted) for predicted in predictions]
    answers = [key for key in keys if key is not None]
    if not answers:
        return None
    # max keeps the first of equal counts, and answers keep the order given: a tie goes to the earliest
    return keys.index(max(answers, key=answers.count))


def compare(predicted: float | str | None, gold: float | str, rel_tol: float = 0.01) -> tuple[bool, bool]:
    """(strict, lenient) for an already-parsed prediction (see module docstring)."""
    if predicted is None:
        return False, False
    if isinstance(predicted, str) or isinstance(gold, str):
        same = predicted == gold
        return same, same
    rounded = answer_key(predicted)
    if rounded is None:
        return False, False
    strict = rounded == gold
    try:
        rel_tol = max(0.0, float(rel_tol))
    except (TypeError, ValueError):
        rel_tol = 0.0
    if not math.isfinite(rel_tol):
        rel_tol = 0.0
    lenient = strict or any(_close(candidate, gold, rel_tol) for candidate in (rounded, rounded * 100.0, rounded / 100.0))
    return strict, lenient


def gold_decimals(gold: Any) -> int | None:
    """Decimals the gold answer is written with ("12.60" -> 2, 13 -> 0, "1,452.4" -> 1), or None
    when it is not a plain number (yes/no, text)."""
    if isinstance(gold, bool) or not isinstance(gold, (int, float, str)):
        return None
    text = repr(gold) if isinstance(gold, float) else str(gold)
    text = text.strip().replace(",", "").lstrip("$").rstrip("%").strip()
    try:
        exponent = Decimal(text).as_tuple().exponent
    except (InvalidOperation, ValueError):
        return None
    if not isinstance(exponent, int):
        return None  # NaN / Infinity
    return min(MAX_GOLD_DECIMALS, max(0, -exponent))


def in_gold_units(gold: float, scale: str) -> float:
    """The gold value the strict rule compares with: a percent gold as its fraction (12.5 -> 0.125)."""
    if scale != "percent":
        return gold
    return float(Decimal(repr(gold)) / 100)


def rounds_to(predicted: float | str | None, gold: float | str, decimals: int | None, scale: str = "") -> bool:
    """The tolerant rule (module docstring): ``predicted`` (a fraction when ``scale`` is percent)
    rounded half up at the gold's ``decimals`` equals the gold as written."""
    if decimals is None or not isinstance(predicted, float) or not isinstance(gold, float) or not math.isfinite(predicted):
        return False
    candidate = predicted * 100.0 if scale == "percent" else predicted
    step = Decimal(1).scaleb(-decimals)
    try:
        # 12 significant decimals first: float noise (0.12976 * 100 = 12.975999...) is not a digit
        mine = Decimal(repr(round(candidate, 12))).quantize(step, rounding=ROUND_HALF_UP)
        theirs = Decimal(repr(gold)).quantize(step, rounding=ROUND_HALF_UP)
    except (InvalidOperation, OverflowError, ValueError):
        return False
    return mine == theirs


def score_completion(
    completion: Any,
    gold: Any,
    table: Sequence[Sequence[str]] | None,
    rel_tol: float = 0.01,
    scale: str = "",
) -> Verdict:
    """Decide whether ``completion`` answers correctly (see module docstring). Never raises.
    ``scale`` (one of SCALES) says what units a published gold answer is in; "" for FinQA."""
    parsed = parse_completion(completion)
    gold_value = coerce_gold(gold)
    scale = scale if scale in SCALES else ""
    predicted: float | str | None = None
    source = "none"
    errors = []
    program_ran = parsed.program
    if parsed.program is not None:
        value, program_ran, error = run_program(parsed.program, table)
        if error is None:
            predicted, source = value, "program"
        else:
            program_ran = parsed.program
            errors.append(f"program: {error}")
    if source == "none" and parsed.answer_text is not None:
        number = parse_number(parsed.answer_text)
        if number is None:
            errors.append("answer: no number or yes/no in the Answer text")
        else:
            # parse_number gives a finite float or yes/no, so the key is never None here
            predicted = answer_key(number)
            source = "answer"
    if parsed.program is None and parsed.answer_text is None:
        errors.append("no Program: or Answer: line")
    if gold_value is None:
        errors.append(f"gold {str(gold)[:40]!r} is not a number or yes/no")
        strict = lenient = tolerant = False
    else:
        if isinstance(gold_value, float):
            strict, lenient = compare(predicted, in_gold_units(gold_value, scale), rel_tol)
        else:
            strict, lenient = compare(predicted, gold_value, rel_tol)
        tolerant = strict or rounds_to(predicted, gold_value, gold_decimals(gold), scale)
    return Verdict(
        strict=strict,
        lenient=lenient,
        predicted=predicted,
        source=source,
        program=program_ran,
        answer_text=parsed.answer_text,
        error="; ".join(errors) or None,
        tolerant=tolerant,
    )


def has_parseable_answer(completion: Any, table: Sequence[Sequence[str]] | None = None) -> bool:
    """A Program that executes (well-formed, when no table is given) or an Answer that parses."""
    parsed = parse_completion(completion)
    if parsed.program is not None:
        if table is None:
            if program_is_well_formed(parsed.program):
                return True
        elif run_program(parsed.program, table)[2] is None:
            return True
    return parsed.answer_text is not None and parse_number(parsed.answer_text) is not None


def official_prediction_verdict(predicted_tokens: Any, example: Any) -> tuple[bool, bool, str | None]:
    """FinQA's official (execution accuracy, program accuracy) for one token-list prediction, and
    a note saying why program accuracy was decided by a bound rather than the official symbolic
    comparison (None when the official comparison decided). ``equivalence.compare_programs`` keeps
    sympy to expressions of at most ``equivalence.MAX_EQUAL_PROGRAM_NODES`` nodes and proves wrong
    programs unequal without it, so any prediction, however long, scores in milliseconds to a
    few tenths of a second. Never raises."""
    if not isinstance(predicted_tokens, (list, tuple)) or not all(isinstance(t, str) for t in predicted_tokens):
        return False, False, None
    if len(predicted_tokens) > 4 * programs.MAX_PROGRAM_STEPS + 1:
        return False, False, f"predicted program has more than {programs.MAX_PROGRAM_STEPS} steps: not run or compared"
    try:
        table, gold, gold_program = example.table, example.exe_ans, example.program
    except AttributeError:
        return False, False, "the example has no table, exe_ans or program"
    try:
        executed = programs.execute_tokens(list(predicted_tokens), table)
    except _EXECUTION_ERRORS:
        exe_correct = False
    else:
        exe_correct = executed == gold
    try:
        comparison = equivalence.compare_programs(programs.tokenize(gold_program), list(predicted_tokens))
    except _EXECUTION_ERRORS as error:
        return exe_correct, False, f"program comparison failed: {str(error) or type(error).__name__}"
    return exe_correct, comparison.equal, comparison.reason


def score_official_prediction(predicted_tokens: Any, example: Any) -> tuple[bool, bool]:
    """(execution accuracy, program accuracy) of ``official_prediction_verdict``, without its note."""
    exe_correct, program_correct, _ = official_prediction_verdict(predicted_tokens, example)
    return exe_correct, program_correct
