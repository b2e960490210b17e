"""What travels in each ring: the Arrow schemas, and their codecs.

Every slot holds standard Arrow IPC (any Arrow reader can decode a slot); the hot path writes
and reads it with `schooner.ipc.arrow_lite` (struct + numpy, no per-message pyarrow calls).

* submit ring (frontend -> scheduler): one encapsulated record-batch message of
  `SUBMIT_SCHEMA`, one row per query.
* response ring (scheduler -> frontend): one message of `RESPONSE_SCHEMA`, one row per query.
* model input ring (scheduler -> model): one message of `model_input_schema(...)`: a single
  tensor column (fixed-size list) for numeric inputs, binary/utf8 for bytes/strings.
* model output ring (model -> scheduler): an Arrow IPC *stream* -- a schema message, then one
  record batch with a `scores` column -- because only the model knows its output's dtype and
  width. Schema messages are built once per (dtype, width) and cached at both ends. A failed
  batch is a stream whose schema metadata carries ``error`` and which has no rows.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np
import pyarrow as pa

from schooner.ipc.arrow_lite import FrameCodec, FrameError

SUBMIT_SCHEMA = pa.schema(
    [
        ("query_id", pa.uint64()),
        ("app", pa.uint16()),
        ("deadline_ns", pa.int64()),
        ("priority", pa.uint8()),  # 0: the default level; 1 is served first
        ("uid", pa.int64()),  # the user, for per-user selection state; -1: none
        ("input", pa.binary()),
    ]
)

# `output`: JSON text of the answer's "output" when status is 200, else the error cause (utf-8).
# `explanation`: why a default was answered; "" otherwise.
RESPONSE_SCHEMA = pa.schema(
    [
        ("query_id", pa.uint64()),
        ("status", pa.uint16()),
        ("default", pa.bool_()),
        ("output", pa.binary()),
        ("explanation", pa.string()),
        ("extra", pa.binary()),  # more JSON members, e.g. confidence of an ensemble; b"" if none
    ]
)

NUMPY_DTYPES = {
    "doubles": np.dtype("<f8"),
    "floats": np.dtype("<f4"),
    "ints": np.dtype("<i4"),
    "bytes": None,
    "strings": None,
}


def model_input_schema(input_type: str, input_shape: tuple[int, ...]) -> pa.Schema:
    """Schema of a model's input ring: one tensor column, one row per query."""
    dtype = NUMPY_DTYPES[input_type]
    if dtype is None:
        col = pa.binary() if input_type == "bytes" else pa.string()
    else:
        width = int(np.prod(input_shape)) if input_shape else 1
        col = pa.list_(pa.from_numpy_dtype(dtype), width)
    return pa.schema([("input", col)])


def binary_column(chunks: list[bytes]) -> tuple[np.ndarray, bytes]:
    """(int32 offsets, data) of a binary column: one join, no per-element Arrow calls."""
    offsets = np.fromiter(accumulate(map(len, chunks), initial=0), np.int32, len(chunks) + 1)
    return offsets, b"".join(chunks)


def binary_items(offsets: np.ndarray, data: np.ndarray) -> list[bytes]:
    """The byte strings of a binary column read by `FrameCodec.read` (copies each item)."""
    blob = data.tobytes()
    base = int(offsets[0])
    o = (offsets - base).tolist()
    return [blob[o[i] : o[i + 1]] for i in range(len(o) - 1)]


class ScoresCodec:
    """Model output stream: cached schema message + record batch. One per process (not global)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], tuple[bytes, FrameCodec]] = {}
        self._by_bytes: dict[bytes, FrameCodec] = {}

    @staticmethod
    def normalize(scores, n: int) -> np.ndarray:
        """The scores as a 1-D or 2-D array of n rows in a wire dtype; ValueError otherwise."""
        if hasattr(scores, "detach"):  # a torch tensor
            scores = scores.detach().cpu().numpy()
        arr = np.asarray(scores)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ValueError(f"predict returned shape {arr.shape}; expected ({n},) or ({n}, k) for a batch of {n}")
        kind = arr.dtype.kind
        if kind == "f":
            arr = arr.astype(np.float32 if arr.dtype.itemsize <= 4 else np.float64, copy=False)
        elif kind in "iu":
            arr = arr.astype(np.int64, copy=False)
        elif kind == "b":
            arr = arr.astype(np.uint8)
        else:
            raise ValueError(f"predict returned {arr.dtype} values; expected numbers or booleans")
        if arr.ndim > 2:
            arr = arr.reshape(n, -1)
        return arr

    def write(self, slot: memoryview, arr: np.ndarray) -> int:
        """Write normalized scores as a stream into `slot`; returns bytes written."""
        width = arr.shape[1] if arr.ndim == 2 else 0
        key = (arr.dtype.str, width)
        entry = self._by_key.get(key)
        if entry is None:
            t = pa.from_numpy_dtype(arr.dtype)
            schema = pa.schema([("scores", pa.list_(t, width) if width else t)])
            entry = (schema.serialize().to_pybytes(), FrameCodec(schema))
            self._by_key[key] = entry
        head, codec = entry
        if len(head) > len(slot):
            raise OverflowError(f"scores do not fit a slot of {len(slot)} bytes")
        slot[: len(head)] = head
        return len(head) + codec.write(slot[len(head) :], arr.shape[0], [arr])

    @staticmethod
    def write_error(slot: memoryview, message: str) -> int:
        """A failed batch: a stream whose schema metadata says why, with no record batch."""
        schema = pa.schema([("scores", pa.float32())], metadata={"error": message[:4000]})
        head = schema.serialize().to_pybytes()
        slot[: len(head)] = head
        return len(head)

    def read(self, view: memoryview) -> tuple[np.ndarray | None, str | None]:
        """(scores, None) or (None, error message) of one output slot; scores view the slot."""
        meta = int.from_bytes(view[4:8], "little")
        if view[:4] != b"\xff\xff\xff\xff" or meta <= 0:
            raise FrameError("model output slot does not start with a schema message")
        head = bytes(view[: 8 + meta])
        codec = self._by_bytes.get(head)
        if codec is None:
            schema = pa.ipc.read_schema(pa.py_buffer(head))
            md = schema.metadata or {}
            if b"error" in md:
                return None, md[b"error"].decode(errors="replace")
            codec = FrameCodec(schema)
            if len(self._by_bytes) < 64:
                self._by_bytes[head] = codec
        _, (scores,) = codec.read(view[8 + meta :])
        return scores, None
