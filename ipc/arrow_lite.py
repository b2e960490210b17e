"""Arrow IPC record-batch messages written and read with `struct` and numpy alone.

Why: on this kind of machine a process woken after an idle gap runs with cold caches, and a
pyarrow call costs 5-10x its warm price (building and serialising one small record batch with
pyarrow: ~25 us warm, ~140 us after 1 ms idle, ~400 us after 10 ms). The hot rings carry one
small batch per event-loop turn, so per-message overhead *is* the latency at low load. This
module produces the same bytes on the wire -- a standard encapsulated Arrow IPC message
(continuation marker, int32 metadata length, a `Message` flatbuffer holding a `RecordBatch`
header, then the body with 8-byte aligned buffers) that pyarrow reads with
`pyarrow.ipc.read_record_batch(buf, schema)` -- by packing the flatbuffer with `struct`, and
reads such messages (its own or pyarrow's) into numpy views without copying.

Supported column types: fixed-width primitives (ints, uints, floats), bool, binary/utf8 (int32
offsets) and fixed-size lists of fixed-width primitives. No nulls: every column is written with
an empty validity buffer, and a message whose column has nulls is refused.

Flatbuffer layout written (offsets from the flatbuffer start, which is 8-aligned in the slot)::

    0   root uoffset -> Message table at 24
    8   Message vtable: fields version(0) header_type(1) header(2) bodyLength(3)
    24  Message table: soffset, header uoffset(+4), bodyLength i64(+8), version i16(+16), type u8(+18)
    48  RecordBatch vtable: fields length(0) nodes(1) buffers(2)
    64  RecordBatch table: soffset, nodes uoffset(+4), length i64(+8), buffers uoffset(+16)
    92  nodes vector: u32 count, then {length i64, null_count i64} per node (8-aligned)
    ..  buffers vector: u32 count, then {offset i64, length i64} per buffer (8-aligned)

All scalars sit at offsets aligned to their size, so a flatbuffers verifier with alignment
checks (Arrow's) accepts it; `tests/unit/test_arrow_lite.py` checks both directions against
pyarrow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

CONTINUATION = 0xFFFFFFFF
METADATA_V5 = 4
HEADER_RECORD_BATCH = 3
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
_I64 = struct.Struct("<q")
_PREFIX = struct.Struct("<IiI4x" "HHHHHH4x" "iIqhB5x" "HHHHH6x" "iIqI8x")  # bytes 0..92 of the message, less 8


class FrameError(ValueError):
    """Bytes that are not a record-batch message of the expected schema."""


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _bytes(x) -> memoryview:
    """A flat byte view of a numpy array or bytes-like object, without copying."""
    if isinstance(x, np.ndarray):
        return _flat(np.ascontiguousarray(x))
    mv = memoryview(x)
    return mv.cast("B") if mv.ndim != 1 or mv.format != "B" else mv


JOIN_NBYTES = 65536  # binary chunks summing to at most this are joined before the copy


def _chunks(blob: list) -> list[memoryview]:
    """Byte views of a binary column's chunks: one joined view when they are small (a join
    is a C loop; a view and a slice assignment per chunk cost ~0.5 us each). "Small" sums
    `len()`, which is bytes for the frontend's chunks (bytes and byte views); for a numpy
    array it is its first dimension, so the bound is then loose (a larger join, same bytes)."""
    if len(blob) > 1:
        try:
            if sum(map(len, blob)) <= JOIN_NBYTES:
                return [memoryview(b"".join(blob))]
        except (TypeError, BufferError, ValueError):
            pass  # not all plain contiguous buffers: view each
    return [_bytes(c) for c in blob]


@dataclass(frozen=True, slots=True)
class _Col:
    kind: str  # "prim" | "bool" | "binary" | "list"
    dtype: np.dtype | None
    width: int = 1  # list size for "list"
    code: str = ""  # struct code of a "prim" column's values ("" when struct cannot pack them)


def _col_of(t: pa.DataType) -> _Col:
    if pa.types.is_boolean(t):
        return _Col("bool", None)
    if pa.types.is_binary(t) or pa.types.is_string(t):
        return _Col("binary", None)
    if pa.types.is_fixed_size_list(t):
        inner = t.value_type
        if not (pa.types.is_integer(inner) or pa.types.is_floating(inner)):
            raise TypeError(f"fixed-size lists of {inner} are not supported")
        return _Col("list", np.dtype(inner.to_pandas_dtype()).newbyteorder("<"), t.list_size)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        dtype = np.dtype(t.to_pandas_dtype()).newbyteorder("<")
        return _Col("prim", dtype, 1, _STRUCT_CODE.get(dtype.str[1:], ""))
    raise TypeError(f"column type {t} is not supported by arrow_lite")


# numpy dtype (less its byte order) -> struct code of the same little-endian bytes; float16
# has one too ("e") but struct and numpy may round halves differently: numpy only
_STRUCT_CODE = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q", "u8": "Q",
                "f4": "f", "f8": "d"}  # fmt: skip
_STRUCTS: dict[str, struct.Struct] = {}


def _struct(fmt: str) -> struct.Struct:
    s = _STRUCTS.get(fmt)
    if s is None:
        if len(_STRUCTS) > 4096:  # one per (code, row count) seen: bounded all the same
            _STRUCTS.clear()
        s = _STRUCTS[fmt] = struct.Struct(fmt)
    return s


def _flat(arr: np.ndarray) -> memoryview:
    """Byte view of a C-contiguous array (any shape)."""
    try:
        return memoryview(arr).cast("B")
    except (TypeError, ValueError):  # a format memoryview cannot cast: through numpy
        return memoryview(arr.reshape(-1).view(np.uint8))


class FrameCodec:
    """Writes and reads record-batch messages of one schema. Stateless after construction
    (its caches of per-row-count layouts are pure functions of the schema)."""

    __slots__ = ("schema", "cols", "nodes", "nbuffers", "_meta_nbytes", "_tail", "_nodes_by_n", "_fixed")

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.cols = tuple(_col_of(f.type) for f in schema)
        self.nodes = sum(2 if c.kind == "list" else 1 for c in self.cols)
        self.nbuffers = sum({"prim": 2, "bool": 2, "binary": 3, "list": 3}[c.kind] for c in self.cols)
        self._meta_nbytes = 104 + 16 * self.nodes + 16 * self.nbuffers
        # the nodes and buffers vectors after byte 100 of the message
        self._tail = struct.Struct(f"<I{2 * self.nodes}q4xI{2 * self.nbuffers}q")
        self._nodes_by_n: dict[int, tuple] = {}
        # the bytes of the message that `write` always writes the same, for `read`'s fast path:
        # (start, end, bytes) of the prefix less the metadata length, body length and row count
        probe = bytearray(8 + self._meta_nbytes)
        _PREFIX.pack_into(probe, 0, CONTINUATION, 0, 24, 12, 20, 16, 18, 4, 8, 16, 36, 0, METADATA_V5,
                          HEADER_RECORD_BATCH, 10, 20, 8, 4, 16, 16, 24, 0, 20 + 16 * self.nodes)
        _U32.pack_into(probe, 100, self.nodes)
        _U32.pack_into(probe, 104 + 16 * self.nodes + 4, self.nbuffers)  # after the 4 padding bytes
        self._fixed = (bytes(probe[8:40]), bytes(probe[48:80]), bytes(probe[88:104]))

    # -- writing ----------------------------------------------------------------------------

    def _nodes_of(self, n: int) -> tuple:
        nodes = self._nodes_by_n.get(n)
        if nodes is None:
            out: list[int] = []
            for c in self.cols:
                out += (n, 0, n * c.width, 0) if c.kind == "list" else (n, 0)
            nodes = tuple(out)
            if len(self._nodes_by_n) < 1024:
                self._nodes_by_n[n] = nodes
        return nodes

    def write(self, slot: memoryview, n: int, columns: list) -> int:
        """Write one message of `n` rows into `slot`; returns its size in bytes.

        `columns[i]` per column kind: prim -> 1-D numpy array (or sequence) of n values; bool ->
        n truthy values; binary -> (offsets int32[n+1] starting at 0, as an array or a list,
        bytes-like data or a list of bytes-like chunks, copied into the slot back to back);
        list -> C-contiguous (n, width) array. Raises OverflowError when the message does not
        fit.

        Each column's bytes go into the slot as soon as they are known (a prim column given as
        a list is packed by one `struct` call, no numpy array built); what is written past the
        message end of a message that does not fit is never published.
        """
        bufs: list[int] = []  # (offset, length) pairs, flattened
        body = 8 + self._meta_nbytes
        room = len(slot) - body
        off = 0
        for col, data in zip(self.cols, columns, strict=True):
            kind = col.kind
            if kind == "prim":
                if type(data) is list and col.code:
                    nb = n * col.dtype.itemsize
                    if off + nb > room:
                        raise self._overflow(slot, n, columns)
                    try:
                        if n:
                            _struct(f"<{n}{col.code}").pack_into(slot, body + off, *data)
                        bufs += (off, 0, off, nb)
                        off += (nb + 7) & ~7
                        continue
                    except (struct.error, OverflowError):
                        pass  # not plain values of the type: numpy converts them (or says why not)
                mv = _flat(np.ascontiguousarray(data, dtype=col.dtype))
            elif kind == "binary":
                offsets, blob = data
                if type(offsets) is list:  # packed by struct below (numpy if it refuses)
                    ob = None
                    lo = 4 * len(offsets)
                else:
                    ob = _flat(np.ascontiguousarray(offsets, dtype="<i4"))
                    lo = len(ob)
                dpos = off + ((lo + 7) & ~7)
                chunks = _chunks(blob) if type(blob) is list else [_bytes(blob)]
                dlen = sum(map(len, chunks)) if len(chunks) != 1 else len(chunks[0])
                if dpos + dlen > room:
                    raise self._overflow(slot, n, columns)
                bufs += (off, 0, off, lo, dpos, dlen)
                if ob is None:
                    try:
                        _struct(f"<{len(offsets)}i").pack_into(slot, body + off, *offsets)
                    except (struct.error, OverflowError):
                        ob = _flat(np.ascontiguousarray(offsets, dtype="<i4"))
                if lo and ob is not None:
                    slot[body + off : body + off + lo] = ob
                pos = body + dpos
                for c in chunks:
                    if len(c):
                        slot[pos : pos + len(c)] = c
                        pos += len(c)
                off = (dpos + dlen + 7) & ~7
                continue
            elif kind == "bool":
                mv = memoryview(np.packbits(np.asarray(data, dtype=bool), bitorder="little"))
            else:
                mv = _flat(np.ascontiguousarray(data, dtype=col.dtype))
                bufs += (off, 0)  # the list's own (empty) validity buffer
            nb = len(mv)
            if off + nb > room:
                raise self._overflow(slot, n, columns)
            bufs += (off, 0, off, nb)
            if nb:
                slot[body + off : body + off + nb] = mv
            off += (nb + 7) & ~7
        if off > room:  # the last column fits, its padding to 8 bytes does not
            raise self._overflow(slot, n, columns)
        meta = self._meta_nbytes
        _PREFIX.pack_into(
            slot, 0,
            CONTINUATION, meta, 24,
            12, 20, 16, 18, 4, 8,
            16, 36, off, METADATA_V5, HEADER_RECORD_BATCH,
            10, 20, 8, 4, 16,
            16, 24, n, 20 + 16 * self.nodes,
        )  # fmt: skip
        self._tail.pack_into(slot, 100, self.nodes, *self._nodes_of(n), self.nbuffers, *bufs)
        return body + off

    def _overflow(self, slot: memoryview, n: int, columns: list) -> OverflowError:
        """The error of a message that does not fit `slot`, naming its whole size."""
        total = 8 + self._meta_nbytes
        for col, data in zip(self.cols, columns, strict=True):
            if col.kind == "binary":
                offsets, blob = data
                chunks = blob if isinstance(blob, list) else [blob]
                total += _pad8(4 * len(offsets)) + _pad8(sum(len(_bytes(c)) for c in chunks))
            elif col.kind == "bool":
                total += _pad8((n + 7) // 8)
            else:
                total += _pad8(np.ascontiguousarray(data, dtype=col.dtype).nbytes)
        return OverflowError(f"record batch of {total} bytes does not fit a slot of {len(slot)} bytes")

    # -- reading ----------------------------------------------------------------------------

    def read(self, view: memoryview) -> tuple[int, list]:
        """(rows, columns) of a message: numpy views over `view`, no copies.

        binary columns come back as (offsets int32[n+1], data uint8) -- offsets may not start at
        0 when a writer sliced; list columns as (n, width) arrays; bool as a numpy bool array
        (unpacked, a copy of n bits).
        """
        n, nodes, bufs, body = self._parse_own(view)
        if len(nodes) != 2 * self.nodes or len(bufs) != 2 * self.nbuffers:
            raise FrameError(f"message has {len(nodes) // 2} nodes / {len(bufs) // 2} buffers; schema expects {self.nodes} / {self.nbuffers}")
        out = []
        ni = bi = 0
        for col in self.cols:
            if nodes[ni + 1]:
                raise FrameError("null values are not supported")
            if col.kind == "binary":
                o_off, o_len, d_off, d_len = bufs[bi + 2 : bi + 6]
                offsets = np.frombuffer(view, "<i4", n + 1, body + o_off) if n else np.zeros(1, "<i4")
                data = np.frombuffer(view, np.uint8, d_len, body + d_off)
                out.append((offsets, data))
                bi += 6
                ni += 2
                continue
            if col.kind == "list":
                if nodes[ni + 3]:
                    raise FrameError("null values are not supported")
                d_off = bufs[bi + 4]
                arr = np.frombuffer(view, col.dtype, n * col.width, body + d_off).reshape(n, col.width)
                bi += 6
                ni += 4
            elif col.kind == "bool":
                d_off = bufs[bi + 2]
                bits = np.frombuffer(view, np.uint8, (n + 7) // 8, body + d_off)
                arr = np.unpackbits(bits, count=n, bitorder="little").astype(bool)
                bi += 4
                ni += 2
            else:
                d_off = bufs[bi + 2]
                arr = np.frombuffer(view, col.dtype, n, body + d_off)
                bi += 4
                ni += 2
            out.append(arr)
        return n, out


    def read_rows(self, view: memoryview) -> tuple[int, list]:
        """(rows, columns) of a message as Python values, for consumers that want lists and
        must let the slot go: prim -> list of n numbers (one struct call), binary -> list of
        n `bytes` (one copy of the data, then a slice per row); list and bool columns as
        `read` gives them (views over `view`)."""
        n, nodes, bufs, body = self._parse_own(view)
        if len(nodes) != 2 * self.nodes or len(bufs) != 2 * self.nbuffers:
            return self._as_rows(*self.read(view))  # `read` raises the precise FrameError
        out = []
        ni = bi = 0
        for col in self.cols:
            if nodes[ni + 1]:
                raise FrameError("null values are not supported")
            kind = col.kind
            if kind == "prim" and col.code:
                out.append(list(_struct(f"<{n}{col.code}").unpack_from(view, body + bufs[bi + 2])) if n else [])
                bi += 4
                ni += 2
            elif kind == "binary":
                o_off, d_off, d_len = bufs[bi + 2], bufs[bi + 4], bufs[bi + 5]
                if not n:
                    out.append([])
                else:
                    o = _struct(f"<{n + 1}i").unpack_from(view, body + o_off)
                    base = o[0]
                    if o[n] - base > d_len:
                        raise FrameError("binary offsets outside their data buffer")
                    out.append(_items(bytes(view[body + d_off + base : body + d_off + o[n]]), o))
                bi += 6
                ni += 2
            else:  # numpy's reading (and its checks) for the rest
                return self._as_rows(*self.read(view))
        return n, out

    def _as_rows(self, n: int, cols: list) -> tuple[int, list]:
        out = []
        for col, c in zip(self.cols, cols, strict=True):
            if col.kind == "prim":
                out.append(c.tolist())
            elif col.kind == "binary":
                out.append(binary_items(*c))
            else:
                out.append(c)
        return n, out

    def _parse_own(self, view) -> tuple[int, tuple, tuple, int]:
        """`_parse`, shortened for a message laid out as `write` lays them out (every message
        on the rings): three byte compares and two unpacks instead of walking the flatbuffer.
        Anything else (pyarrow's own messages, damaged bytes) takes the general walk."""
        meta = self._meta_nbytes
        a, b, c = self._fixed
        if (
            len(view) >= 8 + meta
            and view[4:8] == _I32.pack(meta)
            and view[8:40] == a
            and view[48:80] == b
            and view[88:104] == c
            and view[:4] == b"\xff\xff\xff\xff"
        ):
            vals = self._tail.unpack_from(view, 100)
            k = self.nodes
            if vals[1 + 2 * k] == self.nbuffers:
                return _I64.unpack_from(view, 80)[0], vals[1 : 1 + 2 * k], vals[2 + 2 * k :], 8 + meta
        return _parse(view)


def binary_items(offsets: np.ndarray, data: np.ndarray) -> list[bytes]:
    """The byte strings of a binary column read by `FrameCodec.read` (copies each item)."""
    base = int(offsets[0])
    return _items(data[base : int(offsets[-1])].tobytes(), offsets.tolist())  # offsets index the whole buffer


def _items(blob: bytes, o) -> list[bytes]:
    """`blob` (the column's bytes from offset o[0] on) cut at offsets `o` (n + 1 of them)."""
    base = o[0]
    if base:
        o = [x - base for x in o]
    return [blob[o[i] : o[i + 1]] for i in range(len(o) - 1)]


def _parse(view) -> tuple[int, tuple, tuple, int]:
    """(rows, flattened nodes, flattened buffers, body offset) of any encapsulated message."""
    if len(view) < 8:
        raise FrameError("message shorter than its prefix")
    cont, meta = struct.unpack_from("<Ii", view, 0)
    if cont != CONTINUATION or meta <= 0 or 8 + meta > len(view):
        raise FrameError("not an encapsulated Arrow IPC message")
    fb = 8

    def field(table: int, idx: int) -> int:
        vt = table - _I32.unpack_from(view, table)[0]
        if 4 + 2 * idx >= _U16.unpack_from(view, vt)[0]:
            return 0
        return _U16.unpack_from(view, vt + 4 + 2 * idx)[0]

    msg = fb + _U32.unpack_from(view, fb)[0]
    f = field(msg, 1)
    if not f or view[msg + f] != HEADER_RECORD_BATCH:
        raise FrameError("message is not a record batch")
    f = field(msg, 2)
    rb = msg + f + _U32.unpack_from(view, msg + f)[0]
    f = field(rb, 0)
    n = _I64.unpack_from(view, rb + f)[0] if f else 0
    vecs = []
    for idx in (1, 2):
        f = field(rb, idx)
        if not f:
            vecs.append(())
            continue
        vec = rb + f + _U32.unpack_from(view, rb + f)[0]
        count = _U32.unpack_from(view, vec)[0]
        vecs.append(struct.unpack_from(f"<{2 * count}q", view, vec + 4))
    return n, vecs[0], vecs[1], 8 + meta
