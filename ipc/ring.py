"""Single-producer/single-consumer ring of fixed-capacity slots over any writable buffer.

This module is pure index arithmetic: no sockets, no syscalls, no clocks. It works over a
`bytearray` (tests), an anonymous `mmap`, or a POSIX shared-memory mapping (production). The
doorbells that wake the peer live in `schooner.ipc.channel`, not here.

Layout (all integers little-endian u64, each hot index on its own 64-byte cache line)::

    0    magic, layout version, nslots, slot_nbytes          written once by create()
    64   head   next sequence number the producer publishes  written by the producer only
    128  tail   next sequence number the consumer releases   written by the consumer only
    192  sleeping  1 while the consumer may be blocked        written by the consumer only
    256  nbytes[nslots]  payload length of each slot          written by the producer only
    ...  slot[0] .. slot[nslots-1], each slot_nbytes, 64-byte aligned

Sequence numbers only grow (u64 never wraps in practice); sequence ``s`` lives in slot
``s % nslots``. The ring holds ``head - tail`` messages, ``0 <= head - tail <= nslots``. The
sequence number doubles as the slot's generation: a reference (ring, seq, nbytes) is stale
once ``tail > seq``.

Slot protocol:
  producer: (1) see ``head - tail < nslots``; (2) write the payload into slot ``head % nslots``;
            (3) write ``nbytes[head % nslots]``; (4) store ``head + 1`` -- the publish.
  consumer: (1) load ``head``; (2) for each ``s`` in ``[tail, head)`` read ``nbytes[s % n]`` and
            the payload, in order; (3) store ``tail = s + 1`` -- the release, explicit, never
            left to garbage collection.

Why the publish order is safe: each index has exactly one writer, and a payload is written
before the index store that publishes it. On x86-64 (TSO) stores become visible in program
order and loads are not reordered with older loads, so a consumer that observes ``head = h``
also observes every payload byte and length written before it; symmetrically a producer that
observes ``tail = t`` may overwrite slots below ``t`` because the consumer finished reading them
before storing ``t`` (x86 does not reorder a store before older loads). Index stores are single
aligned 8-byte stores (atomic on every 64-bit target). Weakly ordered CPUs (ARM) would need
release/acquire ordering on the index stores and loads, which this pure-Python ring does not
issue between a payload and its publish: x86-64 is the supported target (elsewhere the channel
layer posts the doorbell at every flush and never spins, the protocol of before the sleeping
word, but the payload ordering is still not argued there). A producer killed mid-write leaves either no message (``head`` not
stored) or a whole one; the dead peer itself is detected by the channel layer (process
sentinels).

Wake-up protocol: the consumer process owns one doorbell (an eventfd; see
`schooner.ipc.channel`), shared by every ring it reads. A producer posts it only when the
ring's ``sleeping`` word says the consumer may be blocked, so a busy consumer costs its
producers no syscall and gets no wake-up it does not need:

  producer, after publishing one or more messages:
            (P1) store ``head`` (the publish above); (P2) full fence; (P3) load ``sleeping``;
            if it is 1, post the doorbell.
  consumer, when every ring it reads is empty (after an optional bounded spin on ``head``):
            (C1) store ``sleeping = 1`` on every ring it reads; (C2) full fence; (C3) load
            ``head`` of every ring; if any ring has a message, store ``sleeping = 0`` and drain
            (no sleep); else (C4) block in poll on the doorbell (and its other descriptors);
            (C5) read the doorbell (its count goes to 0), store ``sleeping = 0`` on every ring,
            drain.

Why no wake-up is lost: take a message published by P1 that the consumer's C3 does not see.
(P1, fence, P3) and (C1, fence, C3) form the store-buffering litmus test with a full fence on
both sides, whose outcome "both loads read the old value" is forbidden (on x86-64 TSO only a
store followed by a load of another address may be reordered, and the fence forbids exactly
that). So P3 reads the ``sleeping = 1`` of C1 (or of a later C1) and posts. The post happens
after C1; the consumer reads the doorbell only in C5, after its poll returned, so the count
is still there when it polls and the poll returns at once. Conversely when P3 reads 0 the
consumer is between C5 and its next C1, and that next C1/C2/C3 sees P1 by the same litmus
argument: every message published is either seen by a C3 or posted. A post whose load read a
stale 1 (the consumer already woke) costs one spurious wake-up, never a lost one. The flag
starts at 1 (``create``), so a consumer that never stores it is posted at every flush, which
is the plain eventfd protocol. The frontend's event loop sleeps in epoll, not in a `Waiter`:
it stores 0 on its response ring when it schedules a tick (a callback the loop runs before it
can block again), and the tick's end is its C1-C3 (store 1, fence, look at the ring and read
what is there); so the flag is 0 only while a tick that will look is pending
(``tests/e2e/test_frontend_wakeup.py``).
A producer blocked on a *full* ring is woken the plain way: the consumer posts it whenever a
release frees a full ring (`release` returns True). The protocol is model-checked over TSO
store buffers in ``tests/unit/test_wakeup_model.py`` and stressed across processes in
``tests/integration/test_ring_cross_process.py``.
"""

