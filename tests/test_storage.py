"""Results files survive kills: atomic JSON, torn JSONL lines, provenance completeness."""

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from finreason import provenance, storage
from finreason.configuration import resolve_config


def test_atomic_write_json_leaves_no_temp_files(tmp_path):
    target = tmp_path / "nested" / "summary.json"
    storage.atomic_write_json(target, {"a": 1})
    storage.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


@pytest.mark.parametrize(
    "content, expected_ids",
    [
        ('{"id": "a"}\n{"id": "b"}\n', ["a", "b"]),  # clean file: every record
        ('{"id": "a"}\n{"id": "b', ["a"]),  # killed mid-write: torn last line dropped
        ('{"id": "a"}\n\n{"id": "b"}\n', ["a", "b"]),  # blank line tolerated
        ('{"id": "a"}\nnot json\n{"id": "c"}\n', ["a", "c"]),  # corrupt line skipped, not fatal
        ('[1, 2]\n{"id": "a"}\n', ["a"]),  # a non-object line is not a record
        ("", []),  # empty file: nothing done yet
    ],
)
def test_read_jsonl_tolerates_damage(tmp_path, content, expected_ids):
    path = tmp_path / "run.jsonl"
    path.write_text(content)
    assert [r["id"] for r in storage.read_jsonl(path)] == expected_ids


@pytest.mark.parametrize(
    "content, expected_ids, dropped",
    [
        (b'{"id": "a"}\n{"id": "b"}\n', ["a", "b"], {}),  # clean file: nothing dropped, nothing to warn about
        (b'{"id": "a"}\n{"id": "b', ["a"], {"torn": 1}),  # killed mid-write: the torn last line is counted
        (b'{"id": "a"}\nnot json\n{"id": "c"}\n', ["a", "c"], {"corrupt": 1}),  # a corrupt MIDDLE line is counted too, not silent
        (b'{"id": "a"}\n{"id": "\xff\xfe"}\n{"id": "c"}\n', ["a", "c"], {"undecodable": 1}),  # invalid UTF-8: skipped, not a crash
        (b'\xff' * 10 + b'\n{"id": "b"}\n\x80{"id": "c', ["b"], {"undecodable": 1, "torn": 1}),  # undecodable and torn together
        (b'[1, 2]\n"text"\n{"id": "a"}\n', ["a"], {"not_object": 2}),  # JSON that is not an object is not a record
        (b'{"id": "a"}\n\n   \n{"id": "b"}\n', ["a", "b"], {}),  # blank lines are not damage
        (b'[' * 100_000 + b']' * 100_000 + b'\n{"id": "a"}\n', ["a"], {"corrupt": 1}),  # nested too deeply to parse: that line only
        (b'{"id": "a"}\r\n{"id": "b"}\r\n', ["a", "b"], {}),  # Windows line ends are whole lines
    ],
)
def test_read_jsonl_counts_and_warns_about_what_it_drops(tmp_path, caplog, content, expected_ids, dropped):
    path = tmp_path / "run.jsonl"
    path.write_bytes(content)
    stats = storage.ReadStats()
    with caplog.at_level(logging.WARNING, logger="finreason.storage"):
        assert [r["id"] for r in storage.read_jsonl(path, stats)] == expected_ids
    assert stats.records == len(expected_ids)
    counts = {kind: getattr(stats, kind) for kind in ("torn", "undecodable", "corrupt", "not_object") if getattr(stats, kind)}
    assert counts == dropped
    assert stats.dropped == sum(dropped.values())
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    if dropped:
        assert len(warnings) == 1
        assert str(path) in warnings[0] and f"skipped {stats.dropped} damaged line" in warnings[0]
    else:
        assert warnings == []


def test_read_jsonl_without_stats_still_warns(tmp_path, caplog):
    path = tmp_path / "run.jsonl"
    path.write_bytes(b'{"id": "a"}\n\xc3\x28\n')
    with caplog.at_level(logging.WARNING, logger="finreason.storage"):
        assert [r["id"] for r in storage.read_jsonl(path)] == ["a"]
    assert "1 not UTF-8" in caplog.text and str(path) in caplog.text


