"""Open Inference Protocol (KServe V2) over HTTP: request decoding and response encoding.

Pure functions and small data classes, no I/O: the frontend's routes call them. Covers the
JSON tensor form (nested or flat ``data``), every datatype of the protocol (BOOL, UINT8..64,
INT8..64, FP16, FP32, FP64, BF16, BYTES), and Triton's binary tensor extension
(``Inference-Header-Content-Length``, ``binary_data_size``, binary outputs, the raw request
with a header length of 0). Binary inputs become numpy views of the request body: the bytes go
to the submit ring with one copy and no per-element Python work.

Every `V2Error` carries the HTTP status and a message naming what was expected; the route
answers ``{"error": message}`` as the protocol asks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import orjson

from schooner.ipc import rows

DATATYPES: dict[str, np.dtype | None] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # stored as the upper 16 bits of a float32
    "BYTES": None,
}  # fmt: skip
APP_DATATYPE = {"floats": "FP32", "doubles": "FP64", "ints": "INT32", "strings": "BYTES", "bytes": "BYTES"}
NUMPY_TO_V2 = {np.dtype(v).str: k for k, v in DATATYPES.items() if v is not None and k != "BF16"}
TRITON_TYPE = {k: f"TYPE_{'STRING' if k == 'BYTES' else k}" for k in DATATYPES}


class V2Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> bytes:
        return orjson.dumps({"error": self.message})


def bad(message: str) -> V2Error:
    return V2Error(400, message)


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray | list[bytes]  # numeric: flat array in the tensor's datatype; BYTES: items


@dataclass(slots=True)
class InferRequest:
    id: str | None
    parameters: dict
    inputs: list[InferInput]
    outputs: list[dict] = field(default_factory=list)  # requested outputs as sent
    binary_output: bool = False


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, as frameworks do."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _bytes_items(raw: memoryview, count: int, where: str) -> list[bytes]:
    items, off, n = [], 0, len(raw)
    for _ in range(count):
        if off + 4 > n:
            raise bad(f"{where}: BYTES data ends before element {len(items)} of {count}")
        ln = int.from_bytes(raw[off : off + 4], "little")
        off += 4
        if off + ln > n:
            raise bad(f"{where}: BYTES element {len(items)} claims {ln} bytes past the end of the data")
        items.append(bytes(raw[off : off + ln]))
        off += ln
    if off != n:
        raise bad(f"{where}: {n - off} bytes left after {count} BYTES elements")
    return items


def _shape(value, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise bad(f"{where}: 'shape' must be a list of non-negative integers, got {value!r}")
    return value


def decode_infer(body: bytes, header_len: int | None, shm=None) -> InferRequest:
    """Parse a request body. `header_len` is Inference-Header-Content-Length (None if absent).

    `shm(region, offset, byte_size) -> bytes` resolves inputs that name a client shared
    memory region; None means the extension is off.
    """
    if header_len is not None and header_len == 0:
        raise bad("raw binary request: use decode_raw")
    if header_len is not None and not 0 < header_len <= len(body):
        raise bad(f"Inference-Header-Content-Length {header_len} is outside the body of {len(body)} bytes")
    json_part = body if header_len is None else body[:header_len]
    binary = memoryview(body)[header_len:] if header_len is not None else memoryview(b"")
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as e:
        raise bad(f"request JSON is malformed: {e}") from None
    if not isinstance(doc, dict):
        raise bad("request body must be a JSON object with 'inputs'")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise bad("'parameters' must be an object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad("'inputs' must be a non-empty list of tensors")
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise bad("'outputs' must be a list of objects with a 'name'")
    for k, o in enumerate(outputs):
        if not isinstance(o.get("parameters") or {}, dict):
            raise bad(f"outputs[{k}].parameters must be an object, got {o['parameters']!r}")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise bad("'id' must be a string")
    inputs = []
    offset = 0
    for k, t in enumerate(raw_inputs):
        where = f"inputs[{k}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise bad(f"{where}: expected an object with 'name', 'shape', 'datatype' and 'data'")
        dt = t.get("datatype")
        if dt not in DATATYPES:
            raise bad(f"{where}: unknown datatype {dt!r}; expected one of {', '.join(DATATYPES)}")
        shape = _shape(t.get("shape"), where)
        count = math.prod(shape)
        tparams = t.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise bad(f"{where}.parameters must be an object, got {tparams!r}")
        nbytes = tparams.get("binary_data_size")
        if "shared_memory_region" in tparams:
            if shm is None:
                raise V2Error(400, f"{where}: system shared memory is off; start the server with --allow-client-shm")
            size = tparams.get("shared_memory_byte_size")
            off = tparams.get("shared_memory_offset", 0)
            if not isinstance(size, int) or size < 0:
                raise bad(f"{where}: shared_memory_byte_size must be a non-negative integer")
            if dt != "BYTES" and size != count * DATATYPES[dt].itemsize:
                raise bad(f"{where}: shared_memory_byte_size is {size}; a {dt} tensor of shape {shape} needs {count * DATATYPES[dt].itemsize}")
            values = _from_binary(shm(tparams["shared_memory_region"], off, size), dt, count, where)
            inputs.append(InferInput(t["name"], dt, shape, values))
            continue
        if nbytes is not None:
            if not isinstance(nbytes, int) or nbytes < 0 or offset + nbytes > len(binary):
                raise bad(f"{where}: binary_data_size {nbytes!r} does not fit the {len(binary) - offset} binary bytes left")
            raw = binary[offset : offset + nbytes]
            offset += nbytes
            values = _from_binary(raw, dt, count, where)
        else:
            if "data" not in t:
                raise bad(f"{where}: no 'data' and no binary_data_size")
            values = _from_json(t["data"], dt, count, where)
        inputs.append(InferInput(t["name"], dt, shape, values))
    if offset != len(binary):
        raise bad(f"{len(binary) - offset} binary bytes after the last binary input")
    binary_out = bool(params.get("binary_data_output", False)) or any(
        (o.get("parameters") or {}).get("binary_data") for o in outputs
    )
    return InferRequest(rid, params, inputs, outputs, binary_out)


def _from_binary(raw: memoryview, dt: str, count: int, where: str):
    if dt == "BYTES":
        return _bytes_items(raw, count, where)
    dtype = DATATYPES[dt]
    if len(raw) != count * dtype.itemsize:
        raise bad(f"{where}: {len(raw)} binary bytes for {count} {dt} elements; expected {count * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype)


def _from_json(data, dt: str, count: int, where: str):
    if dt == "BYTES":
        flat = _flatten(data)
        if len(flat) != count or not all(isinstance(v, str) for v in flat):
            raise bad(f"{where}: BYTES data must be {count} JSON strings")
        return [v.encode() for v in flat]
    try:
        if dt == "BF16":
            arr = float32_to_bf16(np.asarray(data, dtype=np.float32).reshape(-1))
        elif dt == "BOOL":
            arr = np.asarray(data).reshape(-1)
            if arr.size and arr.dtype != np.bool_:
                raise ValueError("not booleans")
        else:
            arr = np.asarray(data).reshape(-1)
            if arr.size and arr.dtype.kind not in "iuf" or arr.dtype.kind == "f" and DATATYPES[dt].kind in "iu":
                raise ValueError(f"{arr.dtype.kind} values")
            target = DATATYPES[dt]
            if target.kind in "iu" and arr.size:
                info = np.iinfo(target)
                if arr.min() < info.min or arr.max() > info.max:
                    raise ValueError(f"a value is outside the {dt} range [{info.min}, {info.max}]")
            arr = arr.astype(target, copy=False)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ValueError(f"a value is outside the {dt} range")
    except (ValueError, TypeError) as e:
        raise bad(f"{where}: data is not {count} {dt} values ({e})") from None
    if arr.size != count:
        raise bad(f"{where}: data has {arr.size} elements; shape says {count}")
    return arr


def _flatten(data) -> list:
    if not isinstance(data, list):
        return [data]
    out: list = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def to_app_rows(inp: InferInput, input_type: str, input_shape: tuple[int, ...]) -> tuple[int, memoryview | list[bytes]]:
    """(number of queries, their input bytes) for an app: numeric inputs as one contiguous
    little-endian block in the app's dtype (one copy); BYTES as one item per query.

    The tensor's shape is [N, *input_shape] (N queries) or exactly input_shape (one query).
    """
    app_dt = APP_DATATYPE[input_type]
    shape = list(inp.shape)
    if app_dt == "BYTES":
        if inp.datatype != "BYTES":
            raise bad(f"input '{inp.name}': datatype {inp.datatype}; expected BYTES")
        if not (len(shape) == 1 or len(shape) == 2 and shape[1] == 1):
            raise bad(f"input '{inp.name}': shape {shape}; expected [N] or [N, 1] for BYTES")
        if input_type == "strings":
            for k, v in enumerate(inp.values):
                try:
                    bytes(v).decode()
                except UnicodeDecodeError:
                    raise bad(f"input '{inp.name}': element {k} is not UTF-8 text; this app takes strings") from None
        return len(inp.values), inp.values
    expected = list(input_shape)
    if shape == expected:
        n = 1
    elif shape[1:] == expected and shape and shape[0] >= 1:
        n = shape[0]
    else:
        raise bad(f"input '{inp.name}': shape {shape}; expected [N, {', '.join(map(str, expected))}] or {expected}")
    if inp.datatype == "BYTES":
        raise bad(f"input '{inp.name}': datatype BYTES; expected {app_dt}")
    values = inp.values
    if inp.datatype == "BF16":
        values = bf16_to_float32(values)
    target = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "INT32": np.dtype("<i4")}[app_dt]
    if values.dtype != target:
        # exact conversions only: safe casts, or a narrower int type when every value fits
        widen = np.can_cast(values.dtype, target, "safe") and values.dtype != np.bool_
        narrow_int = values.dtype.kind in "iu" and target.kind in "iu"
        if not (widen or narrow_int):
            raise bad(f"input '{inp.name}': datatype {inp.datatype} cannot be converted to {app_dt} without loss")
        if narrow_int and not widen and values.size:
            info = np.iinfo(target)
            if values.min() < info.min or values.max() > info.max:
                raise bad(f"input '{inp.name}': {inp.datatype} values outside the {app_dt} range")
        values = values.astype(target)
    # no copy when the tensor already is the app's dtype (a binary input viewing the body):
    # its bytes are copied once, into the submit ring
    return n, memoryview(np.ascontiguousarray(values)).cast("B")


def rows_to_tensor(rows: list[bytes], datatype: str | None) -> tuple[np.ndarray, str]:
    """Numeric output tensor of N per-query JSON outputs: (array [N] or [N, k...], datatype).

    Without an explicit `datatype`, integers give INT64 and anything else FP32.
    """
    text = b"[" + b",".join(rows) + b"]"
    try:
        values = orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN/Infinity tokens of non-finite outputs
        values = json.loads(text)
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged JSON values: each row's JSON text
        arr = np.empty(len(values), dtype=object)
        datatype = "BYTES"
    if datatype is None:
        kind = arr.dtype.kind
        datatype = "INT64" if kind in "iu" else "BOOL" if kind == "b" else "FP32" if kind == "f" else "BYTES"
    if datatype == "BYTES":
        return np.asarray([orjson.dumps(v) if not isinstance(v, str) else v.encode() for v in values], dtype=object), datatype
    if datatype == "BF16":
        return float32_to_bf16(arr.astype(np.float32)), datatype
    return arr.astype(DATATYPES[datatype]), datatype


_SOURCE = {rows.F32: "FP32", rows.F64: "FP64", rows.I64: "INT64", rows.BOOL: "BOOL"}


def answer_tensor(answers: list[bytes], datatype: str | None) -> tuple[np.ndarray, str]:
    """The output tensor of N per-query answer rows (typed or JSON text, `schooner.ipc.rows`),
    as `rows_to_tensor` gives it from their JSON text. Rows of one numeric form are copied
    straight into the tensor when that gives the same values: the target is their own type,
    or they are float64, int64 or booleans (which JSON carries exactly); float32 rows only to
    FP32 or BF16 (JSON carries float32 as its shortest decimal). Anything else (defaults among
    the rows, JSON rows, strings, width 0) is rendered to JSON and parsed as before."""
    u = rows.uniform(answers)
    if u is not None:
        kind, vector, arr = u
        arr = np.ascontiguousarray(arr)  # casts out of range are numpy's contiguous loop's, as from JSON
        src = _SOURCE[kind]
        target = datatype or ("FP32" if kind in (rows.F32, rows.F64) else src)
        if (not vector or arr.shape[1]) and target != "BYTES" and (
            kind != rows.F32 or target in ("FP32", "BF16")
        ):
            if kind == rows.BOOL:
                arr = arr.astype(bool)
            if target == "BF16":
                return float32_to_bf16(arr.astype(np.float32)), target
            return arr.astype(DATATYPES[target]), target
    return rows_to_tensor(rows.render_rows(answers), datatype)


def binary_bytes(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(len(v).to_bytes(4, "little") + v for v in arr.reshape(-1))
    return np.ascontiguousarray(arr).tobytes()


def _json_data(arr: np.ndarray, datatype: str) -> list:
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        return [v.decode(errors="replace") for v in flat]
    if datatype == "BF16":
        return bf16_to_float32(flat).tolist()
    return flat.tolist()


def encode_infer_response(
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    output_name: str,
    arr: np.ndarray,
    datatype: str,
    binary: bool,
    parameters: dict | None = None,
    in_shm: bool = False,
) -> tuple[bytes, int | None]:
    """(body, Inference-Header-Content-Length or None) of an infer response with one output.

    `in_shm`: the output was written into a client shared memory region; the answer names it
    only (no data, no parameters), as the extension specifies."""
    out: dict = {"name": output_name, "datatype": datatype, "shape": list(arr.shape)}
    tail = b""
    if in_shm:
        binary = False
    elif binary:
        tail = binary_bytes(arr, datatype)
        out["parameters"] = {"binary_data_size": len(tail)}
    elif not in_shm:
        out["data"] = _json_data(arr, datatype)
    doc: dict = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = [out]
    if out.get("data") and datatype in ("FP16", "FP32", "FP64", "BF16") and not np.isfinite(arr).all():
        head = json.dumps(doc, separators=(",", ":")).encode()  # NaN, Infinity: as Triton writes them
    else:
        head = orjson.dumps(doc)
    if binary:
        return head + tail, len(head)
    return head, None
