"""The app's own-document mode: turn an uploaded or pasted table plus report text into an example.

A table is CSV or a markdown pipe table (first row = header, first cell of every row = the row
name that table operations refer to). Every cell is normalised the way FinQA's own tables were
(``normalise_cell``: thousands separators removed, ``$`` and parentheses spaced, accounting
negatives and percents written out, lowercase), because the models were trained on FinQA's style
and have never seen a comma inside a number. The app's own tables and the question files of
``finreason.questions`` go through this one parser. Every user mistake raises ``UploadError`` with
a message meant for the user; nothing here raises anything else on any input.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import PurePath

from finreason.errors import FinReasonError

TABLE_EXTENSIONS = (".csv", ".md", ".txt")
MAX_ROWS = 200  # a report table; more is almost certainly the wrong file
MAX_COLUMNS = 30
MAX_CELL_CHARS = 200
MAX_QUESTION_CHARS = 500
# One report sentence: FinQA's run to a few hundred characters. A far longer one never fits
# the evidence budget, so the retriever would leave it out without a word.
MAX_SENTENCE_CHARS = 5000
_SEPARATOR_ROW = re.compile(r"^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=[A-Za-z0-9$(])")

# FinQA's ``table`` was tokenised from the published cells (its ``table_ori``): comparing the two
# fields of every vendored example gives these rules (tests/test_questions.py measures the share
# of cells mapped exactly). Footnote markers (<sup>) become a spaced suffix, other tags go.
_FOOTNOTE = re.compile(r"(?is)<sup>(.{0,40}?)</sup>")
_TAG = re.compile(r"<[^<>]{0,40}>")
# FinQA turned typographic characters into their code point ("—" became "2014", a year-like
# number a program would add up); here they become their ASCII form instead, on purpose.
_TYPOGRAPHY = str.maketrans({"\u2014": "-", "\u2013": "-", "\u2212": "-", "\u2019": "'", "\u2018": "'",
                             "\u201c": '"', "\u201d": '"', "\xa0": " ", "\u2009": " ", "\u202f": " "})
# A whole cell "(1234)" / "$(1.10)" is an accounting negative: FinQA writes "-1234 ( 1234 )".
_NEGATIVE = re.compile(r"^(\$?)\s*\(\s*(\d*\.?\d+)\s*\)$")
# "12.5%" is written "12.5% ( 12.5 % )", as FinQA does.
_PERCENT = re.compile(r"(?<![\w.%])(-?\d*\.?\d+)\s*%")
# "$", parentheses and a ":" before a space stand apart as their own tokens; so does a word's final ".".
_SPACED = re.compile(r"\s*([()$]|:(?=\s))\s*")
_WORD_PERIOD = re.compile(r"(?<=[a-z])\.(?=\s|$)")
_SPACES = re.compile(r"\s+")
# FinQA's report text has no thousands separator either (none in 9,620 dev sentences) and writes "$ 35.4".
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DOLLAR = re.compile(r"\$\s*(?=[\d(.-])")
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# a well-formed UTF-8 sequence of two to four bytes: its presence means the file was written as UTF-8
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


class UploadError(FinReasonError, ValueError):
    """The upload or the question cannot be used; ``str(error)`` is shown to the user as is."""


@dataclass(frozen=True)
class UserDocument:
    """Quacks like ``finreason.data.Example`` for the prompt builder and the scorer."""

    question: str
    table: list[list[str]]
    pre_text: list[str] = field(default_factory=list)
    post_text: list[str] = field(default_factory=list)
    id: str = "upload"
    filename: str = ""

    @property
    def text(self) -> list[str]:
        return self.pre_text + self.post_text


def check_size(data: bytes | str, max_kb: int, what: str = "the upload", setting: str = "APP_MAX_UPLOAD_KB") -> None:
    """Refuse more than ``max_kb``; ``setting`` names the limit in the message (a config key, or
    the question file's own limit)."""
    size = len(data.encode("utf-8") if isinstance(data, str) else data)
    if size > max_kb * 1024:
        raise UploadError(f"{what} is {size / 1024:.0f} KB; the limit is {max_kb} KB ({setting}). Upload just the table you need.")


def streamlit_upload_mb(max_kb: int) -> int:
    """Streamlit's upload cap for ``max_kb`` (its option is in whole megabytes, at least 1), so
    the browser refuses a far larger file before sending it instead of at Streamlit's 200 MB."""
    return max(1, math.ceil(max_kb / 1024))


def decode(data: bytes) -> str:
    """Text of an uploaded table: UTF-8 (a BOM is dropped), UTF-16 with its BOM, or a file wholly
    in Windows-1252 (what spreadsheets save as "CSV"); a file mixing UTF-8 with another encoding
    is refused (guessing would garble every "€"), and so are binary files."""
    if data.startswith(UTF16_BOMS):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise UploadError("this file starts as UTF-16 but is not: save the table as CSV (UTF-8) and upload it again") from None
    if b"\x00" in data[:4096]:
        raise UploadError("this file is binary, not a table: upload a .csv or a markdown (.md) pipe table")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        bad_line = data.count(b"\n", 0, error.start) + 1
    if _UTF8_MULTIBYTE.search(data):
        raise UploadError(f"line {bad_line} is not UTF-8 while the rest of the file is: save the table as CSV (UTF-8) and upload it again")
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        raise UploadError("this file is not UTF-8 text: save the table as CSV (UTF-8) and upload it again") from None


def _pipe_cells(line: str) -> list[str]:
    """The cells of one markdown table line, split at unescaped '|'.

    As in GitHub-flavoured markdown, ``\\|`` is a literal pipe inside a cell, and a backslash
    escapes only the one character after it (so in ``\\\\|`` the pipe separates). Other escapes
    are kept as written. The pipes that open and close the line are not cells.
    """
    cells: list[str] = []
    current: list[str] = []
    index = 0
    last_was_separator = False
    while index < len(line):
        char = line[index]
        last_was_separator = False
        if char == "\\" and index + 1 < len(line):
            following = line[index + 1]
            current.append("|" if following == "|" else char + following)
            index += 2
            continue
        if char == "|":
            cells.append("".join(current))
            current = []
            last_was_separator = True
        else:
            current.append(char)
        index += 1
    cells.append("".join(current))
    if line.startswith("|"):
        cells = cells[1:]
    if last_was_separator and cells:
        cells = cells[:-1]
    return [cell.strip() for cell in cells]


def _pipe_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or _SEPARATOR_ROW.match(line):
            continue
        if "|" not in line:
            raise UploadError(f"line {line[:40]!r} has no '|': a markdown table needs '|' between cells on every line")
        rows.append(_pipe_cells(line))
    return rows


def _csv_rows(text: str) -> list[list[str]]:
    sample = text[:4096]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in row)]
    except csv.Error as error:
        raise UploadError(f"this CSV cannot be read ({error})") from None


