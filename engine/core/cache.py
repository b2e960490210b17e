"""The prediction cache of the model abstraction layer, with single-flight misses (pure).

Owns: the cached model outputs (one answer row each, `bytes`: JSON text or a typed row of
`schooner.ipc.rows`, whichever the batch that computed it answered) keyed by `CacheKey`,
their byte total (a typed row is the values plus a 4-byte head: often fewer bytes than JSON),
the hit/miss/eviction counters, and the set of computations in flight ("pending" keys) with
the waiters that each one will answer. No clock, no I/O, no threads: the scheduler process is
the only caller, from its single event loop.

Keys. `CacheKey(model, version, digest)`: the model index, the model version's name, and
`input_digest(data, dtype, shape)` of the query input. The version is in the key, so setting
another version current (or rolling back) simply misses; stale entries age out by LRU.

Cost and capacity. An entry costs `len(value) + len(key.digest) + ENTRY_OVERHEAD_NBYTES`. The
overhead stands for the Python objects around the payload (key tuple, OrderedDict node, dict
slot, two `bytes` headers), so that a flood of tiny outputs is bounded too. A stored value is
a copy of exactly its length: the caller's `bytes` may sit in a larger allocation (orjson
allocates 4 KiB for any output), which would make the real footprint 20x the accounted one.
Invariants:

* `nbytes` is the sum of the costs of the stored entries and never exceeds `capacity_nbytes`
  after any public call returns.
* An entry whose cost exceeds the capacity is never stored; `put` of such a value also drops any
  older value under that key, so `get` never returns anything but the value last put (or None).

Eviction is LRU through `collections.OrderedDict`: `move_to_end` on a hit and `popitem(last=
False)` on eviction are O(1) and run in C. CLOCK's advantage -- a hit only sets a bit instead
of relinking a list node -- pays off under lock contention or in C, neither of which applies to
one Python thread; a CLOCK hand would be an interpreted loop on every eviction, and LRU is exact,
so tests can predict what is evicted.

Single flight. Concurrent misses on one key share one model computation:

* `lookup_or_join(key, waiter)` on a hit returns `(value, False)`. On a miss with nothing
  pending it makes `waiter` the leader and returns `(None, True)`: the caller sends the query.
  On a miss while the key is pending it appends `waiter` and returns `(None, False)`: the caller
  must not send it.
* Contract: every `(None, True)` obliges the caller to call `complete(key, value)` or
  `fail(key)` once for that key -- also when the leader's query is never sent (it expired in its
  queue): then call `fail` (or send it anyway on behalf of the waiters left), or the others wait
  until their own deadlines.
* `complete`/`fail` return every waiter still registered, leader included, each exactly once,
  in join order, and clear the pending key. On a key that is not pending they return `[]`
  (`complete` still stores the value: a model's fresh output is always a valid entry).
* `abandon(key, waiter)` removes a waiter answered otherwise (its deadline passed). The key
  stays pending even when the leader or every waiter is gone: the computation may already be at
  a model, and its result still fills the cache and answers whoever joins meanwhile. Waiters are
  opaque and compared by identity; abandoning one that is not registered is a no-op.

Counters: `hits` and `misses` count `get` and `lookup_or_join` calls; a joined lookup counts as
a miss and also as `joined`, so `misses - joined` is the number of lookups that led to a model
computation. `evictions` counts entries removed to make room (not replacements).
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from typing import Any, NamedTuple

DEFAULT_CAPACITY_NBYTES = 32 * 1024 * 1024
# Measured with tracemalloc on CPython 3.11 / x86-64: key tuple + OrderedDict node + dict slot
# ~147 bytes, plus the headers of the value and digest `bytes` objects (33 each) ~213; rounded up.
ENTRY_OVERHEAD_NBYTES = 216
DIGEST_NBYTES = 16

_I64 = struct.Struct("<q")


def input_digest(data: bytes | memoryview, dtype: str, shape: tuple[int, ...]) -> bytes:
    """A 16-byte BLAKE2b digest of one query input: its dtype, its shape, then its bytes.

    dtype and shape are hashed in front of the data, length-prefixed (dtype length, dtype as
    UTF-8, number of dimensions, each dimension as a little-endian int64), so the header is
    prefix-free: equal bytes of another dtype or shape (float32[4] vs int32[4] vs float32[2, 2])
    give another digest. `data` must be C-contiguous (a ring slot or a numpy array's buffer);
    hashlib refuses other buffers. 128 bits make an accidental collision negligible; the
    cache is not meant to resist inputs crafted to collide with another client's.
    """
    h = hashlib.blake2b(digest_size=DIGEST_NBYTES)
    dt = dtype.encode()
    h.update(_I64.pack(len(dt)))
    h.update(dt)
    h.update(_I64.pack(len(shape)))
    for dim in shape:
        h.update(_I64.pack(dim))
    h.update(data)
    return h.digest()


def digester(dtype: str, shape: tuple[int, ...]):
    """`input_digest` with dtype and shape bound: hashes the header once, copies it per call."""
    h = hashlib.blake2b(digest_size=DIGEST_NBYTES)
    dt = dtype.encode()
    h.update(_I64.pack(len(dt)))
    h.update(dt)
    h.update(_I64.pack(len(shape)))
    for dim in shape:
        h.update(_I64.pack(dim))

    def digest(data) -> bytes:
        c = h.copy()
        c.update(data)
        return c.digest()

    return digest


class CacheKey(NamedTuple):
    """What a cached output is keyed by.

    A NamedTuple rather than a frozen dataclass: the key is hashed on every lookup, and a
    tuple's hash and equality run in C.
    """

    model: int
    version: str
    digest: bytes


def entry_nbytes(key: CacheKey, value: bytes) -> int:
    """What one entry costs against `capacity_nbytes`."""
    return len(value) + len(key.digest) + ENTRY_OVERHEAD_NBYTES


class PredictionCache:
    """A byte-bounded LRU of model outputs with single-flight misses. See the module docstring."""

    def __init__(self, capacity_nbytes: int = DEFAULT_CAPACITY_NBYTES) -> None:
        if capacity_nbytes < 0:
            raise ValueError(f"capacity_nbytes must be >= 0, not {capacity_nbytes}")
        self.capacity_nbytes = capacity_nbytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.joined = 0
        self.evictions = 0
        self._entries: OrderedDict[CacheKey, bytes] = OrderedDict()
        # key -> waiters of its pending computation, in join order (the leader first, unless
        # abandoned). A key with no waiters left stays pending until complete or fail.
        self._pending: dict[CacheKey, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether `key` is stored; does not count or touch recency."""
        return key in self._entries

    # -- plain cache --------------------------------------------------------------------------

    def get(self, key: CacheKey) -> bytes | None:
        """The stored value, marked most recently used, or None. Counts a hit or a miss."""
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: CacheKey, value: bytes) -> None:
        """Store `value` as the most recently used entry, evicting LRU entries to fit.

        A value that cannot fit even in an empty cache is not stored, and any older value under
        `key` is dropped with it (so `get` never answers a value older than the last put).
        """
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= entry_nbytes(key, old)
        cost = entry_nbytes(key, value)
        if cost > self.capacity_nbytes:
            return
        # a copy of exactly its size: a serializer's output may sit in a larger allocation
        # (orjson's bytes keep a 4 KiB buffer), which the cost above would not account for
        value = bytes(memoryview(value))
        entries = self._entries
        while self.nbytes + cost > self.capacity_nbytes:
            k, v = entries.popitem(last=False)
            self.nbytes -= entry_nbytes(k, v)
            self.evictions += 1
        entries[key] = value
        self.nbytes += cost

    # -- single flight ------------------------------------------------------------------------

    def lookup_or_join(self, key: CacheKey, waiter: Any) -> tuple[bytes | None, bool]:
        """`(value, False)` on a hit; `(None, True)`: send it; `(None, False)`: joined, don't."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return value, False
        self.misses += 1
        waiters = self._pending.get(key)
        if waiters is None:
            self._pending[key] = [waiter]
            return None, True
        waiters.append(waiter)
        self.joined += 1
        return None, False

    def complete(self, key: CacheKey, value: bytes) -> list[Any]:
        """The computation for `key` produced `value`: store it; return the waiters to answer."""
        self.put(key, value)
        return self._pending.pop(key, [])

    def fail(self, key: CacheKey) -> list[Any]:
        """The computation for `key` failed: cache nothing; return the waiters to answer."""
        return self._pending.pop(key, [])

    def abandon(self, key: CacheKey, waiter: Any) -> None:
        """Forget `waiter` (answered otherwise); the key stays pending. Idempotent."""
        waiters = self._pending.get(key)
        if waiters is None:
            return
        for i, w in enumerate(waiters):
            if w is waiter:
                del waiters[i]
                return

    def is_pending(self, key: CacheKey) -> bool:
        """Whether a computation for `key` is registered and not yet completed or failed."""
        return key in self._pending

    def waiters(self, key: CacheKey) -> tuple[Any, ...]:
        """The waiters registered for a pending `key` (empty if none), in join order."""
        return tuple(self._pending.get(key, ()))

    @property
    def npending(self) -> int:
        """Number of pending keys (computations in flight)."""
        return len(self._pending)
