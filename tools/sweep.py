"""``python -m tools.sweep``: list Schooner's shared-memory segments and remove those of dead servers.

Lists every ``/dev/shm/schooner-*`` segment by instance, with whether its supervisor is alive,
and (unless ``--dry-run``) unlinks the segments of dead instances through the server's own
``schooner.ipc.shm.sweep_stale`` (the same rule ``schooner serve`` applies at start and
``schooner sweep`` by hand). A live instance's segments are never touched.
"""

from __future__ import annotations

import argparse
import os
import sys

from schooner.ipc.shm import SHM_DIR, _creator_alive, sweep_stale
from tools.shm_view import instances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list only; remove nothing")
    args = parser.parse_args(argv)
    found = instances()
    if not found:
        print("no schooner segments in /dev/shm")
    for instance, segs in found.items():
        try:
            created = min(os.stat(SHM_DIR + s.name).st_mtime for s in segs)
        except FileNotFoundError:
            continue
        alive = _creator_alive(segs[0].supervisor_pid, created)
        nbytes = sum(os.stat(SHM_DIR + s.name).st_size for s in segs if os.path.exists(SHM_DIR + s.name))
        print(f"{instance}: {len(segs)} segments, {nbytes / 2**20:.1f} MiB, supervisor {segs[0].supervisor_pid} "
              f"{'alive' if alive else 'gone (stale)'}")
    if not args.dry_run:
        removed = sweep_stale()
        print(f"removed {len(removed)} stale segment(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
