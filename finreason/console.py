"""What scripts print: one log format on stderr, one table format, and the one way a script stops
on a user error.

Every module logs through ``logging.getLogger(__name__)`` (shown as ``[evaluation] ...``) and
every script through a logger named after its stage (``[sft] ...``); ``setup_logging`` is called
once by ``configuration.parse_args``, so ``--quiet`` shows warnings and errors only. Scripts end
with ``run_main(main)``: a ``FinReasonError``, an ``OSError`` (unwritable path, full disk, also
when a library wrapped it) or Ctrl-C becomes one line on stderr and a non-zero exit instead of a
traceback. ``run_child`` runs a server that stops with its launcher; ``dying_with_parent``
wraps a worker's command line so that it is killed with this process, however this one dies. Every table a
script or benchmark prints comes from ``table``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from finreason.errors import FinReasonError

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C
# how a full disk reads once a library has wrapped the OSError: errno's text, and Rust's (safetensors)
_DISK_FULL_SIGNS = ("No space left on device", "os error 28")
_PACKAGE_PREFIX = "finreason."
# Run before the real command in the child: Linux's PR_SET_PDEATHSIG (prctl option 1) has the
# kernel SIGKILL it when its parent dies, kill -9 included, which no handler in the parent can
# do; the parent-id check covers a parent that died before the prctl. Elsewhere the command
# simply runs (and is stopped only by its process group's signals).
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(137)
os.execv(sys.argv[2], sys.argv[2:])
"""


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
    except Exception as error:
        # a full disk reaches here from libraries that wrap the OSError (safetensors' Rust writer,
        # torch.save); what they were writing was staged and has already been removed
        if not disk_full(error):
            raise
        _fail(script, f"no space left on device ({_first_line(error)}); free some space and rerun the same command", EXIT_USER_ERROR)
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)
    return result


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) is a full disk, however a library wrapped it."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if any(sign in str(error) for sign in _DISK_FULL_SIGNS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:200]


def _fail(script: str, message: str, code: int) -> None:
    print(f"{script}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run_child(command: Sequence[str]) -> int:
    """Run ``command`` (a server) and return its exit code; SIGTERM and SIGINT sent to this
    process are passed on to it and it is waited for, so stopping the launcher stops the server."""
    child = subprocess.Popen(list(command))

    def forward(signum: int, _frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        # the handlers replace Python's Ctrl-C exception, and wait() resumes after each signal
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def dying_with_parent(command: Sequence[str]) -> list[str]:
    """``command`` (its first item a path to an executable) wrapped so that the child it becomes
    is killed when this process dies, by any signal; it stays in this process's group, so a
    Ctrl-C or a kill of the group reaches it too."""
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]
