"""One writer per output folder: a second writer stops with the holder's PID and command, a lock
left by a killed process is taken over, read-only uses and the other ranks of a launch pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from finreason import outputlock
from helpers import run_script

HOLDER = """
import sys, time
from finreason import outputlock
with outputlock.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path's lock (killed at the end)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def test_a_second_writer_stops_naming_the_holder(tmp_path, holder):
    with pytest.raises(outputlock.OutputLockedError) as refused:
        with outputlock.hold(tmp_path):
            pass
    message = str(refused.value)
    assert f"PID {holder.pid}" in message and "-c" in message and "--OUTPUT_DIR" in message


@pytest.mark.parametrize(
    "argv",
    [
        ["06_evaluate.py", "--stage", "sft", "--split", "dev", "--limit", "6"],  # the case 5
        ["04_train_sft.py", "--no-eval"],
        ["05_train_grpo.py"],
        ["02_zero_shot_baseline.py"],
        ["07_analyze.py"],
    ],
)
def test_scripts_refuse_a_held_folder_in_one_line(tmp_path, holder, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        run_script(argv[0], [*argv[1:], f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu", "--DOWNLOAD_DATA=false"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.startswith(f"{argv[0]}: error: {tmp_path} is in use by PID {holder.pid}")


def test_score_without_out_reads_beside_a_writer(tmp_path, holder, dev_examples, capsys):
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps({"id": dev_examples[0].id, "completion": "Answer: 1"}) + "\n", encoding="utf-8")
    summary = run_script("06_evaluate.py", ["--score", str(predictions), "--split", "dev", f"--OUTPUT_DIR={tmp_path}",
                                            "--PROFILE=cpu", "--DOWNLOAD_DATA=false", "--json"])
    assert summary["n"] == 1
    # --out inside the folder writes there: that needs the lock
    with pytest.raises(SystemExit):
        run_script("06_evaluate.py", ["--score", str(predictions), "--split", "dev", "--out", str(tmp_path / "verdicts.jsonl"),
                                      f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu", "--DOWNLOAD_DATA=false"])
    assert "is in use by PID" in capsys.readouterr().err


def test_a_killed_holders_lock_is_taken_over(tmp_path, holder, caplog):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert outputlock.holder(outputlock.lock_path(tmp_path))["pid"] == holder.pid  # its record is still there
    with caplog.at_level("INFO"), outputlock.hold(tmp_path):
        assert outputlock.holder(outputlock.lock_path(tmp_path))["pid"] != holder.pid
    assert f"left by PID {holder.pid}" in caplog.text


def test_other_ranks_of_a_launch_take_no_lock(tmp_path, holder, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with outputlock.hold(tmp_path):
        pass
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(outputlock.OutputLockedError):
        with outputlock.hold(tmp_path):
            pass


def test_holding_is_reentrant_and_released(tmp_path):
    with outputlock.hold(tmp_path), outputlock.hold(tmp_path):
        pass
    # released: another process can take it now
    done = subprocess.run([sys.executable, "-c", HOLDER.replace("time.sleep(120)", "pass"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "held\n", done.stderr


def _link_to_victim(tmp_path):
    victim = tmp_path.parent / f"{tmp_path.name}-victim.txt"
    victim.write_text("someone's file\n")
    outputlock.lock_path(tmp_path).symlink_to(victim)
    return victim


@pytest.mark.parametrize(
    "make, message",
    [
        (_link_to_victim, "is a symbolic link"),  # holding used to empty the link's target, any file as root
        (lambda tmp: (tmp / "elsewhere").mkdir() or outputlock.lock_path(tmp).symlink_to(tmp / "elsewhere"), "is a symbolic link"),  # a link to a folder
        (lambda tmp: os.mkfifo(outputlock.lock_path(tmp)), "is a FIFO"),  # would hang the holder's record read
        (lambda tmp: outputlock.lock_path(tmp).mkdir(), "is a folder"),  # a folder at the lock's name
    ],
)
def test_the_lock_is_a_regular_file_never_a_link(tmp_path, make, message):
    victim = make(tmp_path)
    with pytest.raises(outputlock.LockFileError, match=message):
        with outputlock.hold(tmp_path):
            pass
    if victim:
        assert victim.read_text() == "someone's file\n"  # not emptied, not written


def test_a_lock_file_through_a_link_in_the_folder_path_is_fine(tmp_path):
    # the output folder itself may be a link (a models or scratch disk): only the lock's own name may not
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    with outputlock.hold(tmp_path / "linked"):
        assert outputlock.holder(tmp_path / "real" / outputlock.LOCK_NAME)["pid"] == os.getpid()


@pytest.mark.parametrize(
    "pid_of, words",
    [
        (lambda: os.getppid(), "its PID now belongs to another process"),  # alive, but not holding the flock
        (lambda: _finished_pid(), "it is no longer running"),  # gone
    ],
)
def test_a_takeover_says_what_became_of_the_old_pid(tmp_path, caplog, pid_of, words):
    pid = pid_of()
    outputlock.lock_path(tmp_path).write_text(json.dumps({"pid": pid, "command": "old run"}) + "\n")
    with caplog.at_level("INFO"), outputlock.hold(tmp_path):
        pass
    assert f"left by PID {pid} (old run), which no longer holds it: {words}" in caplog.text


def _finished_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid
