"""One writer per output folder: a lock a writing script holds for its whole life.

``hold(output_dir)`` takes an exclusive ``fcntl.flock`` on ``<OUTPUT_DIR>/.finreason.lock`` and
writes the holder's PID, command and start time into it. A second writer on the same folder
stops at once with one line naming that PID and command (``OutputLockedError``). The kernel drops
an flock when its process dies, however it dies, so a lock file left by a killed run is simply
taken over (and the takeover logged). The lock file is never opened through a symbolic link and
must be a regular file; anything else at its path stops the script with one line. Read-only uses (the app, ``06 --score`` without ``--out``)
take no lock. Locking across machines (NFS) is out of scope.

Under ``accelerate launch`` only the main process (RANK 0, or no RANK) takes the lock: the other
ranks of the same launch write through it. Holding is re-entrant within one process, so a script
that calls another's code on the same folder does not lock itself out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finreason import storage
from finreason.errors import FinReasonError

_LOG = logging.getLogger(__name__)

LOCK_NAME = ".finreason.lock"
_MAX_RECORD_BYTES = 64 * 1024  # a holder's record is one short line
_held: dict[Path, int] = {}  # lock path -> re-entry depth in this process


class OutputLockedError(FinReasonError):
    """Another process is writing to the same output folder."""


class LockFileError(FinReasonError):
    """The lock's path holds something that is not a lock file (a link, a FIFO, a device)."""


def is_main_rank() -> bool:
    """True unless this is a non-main process of a distributed launch (RANK set and not 0)."""
    return os.environ.get("RANK", "0") == "0"


def lock_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / LOCK_NAME


def holder(path: str | os.PathLike) -> dict:
    """What a lock file says about its (last) holder; {} when unreadable (or not a regular file)."""
    return storage.read_json_object(path)


def _open_lock(path: Path) -> int:
    """The lock file's descriptor: created if missing, never through a symbolic link (the
    record written into it would land in the link's target, any file when run as root), and
    only a regular file (a FIFO would hang, a device would take the record)."""
    # opened without truncating: the holder's record must survive a refused attempt
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        # a link (ELOOP under O_NOFOLLOW), a folder, a socket: say what is there instead
        if error.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        raise LockFileError(f"{path} is {storage.file_kind(os.lstat(path).st_mode)}, not a lock file; the lock is "
                            "never written through a link or into anything but a regular file: remove it and rerun") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise LockFileError(f"{path} is {storage.file_kind(mode)}, not a lock file: remove it and rerun")
    return fd


def _record(fd: int) -> dict:
    try:
        found = storage.loads_bounded(os.pread(fd, _MAX_RECORD_BYTES, 0).decode("utf-8"))
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _running(pid: Any) -> bool:
    """Whether some process now has ``pid`` (not necessarily the one that wrote it)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def hold(output_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the output folder's lock for the block; OutputLockedError if another process has it."""
    if not is_main_rank():
        yield
        return
    # the folder resolved, not the lock file: a link at the lock's name must be refused, not followed
    path = Path(output_dir).resolve() / LOCK_NAME
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found = _record(fd)
            raise OutputLockedError(
                f"{path.parent} is in use by PID {found.get('pid', '?')} ({found.get('command') or 'unknown command'}, "
                f"since {found.get('started') or '?'}); wait for it to finish or pass another --OUTPUT_DIR"
            ) from None
        previous = _record(fd)
        pid = previous.get("pid")
        if pid and pid != os.getpid():
            # the flock was free, so whoever has that PID now is not the writer that recorded it
            now = "its PID now belongs to another process" if _running(pid) else "it is no longer running"
            _LOG.info("taking over the lock on %s left by PID %s (%s), which no longer holds it: %s",
                      path.parent, pid, previous.get("command"), now)
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