def test_repair_keeps_only_decodable_complete_records(tmp_path, caplog):
    path = tmp_path / "run.jsonl"
    path.write_bytes(b'{"id": "a"}\n\xff\xfe\n{"id": "b"}\nnot json\n{"id": "c')
    with caplog.at_level(logging.WARNING, logger="finreason.storage"):
        assert storage.repair_jsonl(path) == 2
    assert "dropping 3 damaged line" in caplog.text
    caplog.clear()
    stats = storage.ReadStats()
    with caplog.at_level(logging.WARNING, logger="finreason.storage"):
        assert [r["id"] for r in storage.read_jsonl(path, stats)] == ["a", "b"]
    assert stats.dropped == 0 and caplog.text == ""  # the repaired file is clean
    path.read_text(encoding="utf-8")  # and all UTF-8 again


def test_repair_then_append_starts_on_a_clean_line(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b')
    assert storage.repair_jsonl(path) == 1
    storage.append_jsonl(path, [{"id": "c"}])
    assert [r["id"] for r in storage.read_jsonl(path)] == ["a", "c"]


def test_read_jsonl_of_missing_file_is_empty(tmp_path):
    assert list(storage.read_jsonl(tmp_path / "absent.jsonl")) == []


def test_provenance_records_config_seed_evidence_mode_and_packages():
    cfg = resolve_config(["--PROFILE=cpu", "--SEED=7", "--EVIDENCE_MODE=gold"])
    record = provenance.provenance(cfg, model="m", weights=None)
    assert record["seed"] == 7
    assert record["profile"] == "cpu"
    assert record["evidence_mode"] == "gold"
    assert record["config"] == cfg.snapshot()
    assert record["model"] == "m"
    for package in ("torch", "transformers", "trl", "peft", "bitsandbytes", "datasets"):
        assert package in record["packages"]


@pytest.mark.parametrize(
    "make, writable",
    [
        (lambda tmp: tmp / "verdicts.jsonl", True),  # a new file in an existing folder
        (lambda tmp: tmp / "new" / "deeper" / "verdicts.jsonl", True),  # missing folders are made
        (lambda tmp: tmp, False),  # a folder is not a file
        (lambda tmp: tmp / "blocker" / "verdicts.jsonl", False),  # the "folder" is a file
    ],
)
def test_check_writable(tmp_path, make, writable):
    (tmp_path / "blocker").write_text("x")
    target = make(tmp_path)
    if writable:
        assert storage.check_writable(target) == target
        assert not target.exists()  # the probe leaves nothing behind
    else:
        with pytest.raises(storage.StorageError):
            storage.check_writable(target)


def test_write_jsonl_round_trips(tmp_path):
    rows = [{"id": "a", "x": 1}, {"id": "b", "text": "é"}]
    storage.write_jsonl(tmp_path / "rows.jsonl", rows)
    assert list(storage.read_jsonl(tmp_path / "rows.jsonl")) == rows


def test_atomic_folder_replaces_only_when_complete(tmp_path):
    target = tmp_path / "model"
    with storage.atomic_folder(target) as staging:
        (staging / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1"
    # a failure half-way (a kill, a full disk) leaves the old folder and no staging debris
    with pytest.raises(RuntimeError):
        with storage.atomic_folder(target) as staging:
            (staging / "weights").write_text("v2 half")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "v1"
    assert [path.name for path in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"pid": 7}', {"pid": 7}),  # an object: read as it is
        ("[1, 2]", {}),  # JSON, but not an object
        ('{"pid": 7', {}),  # torn by a kill mid-write
        (b"\xff\xfe", {}),  # not UTF-8
        (None, {}),  # no file at all
    ],
)
def test_read_json_object_is_lenient(tmp_path, content, expected):
    path = tmp_path / "record.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    assert storage.read_json_object(path) == expected


# --- every read of a user-named path is bounded ---------------------------------------------------


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def _link_loop(tmp_path: Path) -> Path:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a"


def _socket(tmp_path: Path) -> Path:
    path = tmp_path / "s"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays; opening it is what must fail in one line
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp, "is a folder, not a regular file"),  # a directory
        (_fifo, "is a FIFO"),  # a named pipe: a blocking open would hang until a writer came
        (lambda tmp: Path("/dev/zero"), "is a device"),  # endless bytes while st_size says 0
        (_link_loop, "symbolic link"),  # a loop of links
        (_socket, "socket"),  # a socket cannot be opened at all
        (lambda tmp: tmp / "missing", "No such file"),  # nothing there
    ],
)
def test_only_regular_files_are_read(tmp_path, make, message):
    with pytest.raises(storage.StorageError, match=message):
        storage.read_bounded(make(tmp_path), 1024)


