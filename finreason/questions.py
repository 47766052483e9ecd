"""A file of your own questions over any tables and text: the format, reading it, and what is
written per question (``06_evaluate.py --questions FILE`` and the app's question-file mode).

Format: JSONL (one object a line) or one JSON list of objects::

    {"id": "acme-1",                                   # required, unique in the file
     "question": "what was the percent change in revenue from 2018 to 2019?",
     "table": [["", "2019", "2018"], ["Revenue", "$ 1,452.4", "1,310.0"]],   # or a CSV /
                                                       # markdown pipe table as one string
     "text": ["Revenue grew on volume.", "..."],       # or one string of paragraphs (optional)
     "answer": 10.9,                                   # optional: a number, "10.9" or "yes"/"no"
     "scale": "percent"}                               # optional: "" thousand million billion percent

Tables go through the app's own-table parser (``finreason.uploads``: cells normalised the way
FinQA's own tables were); text is split into sentences as the retriever expects. A question needs
a table or some text. A line that is not valid (not JSON, a missing or duplicate id, no question,
a table that is not a table, an answer that is not a number or yes/no, an unknown scale) is
counted and named in ``QuestionFile.invalid``; the other lines are answered. An answer string
ending in "%" ("12.5%") is read as the number with ``scale`` "percent"; any other answer string
must be wholly a number or yes/no (``scoring.coerce_gold``). The file is UTF-8 (JSON's own
encoding): a line in another encoding is an invalid line, a UTF-16 file is refused. It is read
through ``storage``'s bounded reader (a regular file, at most MAX_FILE_MB, JSON at most
``storage.MAX_JSON_DEPTH`` deep), and with a ``limit`` JSONL is parsed only until that many valid
questions are read (the hash still covers the whole file). How answers are scored:
``finreason.scoring`` (the strict rule, ``scale`` and the tolerant rule).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from finreason import programs, scoring, stats, storage, uploads
from finreason.errors import FinReasonError

# A question file holds whole reports: far bigger tables and texts than one pasted table.
MAX_TABLE_ROWS = 10_000
MAX_TEXT_KB = 1024
TEXT_LIMIT = "a question file's limit per table or text"  # how messages name MAX_TEXT_KB
MAX_FILE_MB = 256
MAX_INVALID_SHOWN = 50  # named in the summary; all are counted
# What the answers table (app, CSV download) shows per question, in order.
CSV_COLUMNS = ("id", "question", "predicted", "answer", "scale", "strict", "tolerant", "lenient", "program", "source", "error")


class QuestionFileError(FinReasonError):
    """The file as a whole cannot be read (missing, binary, a JSON list that does not parse)."""


@dataclass(frozen=True)
class Question(uploads.UserDocument):
    """One question; quacks like ``finreason.data.Example`` for the prompt builder and retriever."""

    answer: Any = None  # as written in the file (float, int or str); None = no answer given
    scale: str = ""


@dataclass(frozen=True)
class QuestionFile:
    questions: list[Question]
    invalid: list[dict[str, Any]] = field(default_factory=list)  # {"line", "id", "reason"}
    sha256: str = ""
    name: str = ""

    def describe_invalid(self) -> list[dict[str, Any]]:
        return self.invalid[:MAX_INVALID_SHOWN]


class _Invalid(ValueError):
    """One record is not a valid question; its message names why."""


def _table(raw: Any) -> list[list[str]] | None:
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, str):
        return uploads.parse_table_text(raw, MAX_TEXT_KB, MAX_TABLE_ROWS, "the table", TEXT_LIMIT)
    if not isinstance(raw, list) or not all(isinstance(row, list) for row in raw):
        raise _Invalid("table must be a list of rows (lists of cells) or a CSV / markdown table as one string")
    rows = []
    for row in raw:
        if not all(cell is None or isinstance(cell, (str, int, float)) and not isinstance(cell, bool) for cell in row):
            raise _Invalid("table cells must be text or numbers")
        rows.append(["" if cell is None else str(cell) for cell in row])
    return uploads.normalise_table(rows, MAX_TABLE_ROWS)


def _text(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        # one item is one paragraph or sentence: never run two items together
        return "\n".join(raw)
    raise _Invalid("text must be a string or a list of strings")


def _answer(raw: Any, scale: str) -> tuple[Any, str]:
    if raw is None or raw == "":
        return None, scale
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise _Invalid("answer must be a number, a numeric string or yes/no")
    if isinstance(raw, str) and raw.strip().endswith("%"):
        if scale not in ("", "percent"):
            raise _Invalid(f"answer {raw!r} is a percent but scale is {scale!r}")
        raw, scale = raw.strip()[:-1].strip(), "percent"
    if scoring.coerce_gold(raw) is None:
        raise _Invalid(f"answer {str(raw)[:40]!r} is not a number or yes/no")
    return raw, scale


def parse_record(raw: Any) -> Question:
    """One object of the file as a Question; raises ``_Invalid`` (or ``uploads.UploadError``)."""
    if not isinstance(raw, Mapping):
        raise _Invalid("not a JSON object")
    ident = raw.get("id")
    if isinstance(ident, bool) or not isinstance(ident, (str, int)) or not str(ident).strip():
        raise _Invalid("no id (a non-empty string or number)")
    scale = "" if raw.get("scale") is None else raw.get("scale")
    # 0, false or [] are not "no scale": a wrong value is named, never read as the default
    if not isinstance(scale, str) or scale not in scoring.SCALES:
        raise _Invalid(f"scale {str(scale)[:20]!r} is not one of {', '.join(repr(s) for s in scoring.SCALES)}")
    answer, scale = _answer(raw.get("answer"), scale)
    question = raw.get("question")
    if not isinstance(question, str):
        raise _Invalid("no question (a string)")
    document = uploads.build_document(question, _table(raw.get("table")), _text(raw.get("text")), MAX_TEXT_KB, TEXT_LIMIT)
    return Question(question=document.question, table=document.table, pre_text=document.pre_text,
                    id=str(ident).strip(), answer=answer, scale=scale)


_UTF8_BOM = b"\xef\xbb\xbf"
_HASH_BLOCK = 1 << 20


def _decoded(raw: bytes, number: int) -> str:
    """One line as text; JSON is UTF-8 (RFC 8259), so a line in another encoding is named, not guessed."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _Invalid(f"not UTF-8 text (byte {raw[error.start:error.start + 1]!r} at column {error.start + 1}): save the file as UTF-8") from None


