"""One HTTP request waiting for its queries' answers (shared by the Clipper and V2 routes)."""

from __future__ import annotations


class PendingRequest:
    """One predict request waiting for its queries' answers."""

    __slots__ = ("conn", "slot", "batch", "outputs", "remaining", "error", "start_ns", "render")

    def __init__(self, conn, slot: list, n: int, batch: bool, start_ns: int, render=None) -> None:
        self.start_ns = start_ns
        self.conn = conn
        self.slot = slot
        self.batch = batch
        # Clipper: the encoded prediction per query; with `render`:
        # (output JSON, default, explanation, query id, extra JSON members) per query
        self.outputs: list = [None] * n
        self.remaining = n
        self.error: tuple[int, bytes] | None = None
        # render(pending) -> (status, body, extra headers, content type), or None when the
        # answer comes later (feedback), for routes other than Clipper's predict
        self.render = render
