"""Files that survive a kill: atomic writes, append-only JSONL that resumes, file hashes, and
the one bounded way to read a file a user named.

Every results file is written with ``atomic_write_*`` (a temporary file, then a rename: readers
never see half a file), every long run appends one JSONL line per finished item with
``append_jsonl`` and reads them back with ``read_jsonl``, which skips and counts damaged lines.
What produced a file is ``finreason.provenance``'s concern.

Every file a user can name (a question or predictions file, ``--out``, the lock, a summary in a
weights folder) is opened with ``open_regular`` and read with ``read_bounded`` or
``bounded_lines``: a folder, FIFO, device or socket is refused in one line instead of hanging or
reading forever (``st_size`` is 0 for those, so it proves nothing), and no read takes more than
its cap. ``loads_bounded`` parses JSON with a nesting limit.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from finreason.errors import FinReasonError

_LOG = logging.getLogger(__name__)


class StorageError(FinReasonError, OSError):
    """A path the user gave cannot be written or read."""


# Records, summaries and question files nest a handful of levels; FinQA four. Far more is
# damage or hostility, and refused before the parser's recursion could overflow.
MAX_JSON_DEPTH = 64
MAX_JSON_OBJECT_MB = 64  # read_json_object: summaries and run records are kilobytes
MAX_RECORD_LINE_MB = 64  # read_jsonl: one record line (evidence and completion) is kilobytes
_OPENING = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in _OPENING)
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What a stat mode is, in words ("a regular file", "a FIFO (named pipe)", ...)."""
    return next((words for test, words in _KINDS if test(mode)), "a regular file" if stat.S_ISREG(mode) else "not a regular file")