def _item(text: str) -> Any:
    try:
        return storage.loads_bounded(text)
    except ValueError as error:
        return _Invalid(f"not valid JSON ({error})")


class _Reader:
    """Reads a question file once: hashes every byte, parses lines until ``limit`` valid questions."""

    def __init__(self, handle: BinaryIO, label: str) -> None:
        self.lines = storage.bounded_lines(handle, MAX_FILE_MB * 2**20, label, "questions.MAX_FILE_MB")
        self.digest = hashlib.sha256()
        self.label = label

    def __iter__(self) -> Iterator[bytes]:
        for raw in self.lines:
            self.digest.update(raw)
            yield raw

    def finish(self) -> str:
        """Hash what was not parsed: the file's hash names the whole file whatever ``limit`` read."""
        for _ in self:
            pass
        return self.digest.hexdigest()


def _check_start(first: bytes, label: str) -> bytes:
    if first.startswith(uploads.UTF16_BOMS):
        raise QuestionFileError(f"{label} is UTF-16 text: save it as UTF-8 (JSON files are UTF-8)")
    if b"\x00" in first[:4096]:
        raise QuestionFileError(f"{label}: this file is binary, not JSON lines: write one question object a line (JSONL)")
    return first.removeprefix(_UTF8_BOM)


def _json_list(raw: bytes, label: str) -> list[tuple[int, Any]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise QuestionFileError(f"{label}: line {line} is not UTF-8 text: save the file as UTF-8") from None
    try:
        items = storage.loads_bounded(text)
    except ValueError as error:
        raise QuestionFileError(f"{label} starts with '[' but is not one JSON list ({error}); write one object a line (JSONL) instead") from None
    if not isinstance(items, list):
        raise QuestionFileError(f"{label} must be a JSON list of question objects or one object a line")
    return list(enumerate(items, start=1))


def _parse_stream(handle: BinaryIO, name: str, label: str, limit: int = 0) -> QuestionFile:
    """Every valid question of an open file (the first ``limit`` when > 0: parsing stops there,
    where a JSON list allows it), each invalid line named with its reason, and the file's hash."""
    reader = _Reader(handle, label)
    questions: list[Question] = []
    invalid: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}

    def add(number: int, item: Any) -> None:
        ident = str(item.get("id")).strip() if isinstance(item, Mapping) and item.get("id") is not None else None
        try:
            if isinstance(item, _Invalid):
                raise item
            question = parse_record(item)
            if question.id in first_line:
                raise _Invalid(f"duplicate id {question.id!r} (first on line {first_line[question.id]})")
        except (_Invalid, uploads.UploadError) as error:
            invalid.append({"line": number, "id": ident, "reason": str(error)})
            return
        first_line[question.id] = number
        questions.append(question)

    lines = iter(reader)
    started = False
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = _check_start(raw, label)
        if not raw.strip():
            continue
        if not started and raw.lstrip().startswith(b"["):
            # one JSON list: it parses only whole, so ``limit`` cannot stop it early
            for index, item in _json_list(raw + b"".join(lines), label):
                add(index, item)
            break
        started = True
        try:
            item = _item(_decoded(raw, number))
        except _Invalid as error:
            item = error
        add(number, item)
        if limit and len(questions) >= limit:
            break
    return QuestionFile(questions, invalid, reader.finish(), name)


