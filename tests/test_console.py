"""console: the one text table every script prints, the one-line exit on a full disk, and run_child."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from finreason import console
from helpers import PROJECT_ROOT


@pytest.mark.parametrize(
    ("rows", "columns", "kwargs", "expected"),
    [
        # the first column (the row's name) left-aligned, numbers right-aligned
        ([("zero-shot", "0.0%"), ("SFT", "19.0%")], ("stage", "strict"), {}, ["stage     strict", "zero-shot   0.0%", "SFT        19.0%"]),
        # None is shown as "-", whatever the column
        ([("a", None)], ("name", "value"), {}, ["name value", "a        -"]),
        # several left columns, and no trailing blanks on any line
        ([("x", "ok", "a long detail"), ("yy", "FAIL", "d")], ("check", "status", "detail"), {"left": ("check", "status", "detail")},
         ["check status detail", "x     ok     a long detail", "yy    FAIL   d"]),
        # a title goes above the header
        ([("a", 1)], ("k", "v"), {"title": "T: n=1"}, ["T: n=1", "k v", "a 1"]),
        # no rows: the header alone, never pandas' "Empty DataFrame"
        ([], ("step", "time"), {}, ["step time"]),
    ],
)
def test_table(rows, columns, kwargs, expected):
    assert console.table(rows, columns, **kwargs).splitlines() == expected


# --- a full disk, however a library wrapped it: one line ----------------------------------------


def _raised_from(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as error:
            raise outer from error
    except Exception as error:
        return error


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        # safetensors' Rust writer (the issue's GGUF conversion), torch.save, and one wrapped in another
        (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })"), True),
        (RuntimeError("SafetensorError: I/O error: No space left on device (os error 28)"), True),
        (_raised_from(ValueError("saving failed"), OSError(errno.ENOSPC, "full")), True),
        (RuntimeError("CUDA out of memory"), False),
        (OSError(errno.EACCES, "Permission denied"), False),
    ],
)
def test_disk_full_is_recognised(error, full):
    assert console.disk_full(error) is full


def test_run_main_says_disk_full_in_one_line(capsys):
    def main(argv):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)\nmore detail")

    with pytest.raises(SystemExit) as exit_info:
        console.run_main(main, [])
    err = capsys.readouterr().err
    assert exit_info.value.code == console.EXIT_USER_ERROR and "Traceback" not in err and err.count("\n") == 1
    assert "error: no space left on device (Error while serializing" in err


def test_run_main_keeps_the_traceback_of_a_bug():
    def main(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        console.run_main(main, [])


# --- run_child: stopping the launcher stops the server ------------------------------------------

CHILD = """
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1], "w").write(signal.Signals(signum).name)
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
time.sleep(60)
"""
LAUNCHER = """
import sys
from finreason import console
sys.exit(console.run_child([sys.executable, "-c", sys.argv[1], sys.argv[2]]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_child_forwards_the_signal_and_waits(tmp_path, signum):
    marker = tmp_path / "stopped"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, CHILD, str(marker)], stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout.readline() == "ready\n"
        launcher.send_signal(signum)
        # the launcher exits with the server's code, after the server has stopped
        assert launcher.wait(timeout=30) == 3
        assert marker.read_text() == signum.name
    finally:
        launcher.kill()
        launcher.wait()


PARENT = """\
import subprocess, sys
from finreason import console
command = [sys.executable, "-c", "import time; time.sleep(60)"]
child = subprocess.Popen(console.dying_with_parent(command) if sys.argv[1] == "wrapped" else command)
print(child.pid, flush=True)
child.wait()
"""


def _gone(pid: int) -> bool:
    """No such process, or a zombie (a container's PID 1 may never reap the orphan)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize(
    "how, dies",
    [
        ("wrapped", True),  # dying_with_parent: the worker goes with a parent killed by SIGKILL
        ("plain", False),  # the control: a plain child outlives it (so the test can tell them apart)
    ],
)
def test_a_child_dies_with_its_parent_even_on_kill_9(how, dies):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, how], stdout=subprocess.PIPE, text=True, env=env)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline and dies:
        time.sleep(0.05)
    try:
        assert _gone(child) is dies
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
