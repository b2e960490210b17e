"""A Linux timerfd on CLOCK_MONOTONIC, through ctypes (``os.timerfd_*`` needs Python 3.13).

Why: asyncio and uvloop timers have millisecond resolution, so a request due 200 µs from now
would leave up to a millisecond late. A timerfd armed at an absolute CLOCK_MONOTONIC time in ns
becomes readable at that time (no timer slack for timerfds), and the event loop watches it like
any socket. ``time.monotonic_ns()`` reads the same clock, in every process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_create.restype = ctypes.c_int
_libc.timerfd_settime.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(_Itimerspec),
    ctypes.POINTER(_Itimerspec),
]
_libc.timerfd_settime.restype = ctypes.c_int


class MonotonicTimerFd:
    """One-shot absolute timer; ``fd`` turns readable at the armed time. Not thread-safe."""

    def __init__(self) -> None:
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd = fd
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)

    def arm_at_ns(self, deadline_ns: int) -> None:
        """Readable at CLOCK_MONOTONIC ``deadline_ns`` (at once if it has passed)."""
        deadline_ns = max(deadline_ns, 1)  # all zeros would disarm
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def consume(self) -> None:
        """Reads the expiry count so the fd stops being readable; a spurious wake-up is fine."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
