"""The GPU side of a model process's rings: batches onto the device, scores back into a slot.

Owns the ingest state machine -- which device buffer a batch is copied into, which input slot
it came from, when that slot may be released, and when an output slot may be published -- and
the device backends that carry it out: `CupyBackend` (a real GPU) and `NumpyBackend` (host
arrays standing in for device buffers, with copies that run only when the test says so; the
CPU tests drive every ordering rule through it).

Ordering rules (each is tested in ``tests/unit/test_ingest.py``):

1. Every ring mapping is page-locked once, at start-up or at a `Rebind`, as one registration
   of its page-aligned base and page-rounded length (`DeviceIngest.attach`), and unregistered
   after every device operation has completed and before the mapping is closed
   (`DeviceIngest.detach`). Never per slot, never twice.
2. Batch ``i`` is copied into device buffer ``i % nbuffers`` with one asynchronous copy of its
   tensor column's values buffer (no staging copy), ordered after the previous user of that
   buffer finished (its `mark` event). At most ``nbuffers`` batches are staged at once, so
   batch ``i + 1`` is copied while batch ``i`` computes.
3. An input slot is released only after its copy event has completed, oldest first (the ring
   releases in order). A producer may rewrite the slot the moment it is released.
4. The model's work on a buffer is ordered after that buffer's copy event (a stream wait on
   the GPU; running the copy first on the host in `NumpyBackend`).
5. A device result is copied with one asynchronous copy straight into the (registered) output
   slot, after the Arrow framing was written, and `write_output` returns -- so the caller
   publishes the slot -- only after that copy's event has completed.
6. A `Rebind` waits for every device operation, forgets what was staged (those queries were
   answered by the scheduler's successor already), unregisters the old mappings and registers
   the new ones.

Only the model process uses this module; cupy and torch are imported lazily by `CupyBackend`,
so the module imports on machines without CUDA.
"""

from __future__ import annotations

import contextlib
import importlib
import mmap
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from schooner.ipc.arrow_lite import FrameCodec

PAGE_NBYTES = mmap.PAGESIZE


class Event(Protocol):
    """A point in a device queue (cupy.cuda.Event has exactly these)."""

    @property
    def done(self) -> bool: ...

    def synchronize(self) -> None: ...


class RingReaderLike(Protocol):
    def pending(self) -> int: ...
    def read(self, i: int = 0) -> memoryview: ...
    def release(self, count: int = 1) -> None: ...


