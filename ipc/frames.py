"""Arrow record batches in ring slots: the data schemas and their encode/decode.

Rings whose schema both ends know in advance (submit, response, model input) carry one
encapsulated Arrow IPC record-batch message per slot, read back with the agreed schema
(the message alone costs ~2 us to write and read; a full stream with its schema ~7 us).
The model output ring carries a full Arrow IPC stream per slot, because only the model knows
its output's dtype and width; its schema metadata also says whether the batch failed.

Reading is zero-copy: the returned arrays are views over the slot, valid until the slot is
released. Writers copy each column buffer into the slot once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# frontend -> scheduler, one row per query
SUBMIT_SCHEMA = pa.schema(
    [
        ("query_id", pa.uint64()),
        ("app", pa.uint16()),
        ("deadline_ns", pa.int64()),
        ("input", pa.binary()),
    ]
)

# scheduler -> frontend, one row per query; `output` holds the JSON text of the answer's
# "output" value when status is 200, else the error cause (utf-8)
RESPONSE_SCHEMA = pa.schema(
    [
        ("query_id", pa.uint64()),
        ("status", pa.uint16()),
        ("default", pa.bool_()),
        ("output", pa.binary()),
        ("explanation", pa.string()),
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


def write_message(slot: memoryview, batch: pa.RecordBatch) -> int:
    """Serialize `batch` (IPC message, no schema) into `slot`; returns bytes written.

    Raises OverflowError when it does not fit.
    """
    buf = batch.serialize()
    n = buf.size
    if n > len(slot):
        raise OverflowError(f"record batch of {n} bytes does not fit a slot of {len(slot)} bytes")
    slot[:n] = memoryview(buf).cast("B")
    return n


def read_message(view: memoryview, schema: pa.Schema) -> pa.RecordBatch:
    """Zero-copy record batch over a slot written by `write_message`."""
    return pa.ipc.read_record_batch(pa.py_buffer(view), schema)


def write_stream(slot: memoryview, batch: pa.RecordBatch) -> int:
    """Write `batch` as a self-describing IPC stream (schema + batch) into `slot`."""
    sink = pa.FixedSizeBufferWriter(pa.py_buffer(slot))
    try:
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
    except (pa.ArrowInvalid, OSError) as e:
        raise OverflowError(f"record batch does not fit a slot of {len(slot)} bytes") from e
    return sink.tell()


def read_stream(view: memoryview) -> pa.RecordBatch:
    """Zero-copy record batch over a slot written by `write_stream` (schema metadata kept)."""
    reader = pa.ipc.open_stream(pa.py_buffer(view))
    batch = reader.read_next_batch()
    return batch


_BINARY = pa.binary()


def binary_array(chunks: list[bytes], type: pa.DataType = _BINARY) -> pa.Array:
    """A binary (or utf-8 string) array from byte strings: one join and one cumsum."""
    offsets = np.zeros(len(chunks) + 1, dtype=np.int32)
    np.cumsum([len(c) for c in chunks], out=offsets[1:])
    data = b"".join(chunks)
    return pa.Array.from_buffers(
        type, len(chunks), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def binary_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int32[n+1], data uint8) views of a binary/string array without copying."""
    _, off_buf, data_buf = arr.buffers()
    off = np.frombuffer(off_buf, dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    return off, data


def tensor_batch(schema: pa.Schema, rows: np.ndarray) -> pa.RecordBatch:
    """Model-input record batch over a C-contiguous (n, width) array (no copy until written)."""
    col_type = schema.field("input").type
    flat = pa.array(rows.reshape(-1), type=col_type.value_type)
    return pa.record_batch([pa.FixedSizeListArray.from_arrays(flat, col_type.list_size)], schema=schema)


def tensor_view(batch: pa.RecordBatch, shape: tuple[int, ...], slot: memoryview | None = None) -> np.ndarray:
    """Zero-copy numpy view (n, *shape) of a model-input batch's tensor column.

    With `slot` (the writable slot the batch was read from) the view is writable: the model
    owns its batch until it returns, and frameworks that insist on writable arrays
    (torch.from_numpy) then take it without a copy. Without it the view is read-only.
    """
    col = batch.column(0)
    n = len(col)
    values = col.values
    dtype = np.dtype(values.type.to_pandas_dtype())
    vbuf = values.buffers()[1]
    count = n * col.type.list_size
    start = values.offset * dtype.itemsize
    if slot is not None and not slot.readonly:
        base = np.frombuffer(slot, dtype=np.uint8)
        off = vbuf.address - base.ctypes.data + start
        if 0 <= off and off + count * dtype.itemsize <= len(base):
            flat = base[off : off + count * dtype.itemsize].view(dtype)
            return flat.reshape((n, *shape)) if shape else flat
    flat = np.frombuffer(vbuf, dtype=dtype, count=count, offset=start)
    return flat.reshape((n, *shape)) if shape else flat.reshape(n)