def open_regular(path: str | os.PathLike, follow: bool = True, what: str = "") -> BinaryIO:
    """``path`` opened for binary reading, only if it is a regular file: anything else raises
    StorageError in one line. Opened non-blocking, so a FIFO cannot hang the open, and (with
    ``follow=False``) never through a symbolic link."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    label = what or str(path)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise StorageError(f"cannot read {label}: {_open_reason(path, error)}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise StorageError(f"{label} is {file_kind(mode)}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _open_reason(path: str | os.PathLike, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "it is a symbolic link (or a loop of them)"
    if error.errno == errno.ENXIO:
        return "it is a socket or a device with nothing behind it"
    return error.strerror or str(error)


def too_big(label: str, limit_bytes: int, setting: str = "") -> StorageError:
    hint = f" ({setting})" if setting else ""
    return StorageError(f"{label} is larger than {_size_words(limit_bytes)}, the limit{hint}: split it or name another file")


def _size_words(size: int) -> str:
    return f"{size / 2**20:g} MB" if size >= 2**20 else f"{size / 1024:g} KB"


def read_bounded(path: str | os.PathLike, max_bytes: int, what: str = "", setting: str = "", follow: bool = True) -> bytes:
    """The whole of a regular file, refused (StorageError, one line) when it holds more than
    ``max_bytes``: counted while reading, since a file can grow and /proc files say size 0."""
    label = what or str(path)
    with open_regular(path, follow, label) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise too_big(label, max_bytes, setting)
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_big(label, max_bytes, setting)
    return data


def bounded_lines(handle: BinaryIO, max_bytes: int, label: str, setting: str = "") -> Iterator[bytes]:
    """The lines of an open file (newline kept), raising StorageError once more than
    ``max_bytes`` were read; a line is never read past what is left of the cap."""
    left = max_bytes
    while True:
        line = handle.readline(left + 1)
        if not line:
            return
        left -= len(line)
        if left < 0:
            raise too_big(label, max_bytes, setting)
        yield line


def json_depth_ok(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``text``'s brackets nest at most ``max_depth`` deep (brackets inside strings
    count too: a cheap upper bound that no honest record comes near)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return True
    brackets = data.translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_OPENING.__getitem__, brackets))) <= max_depth


def loads_bounded(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` with a nesting limit: ValueError (never RecursionError) beyond it."""
    if not json_depth_ok(text, max_depth):
        raise ValueError(f"nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None


def check_writable(path: str | os.PathLike) -> Path:
    """Raise StorageError unless ``path`` can be written atomically: not a folder, and its folder
    exists (or can be made) and takes a new file. Checked by trying, since permission bits say
    nothing to root or on network file systems."""
    path = Path(path)
    if path.is_dir():
        raise StorageError(f"{path} is a folder; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error.strerror or error}") from None
    return path

def is_records_file(path: str | os.PathLike, keys: Collection[str]) -> bool:
    """Whether ``path`` is a JSONL file of records this project writes: at least one record,
    every complete line a JSON object holding ``keys`` (a torn last line, what a kill leaves,
    is allowed). Raises StorageError when it is not a regular file (a link included)."""
    stats = ReadStats()
    found = False
    for record in _records(Path(path), stats, follow=False):
        if not all(key in record for key in keys):
            return False
        found = True
    return found and stats.dropped == stats.torn


def claim_output(path: str | os.PathLike, keys: Collection[str], overwrite: bool = False,
                 not_same_as: Iterable[str | os.PathLike] = (), flag: str = "--out") -> Path:
    """``path`` ready to be written: checked writable, and new, empty, or a records file of this
    kind (``is_records_file``: kept, so a run resumes in it). Anything else is the user's and is
    refused in one line, unless ``overwrite``: then it is moved aside to
    ``<stem>.replaced-<time><suffix>`` beside it, never edited. An input of the same run
    (``not_same_as``) is refused even so."""
    path = Path(path)
    for other in not_same_as:
        same = False
        with contextlib.suppress(OSError):
            same = os.path.samefile(path, other)
        if same:
            raise StorageError(f"{flag} {path} is the input file {other}: name another file for {flag}")
    check_writable(path)
    if not os.path.lexists(path):
        return path
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        # a link would send the records into its target; a FIFO or device is no file to keep
        raise StorageError(f"{flag} {path} is {file_kind(mode)}, not a regular file: name another file")
    if os.path.getsize(path) == 0 or is_records_file(path, keys):
        return path
    if not overwrite:
        raise StorageError(f"{flag} {path} exists and is not a records file this command wrote: name another file, "
                           "or add --overwrite (the old file is kept beside it, renamed)")
    aside = path.with_name(f"{path.stem}.replaced-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
    os.replace(path, aside)
    _LOG.warning("%s %s: the existing file was moved to %s (--overwrite)", flag, path, aside)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write via a temporary file in the same folder, then rename: readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared and read
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A staging folder beside ``target`` that replaces it only when the block finishes: a kill
    or an error leaves the old folder (or none), never half a new one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        staging.chmod(0o755)  # mkdtemp makes 0700; model folders are meant to be shared and read
        yield staging
        install_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replaced_path(target: str | os.PathLike) -> Path:
    """Where ``install_folder`` keeps the folder it replaces, for the instant between two renames."""
    target = Path(target)
    return target.with_name(f".{target.name}.replaced")


def install_folder(staging: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the finished ``staging`` folder at ``target``: the old one is renamed to
    ``replaced_path(target)`` first and removed only once the new one is in place, so at every
    instant either the old or the new folder is whole (``recover_folder`` undoes a kill between
    the two renames)."""
    staging, target, replaced = Path(staging), Path(target), replaced_path(target)
    shutil.rmtree(replaced, ignore_errors=True)
    if target.exists():
        os.replace(target, replaced)
    os.replace(staging, target)
    shutil.rmtree(replaced, ignore_errors=True)
    return target


def recover_folder(target: str | os.PathLike) -> None:
    """After a kill inside ``install_folder``: put the old folder back if the new one never
    arrived, otherwise remove the leftover."""
    target, replaced = Path(target), replaced_path(target)
    if not replaced.exists():
        return
    if target.exists():
        shutil.rmtree(replaced)
        return
    os.replace(replaced, target)
    _LOG.warning("%s: restored the previous folder (a save was killed before the new one was in place)", target)


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file holding an object, or {} when it is missing, unreadable, not JSON or not an
    object: for records a later run only consults (a run record, a summary, a lock holder)."""
    try:
        found = loads_bounded(read_bounded(path, MAX_JSON_OBJECT_MB * 2**20).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Append whole lines and fsync, so a kill loses at most the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class ReadStats:
    """What ``read_jsonl`` kept and skipped in one file; complete once the iterator is exhausted."""

    records: int = 0
    torn: int = 0  # a last line without its newline: the process was killed mid-write
    undecodable: int = 0  # bytes that are not UTF-8
    corrupt: int = 0  # not JSON, or nested too deeply to parse
    not_object: int = 0  # JSON, but not an object

    @property
    def dropped(self) -> int:
        return self.torn + self.undecodable + self.corrupt + self.not_object

    def describe(self) -> str:
        parts = [
            (self.torn, "torn last line"),
            (self.undecodable, "not UTF-8"),
            (self.corrupt, "not JSON"),
            (self.not_object, "not a JSON object"),
        ]
        return ", ".join(f"{count} {what}" for count, what in parts if count)


def _records(path: Path, stats: ReadStats, follow: bool = True) -> Iterator[dict[str, Any]]:
    # Bytes, not text: one line that is not UTF-8 must cost that line, not the whole file.
    max_line = MAX_RECORD_LINE_MB * 2**20
    with open_regular(path, follow) as handle:
        while raw := handle.readline(max_line + 1):
            if len(raw) > max_line:
                stats.corrupt += 1
                while raw and not raw.endswith(b"\n"):
                    raw = handle.readline(max_line)
                continue
            if not raw.endswith(b"\n"):
                if raw.strip():
                    stats.torn += 1
                break
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                stats.undecodable += 1
                continue
            if not line:
                continue
            try:
                record = loads_bounded(line)
            except ValueError:
                stats.corrupt += 1
                continue
            if not isinstance(record, dict):
                stats.not_object += 1
                continue
            stats.records += 1
            yield record


def read_jsonl(path: str | os.PathLike, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Yield complete records; damaged lines are skipped, not fatal, and counted.

    A torn last line (killed mid-write), a line that is not UTF-8 or not JSON, and JSON that is
    not an object are skipped and counted in ``stats`` (pass a ``ReadStats`` to learn them);
    when any were skipped, one warning naming the file and the counts is logged at the end.
    Blank lines are ignored.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    if not path.exists():
        return
    yield from _records(path, stats)
    if stats.dropped:
        _LOG.warning("%s: skipped %d damaged line(s) (%s); kept %d records", path, stats.dropped, stats.describe(), stats.records)


def repair_jsonl(path: str | os.PathLike) -> int:
    """Rewrite the file with only its complete, decodable records, so appends start on a clean
    line; returns records kept. Dropped lines are logged, as by ``read_jsonl``."""
    path = Path(path)
    if not path.exists():
        return 0
    stats = ReadStats()
    records = list(_records(path, stats))
    write_jsonl(path, records)
    if stats.dropped:
        _LOG.warning("%s: repaired, dropping %d damaged line(s) (%s); kept %d records", path, stats.dropped, stats.describe(), stats.records)
    return len(records)


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """A whole JSONL file at once, atomically (for files written in one go, not appended)."""
    return atomic_write_text(path, "".join(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records))


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
