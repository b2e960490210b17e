"""A shared-memory notice board: one writer publishes a text snapshot, any process reads it.

Used for metrics: the scheduler publishes its Prometheus text, and a frontend answering
``GET /metrics`` reads it without asking the scheduler anything (no round trip, no lock).

Layout: ``u64 seq`` at 0, ``u64 nbytes`` at 8, text from 64. A seqlock: the writer makes `seq`
odd, writes the text and its length, then makes `seq` even again; a reader copies the text and
retries when `seq` was odd or changed meanwhile. One writer only.
"""

from __future__ import annotations

_TEXT = 64


def board_nbytes(capacity: int) -> int:
    return _TEXT + capacity


class Board:
    __slots__ = ("_buf", "_u64")

    def __init__(self, buf) -> None:
        self._buf = memoryview(buf).cast("B")
        self._u64 = self._buf[:16].cast("Q")

    @property
    def capacity(self) -> int:
        """The longest text `publish` keeps whole (longer texts are cut)."""
        return len(self._buf) - _TEXT

    def publish(self, text: bytes) -> None:
        cap = len(self._buf) - _TEXT
        if len(text) > cap:
            text = text[:cap]
        u = self._u64
        seq = u[0]
        u[0] = seq + 1  # odd: writing
        self._buf[_TEXT : _TEXT + len(text)] = text
        u[1] = len(text)
        u[0] = seq + 2

    def read(self, tries: int = 100) -> bytes:
        """A consistent snapshot (b"" if none was published or the writer kept racing)."""
        u = self._u64
        for _ in range(tries):
            s1 = u[0]
            if s1 & 1:
                continue
            n = u[1]
            data = bytes(self._buf[_TEXT : _TEXT + n])
            if u[0] == s1:
                return data
        return b""

    def close(self) -> None:
        self._u64.release()
        self._buf.release()
