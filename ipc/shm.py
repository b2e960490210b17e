"""POSIX shared-memory segments: create (supervisor only), attach (children), sweep stale ones.

Ownership: the supervisor creates every segment, named ``/schooner-<instance>-<purpose>``
where ``<instance>`` is ``<supervisor pid>x<random hex>``, and unlinks each one on exit.
Children only attach; attaching never registers the segment with any resource tracker, so a
child's exit cannot delete what it does not own (the trap of Python 3.11's
``multiprocessing.shared_memory``). `sweep_stale` removes segments whose supervisor is gone,
so a SIGKILL of the whole process tree leaves nothing the next start does not clean.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import secrets

import posix_ipc
import psutil

log = logging.getLogger(__name__)

PREFIX = "schooner-"
SHM_DIR = "/dev/shm"
_NAME_RE = re.compile(r"^schooner-(\d+)x([0-9a-f]+)-")


def new_instance_id() -> str:
    """Instance id of this supervisor: its pid (for liveness checks) and a random tag."""
    return f"{os.getpid()}x{secrets.token_hex(3)}"


def segment_name(instance: str, purpose: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", purpose):
        raise ValueError(f"segment purpose {purpose!r} must be [A-Za-z0-9_.-]+")
    return f"/{PREFIX}{instance}-{purpose}"


class Segment:
    """A mapped POSIX shared-memory segment. `buf` is the mmap; `close` unmaps."""

    __slots__ = ("name", "nbytes", "buf", "owner")

    def __init__(self, name: str, nbytes: int, buf: mmap.mmap, owner: bool) -> None:
        self.name = name
        self.nbytes = nbytes
        self.buf = buf
        self.owner = owner

    @classmethod
    def create(cls, name: str, nbytes: int) -> Segment:
        """Create a new segment (fails if it exists) and pre-fault every page.

        First touch of a page runs at a fraction of copy speed, so it is paid here at start-up,
        never on the first query.
        """
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=nbytes)
        try:
            buf = mmap.mmap(shm.fd, nbytes, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        except BaseException:
            shm.close_fd()
            shm.unlink()
            raise
        shm.close_fd()
        if not hasattr(mmap, "MAP_POPULATE"):
            page = mmap.PAGESIZE
            for off in range(0, nbytes, page):
                buf[off] = 0
        return cls(name, nbytes, buf, owner=True)

    @classmethod
    def attach(cls, name: str) -> Segment:
        """Map an existing segment read-write. Never unlinks it."""
        shm = posix_ipc.SharedMemory(name)
        try:
            nbytes = shm.size
            buf = mmap.mmap(shm.fd, nbytes, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        finally:
            shm.close_fd()
        return cls(name, nbytes, buf, owner=False)

    def close(self) -> None:
        """Unmap. Views into `buf` must have been released first (BufferError otherwise)."""
        try:
            self.buf.close()
        except BufferError:
            log.warning("segment %s still has exported views; leaving it mapped", self.name)

    def unlink(self) -> None:
        """Remove the name (owner only). Existing mappings stay valid until closed."""
        unlink_segment(self.name)


def unlink_segment(name: str) -> bool:
    try:
        posix_ipc.unlink_shared_memory(name)
        return True
    except posix_ipc.ExistentialError:
        return False


def list_segments(prefix: str = PREFIX) -> list[str]:
    """Names (with leading '/') of schooner segments currently in /dev/shm."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted("/" + e for e in entries if e.startswith(prefix))


def _creator_alive(pid: int, created_s: float) -> bool:
    """True when `pid` is a live process that existed when the segment was created.

    A pid reused by a process started after the segment (create time later than the segment's)
    counts as gone; so does a zombie.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= created_s + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def sweep_stale(keep_instance: str | None = None) -> list[str]:
    """Unlink segments left by supervisors that are gone. Returns the names removed.

    A segment is stale when the pid in its instance id is not a live schooner process (a pid
    reused by a process started after the segment counts as gone).
    """
    removed = []
    for name in list_segments():
        m = _NAME_RE.match(name[1:])
        if not m:
            continue
        instance = f"{m.group(1)}x{m.group(2)}"
        if instance == keep_instance:
            continue
        pid = int(m.group(1))
        try:
            created_s = os.stat(SHM_DIR + name).st_mtime
        except FileNotFoundError:
            continue
        if not _creator_alive(pid, created_s) and unlink_segment(name):
            removed.append(name)
    if removed:
        log.info("removed %d stale shared-memory segment(s) of dead instances", len(removed))
    return removed
