"""Rings with doorbells: how a process waits for its peers without spinning.

Each consuming *process* owns one `Doorbell` (an eventfd). Producers post it *after*
publishing; eventfd counts merge, so many posts cost the consumer one wake-up, after which it
drains every ring it reads. A consumer that releases slots of a ring that was full posts the
producer's doorbell, which is how a producer blocked on a full ring wakes (`Ring.release`
reports that case). Waiting is a `poll` over doorbells, control sockets and process sentinels
(pidfds): a dead peer makes its pidfd readable, so nobody waits on it forever.

`RingWriter` and `RingReader` bundle one ring with the doorbell to post; they never block. The
blocking is `wait_any`, called by process shells only.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

from schooner.ipc.ring import Ring, RingFullError
from schooner.ipc.shm import Segment


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
        """Post the consumer's doorbell once if anything was published since the last flush."""
        if self._posted:
            self._posted = False
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
