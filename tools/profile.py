"""``python -m tools.profile``: py-spy on every process of a running Schooner server, at once.

Finds the server's processes (the supervisor named by ``--pid``, or the supervisor of the only
instance with segments in /dev/shm, and all its descendants), labels each with its role
(supervisor, frontend[i], scheduler, model[...]) from its command line, and runs one py-spy per
process in parallel: ``dump`` (default: every thread's stack now) or ``record`` for ``--duration``
seconds into ``--out DIR/<role>.svg`` (flame graphs). py-spy reads the processes from outside
(ptrace); it is not a dependency of the server: the ``bench`` extra installs it
(``pip install -e '.[bench]'``, which ``make test`` and ``make bench`` run).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from tools.processes import server_processes
from tools.shm_view import instances

PY_SPY_NOTE = ("py-spy is not a dependency of the server (it reads the processes from outside, by ptrace): "
               "the bench extra installs it, pip install -e '.[bench]' (make test and make bench do).")


def find_supervisor() -> int | None:
    live = [seg[0].supervisor_pid for seg in instances().values() if psutil.pid_exists(seg[0].supervisor_pid)]
    return live[0] if len(live) == 1 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.profile", description=__doc__.split("\n")[0], epilog=PY_SPY_NOTE)
    parser.add_argument("--pid", type=int, help="the supervisor's pid (default: the only running instance's)")
    parser.add_argument("--record", action="store_true", help="record flame graphs instead of dumping stacks")
    parser.add_argument("--duration", type=int, default=10, help="seconds to record (default 10)")
    parser.add_argument("--rate", type=int, default=250, help="samples per second when recording (default 250)")
    parser.add_argument("--out", type=Path, default=Path("profiles"), help="directory for the SVGs (default ./profiles)")
    parser.add_argument("--native", action="store_true", help="include native (C) frames")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or (str(Path(sys.executable).with_name("py-spy")) if Path(sys.executable).with_name("py-spy").exists() else None)
    if py_spy is None:
        print(f"py-spy is not installed; {PY_SPY_NOTE}", file=sys.stderr)
        return 2
    pid = args.pid or find_supervisor()
    if pid is None:
        parser.error("no single running instance found: give --pid of the supervisor")
    procs = server_processes(pid)
    extra = ["--native"] if args.native else []
    jobs = []
    if args.record:
        args.out.mkdir(parents=True, exist_ok=True)
    for role, p in procs:
        if args.record:
            cmd = [py_spy, "record", "--pid", str(p), "--duration", str(args.duration), "--rate", str(args.rate),
                   "--output", str(args.out / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', role)}.svg"), "--nonblocking", *extra]
        else:
            cmd = [py_spy, "dump", "--pid", str(p), *extra]
        jobs.append((role, p, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    failed = 0
    for role, p, job in jobs:
        out, _ = job.communicate()
        failed += job.returncode != 0
        text = "\n".join(line[:160] + (" ..." if len(line) > 160 else "") for line in out.rstrip().splitlines())
        print(f"===== {role} (pid {p}) =====\n{text}\n")
    if args.record:
        print(f"flame graphs in {args.out}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
