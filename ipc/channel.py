"""Rings with doorbells: how a process waits for its peers, waking them only when needed.

Each consuming *process* owns one `Doorbell` (an eventfd). Producers post it *after*
publishing, and only when the ring's ``sleeping`` word says the consumer may be blocked (the
wake-up protocol and why no wake-up is lost: `schooner.ipc.ring`). eventfd counts merge, so
many posts cost the consumer one wake-up, after which it drains every ring it reads. A
consumer that releases slots of a ring that was full posts the producer's doorbell, which is
how a producer blocked on a full ring wakes (`Ring.release` reports that case).

`Waiter` is the consumer's side: an optional bounded spin on the rings' heads (adaptive: it
spins only while recent messages came within the spin budget), then the announce-fence-recheck
step, then a `poll` over the doorbell, control sockets and process sentinels (pidfds): a dead
peer makes its pidfd readable, so nobody waits on it forever. `RingWriter` and `RingReader`
bundle one ring with the doorbell to post; they never block.
"""

from __future__ import annotations

import ctypes
import os
import platform
import select
import time
from collections.abc import Callable, Sequence

from schooner.ipc.ring import Ring, RingFullError
from schooner.ipc.shm import Segment


def _make_fence() -> Callable[[], object]:
    """A full memory fence callable from Python: a locked read-modify-write on a private word.

    POSIX lists ``pthread_spin_trylock`` among the functions that synchronize memory; glibc
    implements it on x86-64 as an atomic exchange (``xchg`` is implicitly locked: a full
    barrier) whether or not the lock is free, so the word is simply left taken. ~0.2 us."""
    libc = ctypes.CDLL(None)
    trylock = libc.pthread_spin_trylock
    trylock.argtypes = (ctypes.c_void_p,)
    trylock.restype = ctypes.c_int
    word = ctypes.c_int(0)
    ptr = ctypes.cast(ctypes.pointer(word), ctypes.c_void_p)
    _keep.append(word)
    return lambda: trylock(ptr)


_keep: list = []
full_fence = _make_fence()
# The ordering argument (schooner.ipc.ring) is made for x86-64's TSO. Elsewhere producers post at
# every flush, as before the sleeping word existed, and nothing spins.
TSO = platform.machine().lower() in ("x86_64", "amd64")


class PeerDeadError(RuntimeError):
    """A peer process exited while we waited on it."""


class Doorbell:
    """An eventfd. `ring` adds one; `clear` consumes whatever accumulated."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def create(cls) -> Doorbell:
        return cls(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))

    def fileno(self) -> int:
        return self.fd

    def ring(self) -> None:
        try:
            os.eventfd_write(self.fd, 1)
        except BlockingIOError:  # counter saturated: the consumer will wake anyway
            pass

    def clear(self) -> int:
        try:
            return os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ProcessSentinel:
    """A pidfd: readable once the process has exited. Never polls."""

    __slots__ = ("pid", "fd")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = os.pidfd_open(pid)

    def fileno(self) -> int:
        return self.fd

    def alive(self) -> bool:
        return not select.select([self.fd], [], [], 0)[0]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def wait_any(fds: list[int], timeout_s: float | None) -> list[int]:
    """Block until any of `fds` is readable (or hung up); returns those. [] on timeout."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ms = None if timeout_s is None else max(0, int(timeout_s * 1000 + 0.999))
    return [fd for fd, _ in poller.poll(ms)]


class RingWriter:
    """Producer end: fills slots through an encoder and posts the consumer's doorbell (coalesced)."""

    __slots__ = ("segment", "ring", "consumer_bell", "_posted")

    def __init__(self, segment: Segment, consumer_bell: Doorbell) -> None:
        self.segment = segment
        self.ring = Ring(segment.buf)
        self.consumer_bell = consumer_bell
        self._posted = False

    def free(self) -> int:
        return self.ring.free()

    def try_write(self, encode: Callable[[memoryview], int]) -> bool:
        """Let `encode(slot) -> nbytes` fill the next slot, then publish it. False when full.

        An exception from `encode` (OverflowError: does not fit) publishes nothing.
        """
        ring = self.ring
        try:
            slot = ring.reserve()
        except RingFullError:
            return False
        try:
            n = encode(slot)
        finally:
            slot.release()
        ring.publish(n)
        self._posted = True
        return True

    def flush(self) -> None:
        """Post the consumer's doorbell once if anything was published since the last flush
        and the consumer may be asleep (P2, P3 of the wake-up protocol)."""
        if self._posted:
            self._posted = False
            full_fence()
            if self.ring.sleeping() or not TSO:
                self.consumer_bell.ring()

    def close(self) -> None:
        self.ring.close()
        self.segment.close()