def looks_like_pipe_table(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return bool(lines) and sum(line.startswith("|") or line.count("|") >= 2 for line in lines) >= max(1, len(lines) // 2)


def normalise_cell(cell: str, footnote: bool = False) -> str:
    """One published cell as FinQA's tables write it: ``"$1,452.4"`` -> ``"$ 1452.4"``,
    ``"(1,234)"`` -> ``"-1234 ( 1234 )"``, ``"12.5%"`` -> ``"12.5% ( 12.5 % )"``,
    ``"Visa Inc.<sup>(1)</sup>"`` -> ``"visa inc . ( 1 )"``; ``footnote``: a <sup> marker, never a negative."""
    cell = str(cell)[:MAX_CELL_CHARS * 2]
    footnotes = [note.strip() for note in _FOOTNOTE.findall(cell)]
    text = _TAG.sub("", _FOOTNOTE.sub(" ", cell)).translate(_TYPOGRAPHY).replace(",", "")
    text = _SPACES.sub(" ", text).strip().lower()
    negative = _NEGATIVE.match(text)
    if negative and not footnote:
        dollar, number = negative.groups()
        text = f"{dollar} -{number} ( {number} )".strip()
    else:
        text = _PERCENT.sub(lambda match: f"{match.group(1)}% ( {match.group(1)} % )", text)
        text = _WORD_PERIOD.sub(" .", _SPACED.sub(lambda match: f" {match.group(1)} ", text))
    text = " ".join([text, *(normalise_cell(note, footnote=True) for note in footnotes if note)])
    return _SPACES.sub(" ", text).strip()


def normalise_table(rows: list[list[str]], max_rows: int = MAX_ROWS) -> list[list[str]]:
    """Cells normalised (``normalise_cell``), ragged rows padded; refuses what is not a table."""
    rows = [row for row in rows if any(str(cell).strip() for cell in row)]
    if len(rows) < 2:
        raise UploadError("a table needs a header row and at least one data row")
    if len(rows) > max_rows:
        raise UploadError(f"the table has {len(rows)} rows; the limit is {max_rows}")
    width = max(len(row) for row in rows)
    if width < 2:
        raise UploadError("a table needs at least two columns: a row name and a value (is this CSV separated by commas?)")
    if width > MAX_COLUMNS:
        raise UploadError(f"the table has {width} columns; the limit is {MAX_COLUMNS}")
    if any(len(str(cell)) > MAX_CELL_CHARS for row in rows for cell in row):
        raise UploadError(f"a cell is longer than {MAX_CELL_CHARS} characters: this does not look like a table")
    table = [[normalise_cell(cell) for cell in row] + [""] * (width - len(row)) for row in rows]
    if not any(re.search(r"\d", cell) for row in table[1:] for cell in row[1:]):
        raise UploadError("the table has no numbers outside its first column: nothing to calculate with")
    return table


def parse_table_text(text: str, max_kb: int, max_rows: int = MAX_ROWS, what: str = "the pasted table",
                     setting: str = "APP_MAX_UPLOAD_KB") -> list[list[str]]:
    """A pasted table: markdown pipe table when the lines use '|', else CSV."""
    check_size(text, max_kb, what, setting)
    if not text.strip():
        raise UploadError("the table is empty")
    rows = _pipe_rows(text) if looks_like_pipe_table(text) else _csv_rows(text)
    return normalise_table(rows, max_rows)


def parse_table_upload(name: str, data: bytes, max_kb: int) -> list[list[str]]:
    """An uploaded .csv / .md / .txt table, checked for size and type first."""
    check_size(data, max_kb, f"{name!r}")
    suffix = PurePath(name or "").suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        raise UploadError(f"{name!r} is not a table file: upload {', '.join(TABLE_EXTENSIONS)} (CSV or a markdown pipe table)")
    text = decode(data)
    if not text.strip():
        raise UploadError(f"{name!r} is empty")
    rows = _pipe_rows(text) if suffix == ".md" or looks_like_pipe_table(text) else _csv_rows(text)
    return normalise_table(rows)


def split_sentences(text: str) -> list[str]:
    """Report text as sentences (FinQA's text_N units): blank lines and sentence ends split; in
    FinQA's style, lowercase, "3,400" -> "3400" and "$35.4" -> "$ 35.4"."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n|\n", text or ""):
        for sentence in _SENTENCE_END.split(paragraph.strip()):
            if sentence.strip():
                sentences.append(_DOLLAR.sub("$ ", _THOUSANDS.sub("", sentence.strip())).lower())
    return sentences


def build_document(question: str, table: list[list[str]] | None, report_text: str, max_kb: int,
                   setting: str = "APP_MAX_UPLOAD_KB") -> UserDocument:
    """The example the prompt builder sees; refuses an empty question, no evidence at all, or a
    sentence too long for any prompt (the retriever would drop it without a word)."""
    question = (question or "").strip()
    if not question:
        raise UploadError("type a question first, e.g. 'what was the percent change in revenue from 2018 to 2019?'")
    if len(question) > MAX_QUESTION_CHARS:
        raise UploadError(f"the question is {len(question)} characters; keep it under {MAX_QUESTION_CHARS}")
    check_size(report_text or "", max_kb, "the report text", setting)
    sentences = split_sentences(report_text)
    longest = max(sentences, key=len, default="")
    if len(longest) > MAX_SENTENCE_CHARS:
        raise UploadError(f"a sentence of the report text is {len(longest)} characters ({longest[:30]!r}...); the limit is "
                          f"{MAX_SENTENCE_CHARS}, since no longer one fits a prompt: end its sentences with '.' or break it into lines")
    if not table and not sentences:
        raise UploadError("give a table (upload or paste) or some report text: the model answers only from evidence")
    return UserDocument(question=question.lower(), table=table or [], pre_text=sentences)