@pytest.mark.parametrize(
    "make, cap, readable",
    [
        (lambda tmp: _write(tmp / "f", b"x" * 10), 10, True),  # exactly the cap
        (lambda tmp: _write(tmp / "f", b"x" * 11), 10, False),  # one byte over
        (lambda tmp: Path("/proc/self/maps"), 16, False),  # st_size 0, yet far more: the cap counts bytes read
        (lambda tmp: (tmp / "l").symlink_to(_write(tmp / "f", b"{}")) or tmp / "l", 10, True),  # a link to a file is followed
    ],
)
def test_read_bounded_counts_what_it_reads(tmp_path, make, cap, readable):
    path = make(tmp_path)
    if readable:
        assert len(storage.read_bounded(path, cap)) <= cap
    else:
        with pytest.raises(storage.StorageError, match="larger than"):
            storage.read_bounded(path, cap)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "text, parses",
    [
        ("[" * 64 + "]" * 64, True),  # at the limit
        ("[" * 65 + "]" * 65, False),  # one level over
        ("[" * 100_000, False),  # 100,000 deep: a ValueError, never a RecursionError
        (json.dumps({"text": "[1] " * 1000, "table": [["a", "1"]] * 1000}), True),  # many brackets, shallow
    ],
)
def test_loads_bounded_limits_the_depth(text, parses):
    if parses:
        storage.loads_bounded(text)
    else:
        with pytest.raises(ValueError, match="nested"):
            storage.loads_bounded(text)


def test_readers_of_our_own_files_never_hang_on_a_fifo(tmp_path):
    fifo = _fifo(tmp_path)
    assert storage.read_json_object(fifo) == {}  # a summary reader: {} as for any unreadable file
    with pytest.raises(storage.StorageError, match="FIFO"):
        list(storage.read_jsonl(fifo))


# --- --out: only our own records are resumed, nothing of the user's is edited ---------------------

KEYS = ("id", "run")
RECORD = json.dumps({"id": "a", "run": "r"}) + "\n"


@pytest.mark.parametrize(
    "content, accepted",
    [
        (None, True),  # no file yet
        ("", True),  # an empty file: nothing to lose
        (RECORD * 2, True),  # records of this kind: resumed
        (RECORD + '{"id": "b", "ru', True),  # and a torn last line, what a kill leaves
        ("just some notes\n", False),  # a text file
        (json.dumps({"id": "q1", "question": "what?"}) + "\n", False),  # JSON objects of another kind (a question file)
        (RECORD + "not json\n" + RECORD, False),  # records with a line that is not one: would be dropped
        (RECORD + "[1, 2]\n", False),  # or a JSON line that is not an object
    ],
)
def test_claim_output_accepts_only_its_own_kind(tmp_path, content, accepted):
    path = tmp_path / "out.jsonl"
    if content is not None:
        path.write_text(content)
    if accepted:
        assert storage.claim_output(path, KEYS) == path
        assert content is None or path.read_text() == content  # kept as it was, to resume
    else:
        with pytest.raises(storage.StorageError, match="not a records file"):
            storage.claim_output(path, KEYS)
        assert path.read_text() == content  # untouched


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: (tmp / "out.jsonl").symlink_to(_write(tmp / "target", RECORD.encode())), "symbolic link"),  # appends would go through it
        (lambda tmp: os.mkfifo(tmp / "out.jsonl"), "FIFO"),  # nothing to keep, and reading it would hang
        (lambda tmp: (tmp / "out.jsonl").write_text(RECORD), "is the input file"),  # --out at the input itself
    ],
)
def test_claim_output_refuses_links_pipes_and_the_input(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(storage.StorageError, match=message):
        storage.claim_output(tmp_path / "out.jsonl", KEYS, overwrite=True, not_same_as=[tmp_path / "out.jsonl"] if message == "is the input file" else [])


def test_overwrite_keeps_the_old_file_beside(tmp_path, caplog):
    path = tmp_path / "out.jsonl"
    path.write_text("the user's notes\n")
    storage.claim_output(path, KEYS, overwrite=True)
    kept = list(tmp_path.glob("out.replaced-*.jsonl"))
    assert not path.exists() and len(kept) == 1 and kept[0].read_text() == "the user's notes\n"
    assert str(kept[0]) in caplog.text
