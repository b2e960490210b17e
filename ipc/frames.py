"""What travels in each ring: the codecs of the Arrow schemas (defined in `schooner.ipc.wire`).

Every slot holds standard Arrow IPC (any Arrow reader can decode a slot); the hot path writes
and reads it with `schooner.ipc.arrow_lite` (struct + numpy, no per-message pyarrow calls).

* submit ring (frontend -> scheduler): one encapsulated record-batch message of
  `SUBMIT_SCHEMA`, one row per query.
* response ring (scheduler -> frontend): one message of `RESPONSE_SCHEMA`, one row per query.
* model input ring (scheduler -> model): one message of `model_input_schema(...)`: a single
  tensor column (fixed-size list) for numeric inputs, binary/utf8 for bytes/strings.
* model output ring (model -> scheduler): `MODEL_STAMPS_NBYTES` of timestamps (when the model
  took the batch, when its scores were ready), then an Arrow IPC *stream* -- a schema message, then one
  record batch with a `scores` column -- because only the model knows its output's dtype and
  width. Schema messages are built once per (dtype, width) and cached at both ends. A failed
  batch is a stream whose schema metadata carries ``error`` and which has no rows. Models that
  answer strings send a utf8 column; models that answer other Python objects (dicts, ragged
  lists) send a binary column of each row's JSON text, its schema metadata saying ``json``.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np
import orjson
import pyarrow as pa

from schooner.ipc.arrow_lite import FrameCodec, FrameError, binary_items
from schooner.ipc.rows import TextRows  # noqa: F401 (re-exported)
from schooner.ipc.wire import (  # noqa: F401 (re-exported: the schemas are defined with every wire type)
    MODEL_STAMPS_NBYTES,
    NUMPY_DTYPES,
    RESPONSE_SCHEMA,
    SUBMIT_SCHEMA,
    model_input_schema,
)


def write_model_stamps(slot: memoryview, t_in_ns: int, t_out_ns: int) -> None:
    slot[:8] = t_in_ns.to_bytes(8, "little")
    slot[8:16] = t_out_ns.to_bytes(8, "little")


def read_model_stamps(view: memoryview) -> tuple[int, int]:
    return int.from_bytes(view[:8], "little"), int.from_bytes(view[8:16], "little")

def binary_column(chunks: list[bytes]) -> tuple[list[int], bytes]:
    """(offsets, data) of a binary column for `FrameCodec.write`: one join, no per-element
    Arrow calls; the offsets a list (the codec packs a list with one struct call)."""
    return list(accumulate(map(len, chunks), initial=0)), b"".join(chunks)


def _text_rows(rows, n: int) -> TextRows:
    if len(rows) != n:
        raise ValueError(f"predict returned {len(rows)} rows; expected {n} for a batch of {n}")
    if all(isinstance(r, str) for r in rows):
        return TextRows("string", [r.encode() for r in rows])
    try:
        return TextRows("json", [orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) for r in rows])
    except TypeError as e:
        raise ValueError(f"predict returned rows that are not numbers, strings or JSON-able values ({e})") from None


class ScoresCodec:
    """Model output stream: cached schema message + record batch. One per process (not global)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], tuple[bytes, FrameCodec]] = {}
        self._by_bytes: dict[bytes, tuple[FrameCodec, str | None]] = {}

    @staticmethod
    def normalize(scores, n: int) -> np.ndarray | TextRows:
        """The scores as a 1-D or 2-D array of n rows in a wire dtype, or `TextRows` for
        strings and other JSON-able values; ValueError otherwise."""
        if hasattr(scores, "detach"):  # a torch tensor
            scores = scores.detach().cpu().numpy()
        try:
            arr = np.asarray(scores)
        except ValueError:  # ragged rows
            return _text_rows(list(scores), n)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ValueError(f"predict returned shape {arr.shape}; expected ({n},) or ({n}, k) for a batch of {n}")
        kind = arr.dtype.kind
        if kind == "f":
            arr = arr.astype(np.float32 if arr.dtype.itemsize <= 4 else np.float64, copy=False)
        elif kind in "iu":
            arr = arr.astype(np.int64, copy=False)
        elif kind == "b":
            arr = arr.astype(np.uint8)
        elif kind in "USO":
            rows = arr.tolist() if arr.ndim == 1 else [r.tolist() for r in arr]
            return _text_rows([r.decode(errors="replace") if isinstance(r, bytes) else r for r in rows], n)
        else:
            raise ValueError(f"predict returned {arr.dtype} values; expected numbers, booleans, strings or JSON-able values")
        if arr.ndim > 2:
            arr = arr.reshape(n, -1)
        return arr

    def write(self, slot: memoryview, arr: np.ndarray | TextRows) -> int:
        """Write normalized scores as a stream into `slot`; returns bytes written."""
        if isinstance(arr, TextRows):
            key = (arr.kind, 0)
            column = binary_column(arr.items)
        else:
            key = (arr.dtype.str, arr.shape[1] if arr.ndim == 2 else 0)
            column = arr
        entry = self._by_key.get(key)
        if entry is None:
            if isinstance(arr, TextRows):
                t = pa.string() if arr.kind == "string" else pa.binary()
                schema = pa.schema([("scores", t)], metadata={"kind": arr.kind})
            else:
                width = key[1]
                t = pa.from_numpy_dtype(arr.dtype)
                schema = pa.schema([("scores", pa.list_(t, width) if width else t)])
            entry = (schema.serialize().to_pybytes(), FrameCodec(schema))
            self._by_key[key] = entry
        head, codec = entry
        if len(head) > len(slot):
            raise OverflowError(f"scores do not fit a slot of {len(slot)} bytes")
        slot[: len(head)] = head
        return len(head) + codec.write(slot[len(head) :], arr.shape[0], [column])

    @staticmethod
    def write_error(slot: memoryview, message: str) -> int:
        """A failed batch: a stream whose schema metadata says why, with no record batch. A
        message too long for the slot is cut (never an exception: it is the batch's answer)."""
        message = message[:4000]
        while True:
            head = pa.schema([("scores", pa.float32())], metadata={"error": message}).serialize().to_pybytes()
            if len(head) <= len(slot) or not message:
                break
            message = message[: len(message) // 2] + " [cut]" if len(message) > 12 else ""
        if len(head) > len(slot):
            raise OverflowError(f"an error message does not fit a slot of {len(slot)} bytes")
        slot[: len(head)] = head
        return len(head)

    def read(self, view: memoryview) -> tuple[np.ndarray | TextRows | None, str | None]:
        """(scores, None) or (None, error message) of one output slot; numeric scores view
        the slot, text rows are copies."""
        meta = int.from_bytes(view[4:8], "little")
        if view[:4] != b"\xff\xff\xff\xff" or meta <= 0:
            raise FrameError("model output slot does not start with a schema message")
        head = bytes(view[: 8 + meta])
        entry = self._by_bytes.get(head)
        if entry is None:
            schema = pa.ipc.read_schema(pa.py_buffer(head))
            md = schema.metadata or {}
            if b"error" in md:
                return None, md[b"error"].decode(errors="replace")
            entry = (FrameCodec(schema), md.get(b"kind", b"").decode() or None)
            if len(self._by_bytes) < 64:
                self._by_bytes[head] = entry
        codec, text_kind = entry
        _, (scores,) = codec.read(view[8 + meta :])
        if text_kind is not None:
            return TextRows(text_kind, binary_items(*scores)), None
        return scores, None