from __future__ import annotations

MAGIC = 0x5343484F4F4E5231  # "SCHOONR1"
LAYOUT_VERSION = 2
_CACHE_LINE = 64
_HEAD = _CACHE_LINE // 8  # u64 index of head
_TAIL = 2 * _CACHE_LINE // 8  # u64 index of tail
_SLEEPING = 3 * _CACHE_LINE // 8  # u64 index of the consumer's sleeping flag
_LENS = 4 * _CACHE_LINE // 8  # u64 index of nbytes[0]
_HEADER = 4 * _CACHE_LINE


def _align(n: int, to: int = _CACHE_LINE) -> int:
    return (n + to - 1) // to * to


class RingFullError(RuntimeError):
    """Raised by `reserve` when every slot holds an unreleased message."""


class RingLayoutError(ValueError):
    """The buffer does not hold a ring of the expected layout."""


def ring_nbytes(nslots: int, slot_nbytes: int) -> int:
    """Total bytes a ring with these dimensions needs."""
    return _slots_offset(nslots) + nslots * _align(slot_nbytes)


def _slots_offset(nslots: int) -> int:
    return _align(_HEADER + 8 * nslots)


class Ring:
    """One SPSC ring over `buf`. The same class serves both ends; each end calls only its side.

    Producer side: `free`, `reserve`, `publish`. Consumer side: `pending`, `peek`, `release`.
    """

    __slots__ = ("_buf", "_u64", "nslots", "slot_nbytes", "_stride", "_base")

    def __init__(self, buf, *, _check: bool = True) -> None:
        self._buf = memoryview(buf).cast("B")
        self._u64 = None
        hdr = self._buf[:_HEADER].cast("Q")
        if _check and (hdr[0] != MAGIC or hdr[1] != LAYOUT_VERSION):
            raise RingLayoutError("buffer does not hold a schooner ring (bad magic or version)")
        self.nslots = int(hdr[2])
        self.slot_nbytes = int(hdr[3])
        hdr.release()
        if self.nslots < 1 or len(self._buf) < ring_nbytes(self.nslots, self.slot_nbytes):
            raise RingLayoutError(
                f"ring header says {self.nslots} slots of {self.slot_nbytes} bytes, "
                f"which does not fit in a buffer of {len(self._buf)} bytes"
            )
        self._u64 = self._buf[: _slots_offset(self.nslots)].cast("Q")
        self._stride = _align(self.slot_nbytes)
        self._base = _slots_offset(self.nslots)

    @classmethod
    def create(cls, buf, nslots: int, slot_nbytes: int) -> Ring:
        """Format `buf` as an empty ring. Only the creator (the supervisor) calls this."""
        if nslots < 1 or slot_nbytes < 1:
            raise ValueError("a ring needs at least one slot of at least one byte")
        mv = memoryview(buf).cast("B")
        need = ring_nbytes(nslots, slot_nbytes)
        if len(mv) < need:
            raise ValueError(f"ring of {nslots}x{slot_nbytes} needs {need} bytes, got {len(mv)}")
        hdr = mv[: _slots_offset(nslots)].cast("Q")
        hdr[_HEAD] = 0
        hdr[_TAIL] = 0
        hdr[_SLEEPING] = 1  # until the consumer says it is awake, every flush posts its doorbell
        for i in range(nslots):
            hdr[_LENS + i] = 0
        hdr[1] = LAYOUT_VERSION
        hdr[2] = nslots
        hdr[3] = slot_nbytes
        hdr[0] = MAGIC  # last: an attacher never sees a half-written header as valid
        hdr.release()
        mv.release()
        return cls(buf)

    def close(self) -> None:
        """Drop every view into the buffer so the mapping can be closed."""
        if self._u64 is not None:
            self._u64.release()
            self._u64 = None
        self._buf.release()

    # -- both sides -------------------------------------------------------------------------

    @property
    def head(self) -> int:
        return self._u64[_HEAD]

    @property
    def tail(self) -> int:
        return self._u64[_TAIL]

    def __len__(self) -> int:
        """Messages published and not yet released."""
        u = self._u64
        return u[_HEAD] - u[_TAIL]

    def _slot(self, seq: int, nbytes: int) -> memoryview:
        off = self._base + (seq % self.nslots) * self._stride
        return self._buf[off : off + nbytes]

    def sleeping(self) -> bool:
        """Producer side: whether the consumer may be blocked (load after a full fence)."""
        return self._u64[_SLEEPING] != 0

    def set_sleeping(self, flag: bool) -> None:
        """Consumer side: say that it may block (then fence and re-check) or that it is awake."""
        self._u64[_SLEEPING] = 1 if flag else 0

    # -- producer side ----------------------------------------------------------------------

    def free(self) -> int:
        """Slots the producer may fill now."""
        u = self._u64
        return self.nslots - (u[_HEAD] - u[_TAIL])

    def reserve(self) -> memoryview:
        """Writable view of the next slot (full capacity). Raises RingFullError when full.

        Nothing is visible to the consumer until `publish`.
        """
        u = self._u64
        head = u[_HEAD]
        if head - u[_TAIL] >= self.nslots:
            raise RingFullError(f"all {self.nslots} slots are in use")
        return self._slot(head, self.slot_nbytes)

    def publish(self, nbytes: int) -> int:
        """Publish the reserved slot holding `nbytes` of payload; returns its sequence number."""
        if not 0 <= nbytes <= self.slot_nbytes:
            raise ValueError(f"payload of {nbytes} bytes exceeds slot capacity {self.slot_nbytes}")
        u = self._u64
        head = u[_HEAD]
        if head - u[_TAIL] >= self.nslots:
            raise RingFullError(f"all {self.nslots} slots are in use")
        u[_LENS + head % self.nslots] = nbytes
        u[_HEAD] = head + 1  # the publish: payload and length were stored first
        return head

    def write(self, payload) -> int:
        """Copy `payload` into the next slot and publish it (convenience for small messages)."""
        n = len(payload)
        if n > self.slot_nbytes:
            raise ValueError(f"payload of {n} bytes exceeds slot capacity {self.slot_nbytes}")
        slot = self.reserve()
        slot[:n] = payload
        slot.release()
        return self.publish(n)

    # -- consumer side ----------------------------------------------------------------------

    def pending(self) -> int:
        """Messages the consumer may read now (loads `head` once)."""
        u = self._u64
        return u[_HEAD] - u[_TAIL]

    def peek(self, i: int = 0) -> memoryview:
        """View of the i-th unreleased message (0 = oldest). Zero-copy.

        The consumer owns the slot until it releases it, so the view is writable (a model may
        compute in place); it is valid until that message is released.
        """
        u = self._u64
        tail = u[_TAIL]
        if not 0 <= i < u[_HEAD] - tail:
            raise IndexError(f"message {i} is not pending ({u[_HEAD] - tail} pending)")
        seq = tail + i
        return self._slot(seq, u[_LENS + seq % self.nslots])

    def release(self, count: int = 1) -> bool:
        """Release the `count` oldest messages. Returns True when the ring was full before,
        i.e. when the producer may be waiting for space and should be woken."""
        u = self._u64
        tail = u[_TAIL]
        used = u[_HEAD] - tail
        if not 0 <= count <= used:
            raise ValueError(f"cannot release {count} of {used} pending messages")
        u[_TAIL] = tail + count
        return used == self.nslots
