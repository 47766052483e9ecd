"""Run one command and record its wall time and peak memory (for run_pipeline.sh and benchmarks).

    python -m finreason.measure --log FILE --name STEP -- python 04_train_sft.py --PROFILE=cpu
    python -m finreason.measure --summary FILE

The command runs as a child process; its peak resident memory is the kernel's account of that
child (``os.wait4``'s resource usage), so nothing in the measured script has to cooperate, and
several commands measured from one process each get their own figure. One
JSON line per command is appended to ``--log`` and the exit code is passed through;
``--summary`` prints the table of a log.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from finreason import console, storage

GIB = 1024**3


def run(command: Sequence[str], name: str, log: str | Path | None = None,
        env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run ``command`` (in ``env``, else this environment); return (and append to ``log``) its
    exit code, seconds and peak RSS."""
    started = time.time()
    child = subprocess.Popen(list(command), env=None if env is None else dict(env))
    try:
        _, status, usage = os.wait4(child.pid, 0)
    except KeyboardInterrupt:
        child.kill()
        raise
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen not to wait again
    code = child.returncode
    record = {
        "name": name,
        "command": " ".join(command),
        "exit_code": code,
        "seconds": round(time.time() - started, 1),
        # ru_maxrss is KiB on Linux (the child and the descendants it waited for)
        "peak_rss_gb": round(usage.ru_maxrss * 1024 / GIB, 2),
    }
    if log:
        storage.append_jsonl(log, [record])
    return record


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    total = sum(r["seconds"] for r in records)
    peak = max((r["peak_rss_gb"] for r in records), default=0.0)
    rows = [(r["name"], f"{r['seconds']:.0f}s", f"{r['peak_rss_gb']:.2f} GiB") for r in records]
    rows.append(("total (peak: the largest step)", f"{total:.0f}s", f"{peak:.2f} GiB"))
    return console.table(rows, ("step", "time", "peak memory"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(description="Run a command; record its wall time and peak memory.", allow_abbrev=False)
    parser.add_argument("--log", help="append one JSON line per command here")
    parser.add_argument("--name", default=None, help="the step's name in the log (default: the command)")
    parser.add_argument("--summary", metavar="LOG", help="print the table of a log and exit")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary_table(list(storage.read_jsonl(args.summary))))
        return 0
    if not command:
        parser.error("give the command to run after --")
    record = run(command, args.name or " ".join(command), args.log)
    print(f"--- {record['name']}: {record['seconds']:.0f}s, peak memory {record['peak_rss_gb']:.2f} GiB", file=sys.stderr)
    return record["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