def parse_questions(text: str, name: str = "") -> QuestionFile:
    """Every valid question of a file's text, and each invalid line named with its reason."""
    return _parse_stream(io.BytesIO(text.encode("utf-8")), name, name or "the questions")


def _at_least_one(found: QuestionFile, label: str) -> QuestionFile:
    """A file with no valid question at all is a user error naming the first reasons, in one line."""
    if not found.questions:
        reasons = "; ".join(f"line {bad['line']}: {bad['reason']}" for bad in found.invalid[:3])
        raise QuestionFileError(f"{label} has no valid question{': ' + reasons if reasons else ' (it is empty)'}")
    return found


def from_bytes(data: bytes, name: str) -> QuestionFile:
    """A question file's bytes (UTF-8, a BOM allowed), from the app's upload."""
    return _at_least_one(_parse_stream(io.BytesIO(data), PurePath(name).name, name), name)


def read_questions(path: str | Path, limit: int = 0) -> QuestionFile:
    """A question file from disk, read through ``storage``'s bounded reader (a regular file of
    at most MAX_FILE_MB); with ``limit`` > 0 parsing stops after that many valid questions."""
    path = Path(path)
    try:
        with storage.open_regular(path, what=f"the questions file {path}") as handle:
            found = _parse_stream(handle, path.name, str(path), limit)
    except storage.StorageError as error:
        raise QuestionFileError(str(error)) from None
    return _at_least_one(found, str(path))


# --- per question: what is written ---------------------------------------------------------------

RECORD_FIELDS = (
    "id", "run", "question", "answer", "scale", "evidence_ids", "evidence", "completion", "program", "steps",
    "program_error", "predicted", "source", "strict", "tolerant", "lenient", "error", "prompt_tokens", "completion_tokens", "rel_tol",
    "verdict_key",
)
RECORD_KEYS = ("id", "run", "completion", "verdict_key")  # what makes a line one of these records


