"""What scripts print: one log format on stderr, one table format, and the one way a script stops
on a user error.

Every module logs through ``logging.getLogger(__name__)`` (shown as ``[evaluation] ...``) and
every script through a logger named after its stage (``[sft] ...``); ``setup_logging`` is called
once by ``configuration.parse_args``, so ``--quiet`` shows warnings and errors only. Scripts end
with ``run_main(main)``: a ``FinReasonError``, an ``OSError`` (unwritable path, full disk) or
Ctrl-C becomes one line on stderr and a non-zero exit instead of a traceback. Every table a
script or benchmark prints comes from ``table``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from finreason.errors import FinReasonError

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C
_PACKAGE_PREFIX = "finreason."


class _ShortNames(logging.Formatter):
    """``[evaluation] message``: the package prefix says nothing to a user."""

    def format(self, record: logging.LogRecord) -> str:
        record.short_name = record.name.removeprefix(_PACKAGE_PREFIX)
        return super().format(record)


def setup_logging(quiet: bool = False) -> None:
    """INFO and up on stderr (WARNING and up with ``quiet``); stdout stays for results."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ShortNames("[%(short_name)s] %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "finreason", False)]:
        root.removeHandler(old)
    handler.finreason = True  # replaced, never stacked, when a test or benchmark calls main() twice
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)


def table(rows: Iterable[Sequence[Any]], columns: Sequence[str], title: str | None = None, left: Collection[str] | None = None) -> str:
    """The one text table scripts and benchmarks print: pandas' ``DataFrame.to_string``.

    Cells are shown as given (format numbers first), None as "-". The ``left`` columns (by
    default the first, which names the row) are left-aligned, the rest right-aligned;
    ``title`` is the line above the table."""
    import pandas

    columns = list(columns)
    cells = [["-" if value is None else str(value) for value in row] for row in rows]
    left = {columns[0]} if left is None else set(left)
    widths = [max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)]
    # a left column's label is padded to its width, so the label is left-aligned too
    labels = [column.ljust(width) if column in left else column for column, width in zip(columns, widths)]
    if cells:
        formatters = {label: (lambda text, width=width: text.ljust(width)) for label, width, column in zip(labels, widths, columns) if column in left}
        text = pandas.DataFrame(cells, columns=labels).to_string(index=False, formatters=formatters)
    else:
        text = " ".join(labels)
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join([title, *lines] if title else lines)


def run_main(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> Any:
    """What a script's ``if __name__ == "__main__"`` calls. Returns ``main``'s result; exits with
    ``main``'s int result when it returns one (00_check_env's status)."""
    script = Path(main.__code__.co_filename).name
    try:
        result = main(argv)
    except FinReasonError as error:
        _fail(script, str(error), EXIT_USER_ERROR)
    except OSError as error:
        # a path the user gave cannot be written or read: say which, without a traceback
        where = f" ({error.filename})" if error.filename else ""
        _fail(script, f"{error.strerror or error}{where}", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        _fail(script, "interrupted; finished work is saved, rerun the same command to resume", EXIT_INTERRUPTED)
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)
    return result


def _fail(script: str, message: str, code: int) -> None:
    print(f"{script}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
