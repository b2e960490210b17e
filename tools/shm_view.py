"""Read-only views of a running server's shared memory: its segments, rings and boards.

Owns the decoding the tools share, and nothing that writes: every segment is mapped
``PROT_READ`` (a live view can never disturb the server), rings are read through
``schooner.ipc.ring.Ring`` (head, tail, slots) and boards through ``schooner.ipc.board.Board``
(the seqlocked text snapshots the scheduler and frontends publish). Names follow
``/schooner-<pid>x<tag>-<purpose>`` (``schooner.ipc.shm``).
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import posix_ipc

from schooner.ipc.board import Board
from schooner.ipc.ring import MAGIC, Ring
from schooner.ipc.shm import list_segments

_NAME = re.compile(r"^/schooner-(\d+x[0-9a-f]+)-(.+)$")
BOARD_PURPOSES = ("metrics-", "stats-", "client-shm")


@dataclass(frozen=True, slots=True)
class SegmentName:
    name: str  # with the leading '/'
    instance: str  # <supervisor pid>x<tag>
    purpose: str

    @property
    def supervisor_pid(self) -> int:
        return int(self.instance.split("x", 1)[0])

    @property
    def is_board(self) -> bool:
        return self.purpose.startswith(BOARD_PURPOSES)


def parse_name(name: str) -> SegmentName | None:
    m = _NAME.match(name)
    return SegmentName(name, m.group(1), m.group(2)) if m else None


def instances(names: list[str] | None = None) -> dict[str, list[SegmentName]]:
    """Segments per instance, in name order."""
    out: dict[str, list[SegmentName]] = {}
    for n in list_segments() if names is None else names:
        parsed = parse_name(n)
        if parsed is not None:
            out.setdefault(parsed.instance, []).append(parsed)
    return out


@contextmanager
def mapped(name: str) -> Iterator[memoryview]:
    """The segment mapped read-only; views must not outlive the block."""
    shm = posix_ipc.SharedMemory(name, read_only=True)
    try:
        buf = mmap.mmap(shm.fd, shm.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        shm.close_fd()
    view = memoryview(buf)
    try:
        yield view
    finally:
        view.release()
        buf.close()


@dataclass(frozen=True, slots=True)
class RingState:
    nslots: int
    slot_nbytes: int
    head: int  # messages published so far
    tail: int  # messages released so far

    @property
    def in_use(self) -> int:
        return self.head - self.tail


def ring_state(buf) -> RingState | None:
    """Head, tail and size of the ring in ``buf`` (None when it holds no ring)."""
    if len(buf) < 64 or memoryview(buf)[:8].cast("Q")[0] != MAGIC:
        return None
    ring = Ring(buf)
    try:
        return RingState(ring.nslots, ring.slot_nbytes, ring.head, ring.tail)
    finally:
        ring.close()


def board_text(buf) -> str:
    board = Board(buf)
    try:
        return board.read().decode(errors="replace")
    finally:
        board.close()
