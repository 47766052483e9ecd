"""One writer per output folder: a second writer stops with the holder's PID and command, a lock
left by a killed process is taken over, read-only uses and the other ranks of a launch pass."""

from __future__ import annotations

import json
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