def registration(mapping) -> tuple[int, int]:
    """(base address, length) to register for a mapping: its page-aligned start and its length
    rounded up to whole pages (the kernel maps whole pages)."""
    base = np.frombuffer(mapping, np.uint8).ctypes.data
    if base % PAGE_NBYTES:
        raise ValueError(f"mapping at {base:#x} is not page-aligned")
    return base, -(-len(mapping) // PAGE_NBYTES) * PAGE_NBYTES


def output_dtype(dtype: np.dtype) -> np.dtype:
    """The wire dtype of a numeric result (what `ScoresCodec.normalize` does on the host)."""
    kind = dtype.kind
    if kind == "f":
        return np.dtype(np.float32 if dtype.itemsize <= 4 else np.float64)
    if kind in "iu":
        return np.dtype(np.int64)
    if kind == "b":
        return np.dtype(np.uint8)
    raise ValueError(f"predict returned {dtype} values on the device; expected numbers or booleans")


def check_rows(shape: tuple[int, ...], n: int) -> None:
    if len(shape) == 0 or shape[0] != n:
        raise ValueError(f"predict returned shape {tuple(shape)}; expected ({n},) or ({n}, k) for a batch of {n}")


class DeviceBackend(ABC):
    """What `DeviceIngest` needs from a device. Buffers hold ``max_elems`` input elements."""

    nbuffers: int = 2

    @abstractmethod
    def register(self, mapping) -> None:
        """Page-lock a whole mapping (rule 1)."""

    @abstractmethod
    def unregister(self, mapping) -> None:
        """Undo `register`; every device operation on it has completed."""

    @abstractmethod
    def h2d(self, k: int, src: np.ndarray, after: Event | None) -> Event:
        """Start copying `src` (a contiguous view into a registered slot) into buffer `k`,
        after `after`; return the copy's event. `src` may be rewritten once it is done."""

    @abstractmethod
    def device_batch(self, k: int, n: int, shape: tuple[int, ...], copied: Event) -> Any:
        """The model's input: the first ``n`` rows of buffer `k` shaped ``(n, *shape)``,
        with the model's work ordered after `copied`."""

    @abstractmethod
    def computing(self) -> contextlib.AbstractContextManager:
        """Context in which the model runs (its work goes to the compute queue)."""

    @abstractmethod
    def is_device_array(self, y: Any) -> bool: ...

    @abstractmethod
    def prepare_output(self, y: Any, n: int) -> Any:
        """`y` in its wire dtype, contiguous, 1-D or 2-D; ValueError if it has not n rows."""

    @abstractmethod
    def d2h(self, y: Any, dst: np.ndarray) -> Event:
        """Start copying prepared `y` into host `dst` after the model's work; its event."""

    @abstractmethod
    def mark(self, k: int) -> Event:
        """An event after all work queued so far: buffer `k` is free once it is done."""

    @abstractmethod
    def synchronize(self) -> None:
        """Wait for every queued operation."""


@dataclass(slots=True)
class Staged:
    """One batch whose copy into device buffer `k` has been started."""

    k: int
    n: int
    copied: Event
    released: bool = False


class _OutputFraming:
    """The Arrow framing of a numeric result -- the bytes before its data -- cached per
    (dtype, width, n). The same stream `schooner.ipc.frames.ScoresCodec.write` produces (a test
    compares them byte for byte), built here from pyarrow and arrow_lite alone so that this
    module needs no orjson (absent on the GPU machine's image)."""

    def __init__(self) -> None:
        self._heads: dict[tuple[str, int], tuple[bytes, FrameCodec]] = {}
        self._cache: dict[tuple[str, int, int], tuple[bytes, int, int]] = {}

    def get(self, dtype: np.dtype, shape: tuple[int, ...]) -> tuple[bytes, int, int]:
        """(prefix, data offset, total nbytes) of a stream holding an array of this shape."""
        n, width = shape[0], (shape[1] if len(shape) == 2 else 0)
        key = (dtype.str, width, n)
        entry = self._cache.get(key)
        if entry is None:
            head, codec = self._heads.get(key[:2]) or self._head(dtype, width)
            zeros = np.zeros(shape, dtype)
            scratch = bytearray(len(head) + zeros.nbytes + 4096)
            scratch[: len(head)] = head
            total = len(head) + codec.write(memoryview(scratch)[len(head) :], n, [zeros])
            data_off = total - ((zeros.nbytes + 7) & ~7)  # the single data buffer ends the body
            entry = (bytes(scratch[:data_off]), data_off, total)
            if len(self._cache) >= 512:
                self._cache.clear()
            self._cache[key] = entry
        return entry

    def _head(self, dtype: np.dtype, width: int) -> tuple[bytes, FrameCodec]:
        t = pa.from_numpy_dtype(dtype)
        schema = pa.schema([("scores", pa.list_(t, width) if width else t)])
        entry = (schema.serialize().to_pybytes(), FrameCodec(schema))
        self._heads[(dtype.str, width)] = entry
        return entry


class DeviceIngest:
    """The ingest state machine over one input ring, one output ring and a `DeviceBackend`.

    Use, per batch: `stage` (start copies of pending batches into free buffers), `take` (the
    oldest staged batch as a device array), run the model inside ``backend.computing()``,
    `release_copied` (free input slots whose copies are done), `prepare_output`, `write_output`
    inside the output ring's encoder, `finish`.
    """

    def __init__(self, backend: DeviceBackend, input_codec: FrameCodec, shape: tuple[int, ...]) -> None:
        self.backend = backend
        self.codec = input_codec
        self.shape = shape
        self.staged: deque[Staged] = deque()
        self.free_at: list[Event | None] = [None] * backend.nbuffers
        self.next_k = 0
        self.mappings: list = []
        self._framing = _OutputFraming()

    # -- mappings (rules 1 and 6) ---------------------------------------------------------------

    def attach(self, mappings: list) -> None:
        """Register each mapping once; on failure, unregister those already registered."""
        done = []
        try:
            for m in mappings:
                self.backend.register(m)
                done.append(m)
        except BaseException:
            for m in done:
                self.backend.unregister(m)
            raise
        self.mappings = list(mappings)

    def detach(self) -> None:
        """Wait for the device, forget staged batches, unregister every mapping. The caller
        closes the mappings after this returns, never before."""
        self.backend.synchronize()
        self.staged.clear()
        self.free_at = [None] * self.backend.nbuffers
        self.next_k = 0
        mappings, self.mappings = self.mappings, []
        for m in mappings:
            self.backend.unregister(m)

    def rebind(self, new_mappings: list, close_old: Callable[[], None]) -> None:
        """Move to a new scheduler's rings: detach, let the caller close the old rings, attach."""
        self.detach()
        close_old()
        self.attach(new_mappings)

    # -- batches (rules 2-4) --------------------------------------------------------------------

    def stage(self, reader: RingReaderLike) -> int:
        """Start the copy of every pending, not yet staged batch while a buffer is free.
        Returns how many were staged."""
        started = 0
        while len(self.staged) < self.backend.nbuffers:
            i = sum(1 for s in self.staged if not s.released)  # released ones left the ring
            if i >= reader.pending():
                break
            n, (col,) = self.codec.read(reader.read(i))
            k = self.next_k
            self.next_k = (k + 1) % self.backend.nbuffers
            src = col.reshape(-1)  # the values buffer: one contiguous run of n * width elements
            self.staged.append(Staged(k, n, self.backend.h2d(k, src, self.free_at[k])))
            started += 1
        return started

    def take(self) -> tuple[Staged, Any]:
        """The oldest staged batch and the model's input for it."""
        s = self.staged[0]
        return s, self.backend.device_batch(s.k, s.n, self.shape, s.copied)

    def release_copied(self, reader: RingReaderLike, upto: Staged | None = None) -> int:
        """Release, oldest first, the input slots whose copies have completed; waits for the
        copies up to and including `upto`. Returns how many were released."""
        count = 0
        must_wait = upto is not None
        for s in self.staged:
            if s.released:
                if s is upto:
                    must_wait = False
                continue
            if not s.copied.done:
                if not must_wait:
                    break
                s.copied.synchronize()
            s.released = True
            count += 1
            if s is upto:
                must_wait = False
        if count:
            reader.release(count)
        return count

    def finish(self, s: Staged) -> None:
        """Batch `s` (the oldest) is answered: its buffer is free once queued work is done."""
        if not self.staged or self.staged[0] is not s or not s.released:
            raise RuntimeError("finish: not the oldest staged batch, or its input slot is not released")
        self.staged.popleft()
        self.free_at[s.k] = self.backend.mark(s.k)

    # -- outputs (rule 5) -----------------------------------------------------------------------

    def is_device_array(self, y: Any) -> bool:
        return self.backend.is_device_array(y)

    def prepare_output(self, y: Any, n: int) -> Any:
        """A device result in its wire dtype; ValueError (the batch's error) if it has not n rows."""
        return self.backend.prepare_output(y, n)

    def write_output(self, slot: memoryview, y: Any) -> int:
        """Frame a prepared device result in `slot`, copy its data in with one device-to-host
        copy and wait for that copy; returns the bytes to publish. OverflowError when it does
        not fit (nothing was copied then)."""
        prefix, data_off, total = self._framing.get(np.dtype(y.dtype), tuple(y.shape))
        if total > len(slot):
            raise OverflowError(f"scores do not fit a slot of {len(slot)} bytes")
        slot[: len(prefix)] = prefix
        dst = np.frombuffer(slot, np.uint8, int(y.nbytes), data_off)
        ev = self.backend.d2h(y, dst)
        ev.synchronize()
        return total


# -- a host stand-in for a device, with copies that run when the test says ------------------


class FakeEvent:
    """Done once its queue ran the operation it was recorded after."""

    __slots__ = ("queue", "done")

    def __init__(self, queue: FakeQueue) -> None:
        self.queue = queue
        self.done = False

    def synchronize(self) -> None:
        self.queue.run_until(self)


class FakeQueue:
    """One in-order device queue: operations run when `run` is called or an event is awaited."""

    def __init__(self) -> None:
        self.ops: deque[tuple[Callable[[], None] | None, FakeEvent]] = deque()
        self.log: list[str] = []

    def push(self, op: Callable[[], None] | None, what: str) -> FakeEvent:
        ev = FakeEvent(self)
        self.ops.append((op, ev))
        self.log.append(f"queue {what}")
        return ev

    def run(self, count: int | None = None) -> int:
        """Run the `count` oldest operations (all when None); returns how many ran."""
        ran = 0
        while self.ops and (count is None or ran < count):
            op, ev = self.ops.popleft()
            if op is not None:
                op()
            ev.done = True
            ran += 1
        return ran

    def run_until(self, ev: FakeEvent) -> None:
        while not ev.done:
            if not self.ops:
                raise RuntimeError("waiting on an event that was never queued")
            self.run(1)


class NumpyBackend(DeviceBackend):
    """Host numpy arrays as device buffers. Copies are queued and read their source only when
    they run, as a DMA does; with ``autorun`` every operation runs at once."""

    def __init__(self, dtype: np.dtype, max_elems: int, nbuffers: int = 2, autorun: bool = False) -> None:
        self.nbuffers = nbuffers
        self.buffers = [np.full(max_elems, -1, dtype) for _ in range(nbuffers)]
        self.queue = FakeQueue()
        self.autorun = autorun
        self.registered: dict[int, int] = {}  # base -> length
        self.log = self.queue.log

    def _push(self, op, what: str) -> FakeEvent:
        ev = self.queue.push(op, what)
        if self.autorun:
            self.queue.run()
        return ev

    def register(self, mapping) -> None:
        base, length = registration(mapping)
        if base in self.registered:
            raise RuntimeError("cudaErrorHostMemoryAlreadyRegistered")
        self.registered[base] = length
        self.log.append(f"register {length}")

    def unregister(self, mapping) -> None:
        base, _ = registration(mapping)
        if self.queue.ops:
            raise RuntimeError("unregister while device operations are queued")
        if self.registered.pop(base, None) is None:
            raise RuntimeError("cudaErrorHostMemoryNotRegistered")
        self.log.append("unregister")

    def h2d(self, k: int, src: np.ndarray, after: Event | None) -> Event:
        buf = self.buffers[k]

        def copy() -> None:
            buf.view(np.uint8)[: src.nbytes] = src.view(np.uint8)  # reads the slot now, not earlier

        return self._push(copy, f"h2d {k}")

    def device_batch(self, k: int, n: int, shape: tuple[int, ...], copied: Event) -> np.ndarray:
        copied.synchronize()  # host compute: the stream wait becomes running the copy first
        width = int(np.prod(shape)) if shape else 1
        return self.buffers[k][: n * width].reshape((n, *shape))

    def computing(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def is_device_array(self, y: Any) -> bool:
        return isinstance(y, np.ndarray) and y.dtype.kind in "fiub"

    def prepare_output(self, y: np.ndarray, n: int) -> np.ndarray:
        check_rows(y.shape, n)
        y = np.ascontiguousarray(y, dtype=output_dtype(y.dtype))
        return y.reshape(n, -1) if y.ndim > 2 else y

    def d2h(self, y: np.ndarray, dst: np.ndarray) -> Event:
        src = y.copy()  # what the device computed, fixed at enqueue time

        def copy() -> None:
            dst[:] = src.view(np.uint8).reshape(-1)

        return self._push(copy, "d2h")

    def mark(self, k: int) -> Event:
        return self._push(None, f"mark {k}")

    def synchronize(self) -> None:
        self.queue.run()


# -- CuPy ------------------------------------------------------------------------------------


class CupyBackend(DeviceBackend):
    """Device 0 of this process (its only visible GPU), through CuPy; torch via DLPack.

    Two streams: copies in on `copy_stream` (the copy engine), the model and copies out on
    `compute`. torch models run on the same compute stream (`torch.cuda.ExternalStream`), and
    receive a torch view of the preallocated buffers made once through DLPack (no copy).
    """

    def __init__(self, dtype: np.dtype, max_elems: int, torch_input: bool, nbuffers: int = 2) -> None:
        cp = importlib.import_module("cupy")  # ImportError: the worker reports a Fatal
        self.cp = cp
        self.rt = cp.cuda.runtime
        if self.rt.getDeviceCount() < 1:
            raise RuntimeError("CUDA sees no GPU in this process")
        cp.cuda.Device(0).use()
        self.nbuffers = nbuffers
        self.copy_stream = cp.cuda.Stream(non_blocking=True)
        self.compute = cp.cuda.Stream(non_blocking=True)
        self.buffers = [cp.empty(max(1, max_elems), dtype=np.dtype(dtype)) for _ in range(nbuffers)]
        self.ev_in = [cp.cuda.Event(block=True, disable_timing=True) for _ in range(nbuffers)]
        self.ev_free = [cp.cuda.Event(block=True, disable_timing=True) for _ in range(nbuffers)]
        self.ev_out = cp.cuda.Event(block=True, disable_timing=True)
        self.torch = None
        if torch_input:
            torch = importlib.import_module("torch")
            self.torch = torch
            self.torch_stream = torch.cuda.ExternalStream(self.compute.ptr)
            self.torch_buffers = [torch.from_dlpack(b) for b in self.buffers]  # once: same memory
        self.registered: dict[int, int] = {}

    def register(self, mapping) -> None:
        base, length = registration(mapping)
        self.rt.hostRegister(base, length, 0)  # 0: portable and mapped on UVA systems
        self.registered[base] = length

    def unregister(self, mapping) -> None:
        base, _ = registration(mapping)
        if self.registered.pop(base, None) is not None:
            self.rt.hostUnregister(base)

    def h2d(self, k: int, src: np.ndarray, after: Event | None) -> Event:
        if after is not None:
            self.copy_stream.wait_event(after)
        if src.nbytes:
            self.rt.memcpyAsync(self.buffers[k].data.ptr, src.ctypes.data, src.nbytes,
                                self.rt.memcpyHostToDevice, self.copy_stream.ptr)
        ev = self.ev_in[k]
        ev.record(self.copy_stream)
        return ev

    def device_batch(self, k: int, n: int, shape: tuple[int, ...], copied: Event) -> Any:
        self.compute.wait_event(copied)
        width = int(np.prod(shape)) if shape else 1
        if self.torch is not None:
            return self.torch_buffers[k][: n * width].view(n, *shape)
        return self.buffers[k][: n * width].reshape((n, *shape))

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        with self.compute:
            if self.torch is None:
                yield
            else:
                with self.torch.cuda.stream(self.torch_stream):
                    yield

    def is_device_array(self, y: Any) -> bool:
        if isinstance(y, self.cp.ndarray):
            return True
        return self.torch is not None and isinstance(y, self.torch.Tensor) and y.is_cuda

    def prepare_output(self, y: Any, n: int) -> Any:
        with self.compute:
            if not isinstance(y, self.cp.ndarray):
                y = self.cp.from_dlpack(y.detach())  # torch on the same stream: no copy, no sync
            check_rows(tuple(y.shape), n)
            y = self.cp.ascontiguousarray(y.astype(output_dtype(np.dtype(y.dtype)), copy=False))
            return y.reshape(n, -1) if y.ndim > 2 else y

    def d2h(self, y: Any, dst: np.ndarray) -> Event:
        if y.nbytes:
            self.rt.memcpyAsync(dst.ctypes.data, y.data.ptr, y.nbytes,
                                self.rt.memcpyDeviceToHost, self.compute.ptr)
        self.ev_out.record(self.compute)
        return self.ev_out

    def mark(self, k: int) -> Event:
        ev = self.ev_free[k]
        ev.record(self.compute)
        return ev

    def synchronize(self) -> None:
        self.copy_stream.synchronize()
        self.compute.synchronize()