def _json_value(value: Any) -> Any:
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        return str(value)
    return value


def answer_record(question: Question, evidence_ids: Sequence[str], evidence_text: str, completion: str, rel_tol: float) -> dict[str, Any]:
    """One question's record: the evidence kept, the completion, the program with each step's
    value, the predicted value, and the verdicts (None when the file gives no answer)."""
    verdict = scoring.score_completion(completion, question.answer, question.table, rel_tol, question.scale)
    steps, program_error = [], None
    if verdict.source == "program":
        # the program the scorer ran (verbatim or repaired), so tracing it again cannot fail
        steps = [{"step": f"#{step.index}", "op": step.op, "arg1": step.arg1, "arg2": step.arg2,
                  "value": _json_value(step.value)} for step in programs.trace(verdict.program, question.table)]
    elif verdict.program:
        program_error = next((part for part in (verdict.error or "").split("; ") if part.startswith("program: ")), None)
    has_answer = question.answer is not None
    error = verdict.error
    if not has_answer and error:
        # "gold None is not a number" is not the model's fault: no answer was given
        error = "; ".join(part for part in error.split("; ") if not part.startswith("gold ")) or None
    return {
        "id": question.id,
        "question": question.question,
        "answer": question.answer,
        "scale": question.scale,
        "evidence_ids": sorted(evidence_ids),
        "evidence": evidence_text,
        "completion": completion,
        "program": verdict.program,
        "steps": steps,
        "program_error": program_error,
        "predicted": _json_value(verdict.predicted),
        "source": verdict.source,
        "strict": verdict.strict if has_answer else None,
        "tolerant": verdict.tolerant if has_answer else None,
        "lenient": verdict.lenient if has_answer else None,
        "error": error,
    }


def summarize(records: Sequence[Mapping[str, Any]], found: QuestionFile, bootstrap_samples: int, seed: int) -> dict[str, Any]:
    """n, the accuracies (with 95% bootstrap CIs) over the questions that give an answer, and the invalid lines."""
    scored = [record for record in records if record.get("answer") is not None]
    out: dict[str, Any] = {"n": len(records), "n_with_answer": len(scored)}
    for name, key in (("execution_accuracy", "strict"), ("tolerant_accuracy", "tolerant"), ("lenient_accuracy", "lenient")):
        flags = [bool(record.get(key)) for record in scored]
        out[name] = stats.rate(flags)
        out[f"{name}_ci95"] = list(stats.bootstrap_ci(flags, bootstrap_samples, seed))
    out.update(
        no_answer_rate=stats.rate(record.get("source") == "none" for record in records),
        answer_source={key: sum(1 for record in records if record.get("source") == key) for key in ("program", "answer", "none")},
        invalid_lines=len(found.invalid),
        invalid=found.describe_invalid(),
        questions_file=found.name,
        questions_sha256=found.sha256,
        bootstrap_samples=bootstrap_samples,
    )
    return out


def _cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if column == "answer":
        return str(value)  # as written in the file: its decimals are part of the tolerant rule
    if isinstance(value, float):
        return programs.format_value(value)
    return value


def answers_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The answers table (one row per question, CSV_COLUMNS) the app shows and the CSV holds."""
    return [{column: _cell(column, record.get(column)) for column in CSV_COLUMNS} for record in records]


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a CSV cell no spreadsheet runs: text starting like a formula gets a leading
    "'" (shown as text, as spreadsheet-safe exporters write it); numbers, "-12.5" too, stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not isinstance(scoring.coerce_gold(value), float):
        return "'" + value
    return value


def answers_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The answers table as CSV, every cell safe to open in a spreadsheet (``spreadsheet_safe``)."""
    buffer = io.StringIO()
    # RFC 4180's CRLF: a cell holding a lone "\r" is then quoted too, so it cannot end a row
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({column: spreadsheet_safe(value) for column, value in row.items()} for row in answers_rows(records))
    return buffer.getvalue()
