"""One writer per output folder: a lock a writing script holds for its whole life.

``hold(output_dir)`` takes an exclusive ``fcntl.flock`` on ``<OUTPUT_DIR>/.finreason.lock`` and
writes the holder's PID, command and start time into it. A second writer on the same folder
stops at once with one line naming that PID and command (``OutputLockedError``). The kernel drops
an flock when its process dies, however it dies, so a lock file left by a killed run is simply
taken over (and the takeover logged). Read-only uses (the app, ``06 --score`` without ``--out``)
take no lock. Locking across machines (NFS) is out of scope.

Under ``accelerate launch`` only the main process (RANK 0, or no RANK) takes the lock: the other
ranks of the same launch write through it. Holding is re-entrant within one process, so a script
that calls another's code on the same folder does not lock itself out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from finreason import storage
from finreason.errors import FinReasonError

_LOG = logging.getLogger(__name__)

LOCK_NAME = ".finreason.lock"
_held: dict[Path, int] = {}  # lock path -> re-entry depth in this process


class OutputLockedError(FinReasonError):
    """Another process is writing to the same output folder."""


def is_main_rank() -> bool:
    """True unless this is a non-main process of a distributed launch (RANK set and not 0)."""
    return os.environ.get("RANK", "0") == "0"


def lock_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / LOCK_NAME


def holder(path: str | os.PathLike) -> dict:
    """What a lock file says about its (last) holder; {} when unreadable."""
    return storage.read_json_object(path)


@contextlib.contextmanager
def hold(output_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the output folder's lock for the block; OutputLockedError if another process has it."""
    if not is_main_rank():
        yield
        return
    path = lock_path(output_dir).resolve()
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # the file is opened without truncating: the holder's record must survive a refused attempt
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found = holder(path)
            raise OutputLockedError(
                f"{path.parent} is in use by PID {found.get('pid', '?')} ({found.get('command') or 'unknown command'}, "
                f"since {found.get('started') or '?'}); wait for it to finish or pass another --OUTPUT_DIR"
            ) from None
        previous = holder(path)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            _LOG.info("taking over the lock on %s left by PID %s (%s), which is no longer running",
                      path.parent, previous.get("pid"), previous.get("command"))
        record = {"pid": os.getpid(), "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            # emptied before unlocking, so a finished run is never named as a holder
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