class RingReader:
    """Consumer end: zero-copy views of pending slots; releases explicitly."""

    __slots__ = ("segment", "ring", "producer_bell")

    def __init__(self, segment: Segment, producer_bell: Doorbell | None) -> None:
        self.segment = segment
        self.ring = Ring(segment.buf)
        self.producer_bell = producer_bell

    def pending(self) -> int:
        return self.ring.pending()

    def read(self, i: int = 0) -> memoryview:
        """The i-th pending slot's bytes, zero-copy; valid until released."""
        return self.ring.peek(i)

    def release(self, count: int = 1) -> None:
        if self.ring.release(count) and self.producer_bell is not None:
            self.producer_bell.ring()

    def close(self) -> None:
        self.ring.close()
        self.segment.close()


def flush_all(writers: Sequence[RingWriter | None]) -> None:
    """`RingWriter.flush` for several rings with one fence: publish all, fence once, post
    each consumer that may sleep."""
    posted = [w for w in writers if w is not None and w._posted]
    if not posted:
        return
    full_fence()
    for w in posted:
        w._posted = False
        if w.ring.sleeping() or not TSO:
            w.consumer_bell.ring()


class Waiter:
    """The consumer side of the wake-up protocol for one process: its doorbell, an adaptive
    bounded spin, and the announce-fence-recheck step before blocking.

    `spin_s` is the most it spins before sleeping (0: never). It spins only while the recent
    hit rate is at least one half, a hit being a wait that ended with a ring message within
    `spin_s` (measured whether it spun or slept), so an idle or slow peer costs no spinning
    and a fast one is caught without a wake-up. Hits are an exponential average over ~8 waits.
    While rings keep it busy it still looks at its other descriptors (control, feedback) at
    least every `FDS_EVERY_NS`, so they are never starved by load.
    """

    FDS_EVERY_NS = 1_000_000

    __slots__ = ("bell", "spin_ns", "hits", "spins", "sleeps", "spin_hits", "_fds_at")

    def __init__(self, bell: Doorbell, spin_s: float = 0.0) -> None:
        self.bell = bell
        self.spin_ns = int(spin_s * 1e9) if TSO else 0
        self.hits = 0.0
        self.spins = 0  # waits that spun
        self.spin_hits = 0  # waits that ended during the spin
        self.sleeps = 0  # waits that blocked in poll
        self._fds_at = 0  # when the other descriptors were last polled

    def wait(self, readers: Sequence[RingReader], fds: list[int], timeout_s: float | None) -> list[int]:
        """Return when a ring in `readers` has a message, one of `fds` is readable, or after
        `timeout_s` (None: no limit). Returns the readable ones of `fds` ([] otherwise)."""
        for r in readers:
            if r.ring.pending():
                return self._busy(fds, time.monotonic_ns())
        start = time.monotonic_ns()
        spin_ns = self.spin_ns
        if spin_ns and self.hits >= 0.5 and timeout_s != 0:
            self.spins += 1
            end = start + (spin_ns if timeout_s is None else min(spin_ns, int(timeout_s * 1e9)))
            while True:
                for r in readers:
                    if r.ring.pending():
                        now = time.monotonic_ns()
                        self.spin_hits += 1
                        self._record(now - start)
                        return self._busy(fds, now)
                if time.monotonic_ns() >= end:
                    break
        for r in readers:  # C1
            r.ring.set_sleeping(True)
        full_fence()  # C2
        for r in readers:  # C3
            if r.ring.pending():
                for q in readers:
                    q.ring.set_sleeping(False)
                now = time.monotonic_ns()
                self._record(now - start)
                return self._busy(fds, now)
        self.sleeps += 1
        bell = self.bell.fd
        if timeout_s is not None:
            timeout_s = max(0.0, timeout_s - (time.monotonic_ns() - start) / 1e9)
        ready = wait_any([bell, *fds], timeout_s)  # C4
        self.bell.clear()  # C5
        for r in readers:
            r.ring.set_sleeping(False)
        now = time.monotonic_ns()
        self._fds_at = now
        if spin_ns:  # a stale doorbell count (no message) is not a hit
            woke = bell in ready and any(r.ring.pending() for r in readers)
            self._record(now - start if woke else spin_ns + 1)
        return [fd for fd in ready if fd != bell]

    def _busy(self, fds: list[int], now: int) -> list[int]:
        """A ring has work: the other descriptors only if they were not looked at lately."""
        if now - self._fds_at < self.FDS_EVERY_NS or not fds:
            return []
        self._fds_at = now
        return wait_any(fds, 0)

    def _record(self, gap_ns: int) -> None:
        self.hits += ((1.0 if gap_ns <= self.spin_ns else 0.0) - self.hits) * 0.125
