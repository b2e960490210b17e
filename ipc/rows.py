"""Model answers as rows of bytes: what the scheduler, its cache and the response ring carry for
each query, as JSON text or as a typed row. The scheduler answers a batch whose queries all came
by the V2 route in typed rows (the V2 route copies them into its tensor) and every other batch in
JSON text, rendered once per batch (`render_scores`); the frontend renders a typed row that
reaches a JSON answer (`render_rows`).

A row is `bytes`, one of:

* **typed**: a 4-byte head, then the row's values in little-endian machine form. Head byte 0 is
  the kind (`F32`, `F64`, `I64`, `BOOL` one byte 0/1 per value, `STRING` UTF-8 text), or'ed
  with `VECTOR` when the row is a 1-D vector; bytes 1-3 the vector's width (0 for a scalar).
  A numeric row is exactly `max(width, 1) * itemsize` bytes after its head, so a run of rows
  with one head and one length is one `(n, width)` array.
* **JSON text**: defaults, ensemble answers, and models whose rows are other JSON values.
  JSON text never starts with a byte that starts a typed row (it starts with whitespace or one
  of ``[{"-0123456789tfnNI``), so the first byte says which a row is. An error cause (a row
  whose status is not OK) is neither; it is never rendered or read as a row.

Pure (numpy and orjson only): the scheduler's core, the scheduler and the frontend share it.
`render_rows(pack_rows(s)) == render_scores(s)`: one orjson call per run of rows, Triton's
spelling for non-finite floats. Two differences from the scheduler's rendering before typed rows
(`tests/unit/test_rows.py`): a boolean vector renders as a list (it rendered as the word true),
and a non-finite float switches only its own row to Python's json (it switched the whole batch,
which then wrote float32 values widened: 0.10000000149011612 for 0.1).
"""

from __future__ import annotations

import json

import numpy as np
import orjson

F32, F64, I64, BOOL, STRING = 1, 2, 3, 4, 5
VECTOR = 0x80
HEAD = 4
_MAX_WIDTH = (1 << 24) - 1
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
DTYPES = {F32: np.dtype("<f4"), F64: np.dtype("<f8"), I64: np.dtype("<i8"), BOOL: np.dtype("u1")}
_KINDS = {"<f4": F32, "<f8": F64, "<i8": I64, "|u1": BOOL}
TYPED_FIRST = frozenset(k | v for k in (F32, F64, I64, BOOL, STRING) for v in (0, VECTOR))
STRING_HEAD = bytes([STRING, 0, 0, 0])


class TextRows:
    """Model outputs that are not numbers: one UTF-8 string (kind "string") or one JSON text
    (kind "json") per row."""

    __slots__ = ("kind", "items")

    def __init__(self, kind: str, items: list[bytes]) -> None:
        self.kind = kind
        self.items = items

    @property
    def shape(self) -> tuple[int]:
        return (len(self.items),)


def head(kind: int, width: int | None = None) -> bytes:
    """The head of a typed row: a scalar (`width` None) or a vector of `width` values."""
    if width is None:
        return bytes([kind, 0, 0, 0])
    if not 0 <= width <= _MAX_WIDTH:
        raise ValueError(f"an answer row of {width} values; at most {_MAX_WIDTH}")
    return bytes([kind | VECTOR]) + width.to_bytes(3, "little")


def is_typed(row: bytes) -> bool:
    return len(row) >= HEAD and row[0] in TYPED_FIRST


def pack_rows(scores: np.ndarray | TextRows) -> list[bytes]:
    """One typed row (or JSON text, for `TextRows("json")`) per row of a model's scores: a
    normalized (n,) or (n, k) array of f4, f8, i8 or u1 (booleans), or `TextRows`."""
    if isinstance(scores, TextRows):
        if scores.kind == "json":
            return scores.items
        return [STRING_HEAD + s for s in scores.items]
    arr = scores
    kind = _KINDS.get(arr.dtype.str)
    if kind is None or arr.ndim not in (1, 2):
        raise ValueError(f"scores of {arr.dtype} and shape {arr.shape} are not a wire form")
    n = arr.shape[0]
    if arr.ndim == 2 and arr.shape[1] > _MAX_WIDTH:  # no head holds it: JSON text, as before
        return render_array(arr)
    h = head(kind) if arr.ndim == 1 else head(kind, arr.shape[1])
    rb = arr.itemsize * (arr.shape[1] if arr.ndim == 2 else 1)
    if rb == 0:
        return [h] * n
    if n <= 1:
        return [h + arr.tobytes()] if n else []
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    void = _VOIDS.get(rb)
    if void is None:
        void = _VOIDS.setdefault(rb, np.dtype((np.void, rb)))
    raw = arr.view(void)  # one bytes object per row from one tolist
    return [h + r for r in (raw.tolist() if arr.ndim == 1 else raw[:, 0].tolist())]


def render_scores(scores: np.ndarray | TextRows) -> list[bytes]:
    """JSON text of each row of a model's scores: `render_rows(pack_rows(scores))`, without
    the packing."""
    if isinstance(scores, TextRows):
        if scores.kind == "json":
            return scores.items
        return [orjson.dumps(t.decode(errors="replace")) for t in scores.items]
    return render_array(scores)


def render_array(arr: np.ndarray) -> list[bytes]:
    """JSON text of each row of an (n,) or (n, k) array: one orjson call cut into rows (from
    four rows on), booleans (u1) as true/false, float32 by their shortest decimal. A row with a
    non-finite float is written by Python's json: NaN, Infinity and -Infinity (Triton's
    spelling: Python's json and tritonclient read them back); its neighbours are not."""
    n = len(arr)
    if arr.dtype == np.uint8:  # booleans travel as bytes
        if arr.ndim == 1:
            return [b"true" if v else b"false" for v in arr.tolist()]
        arr = arr.astype(bool)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return [_row_text(r) for r in arr]
    if n < 4:
        return [orjson.dumps(np.ascontiguousarray(r) if arr.ndim > 1 else r, option=_NUMPY) for r in arr]
    # one orjson call per batch, cut into rows: numbers hold no "," and rows no "],["
    text = orjson.dumps(np.ascontiguousarray(arr), option=_NUMPY)
    if arr.ndim == 1:
        return text[1:-1].split(b",")
    if arr.shape[1] == 0:
        return [b"[]"] * n
    return [b"[" + r + b"]" for r in text[2:-2].split(b"],[")]


def _row_text(r) -> bytes:
    """One row (a value or a vector) on its own: orjson's text, or Python's json (NaN, Infinity)
    when it holds a non-finite float, float32 values by their shortest decimal either way."""
    if np.isfinite(r).all():
        return orjson.dumps(np.ascontiguousarray(r) if r.ndim else r, option=_NUMPY)
    if r.dtype == np.float32:
        r = r.astype(str).astype(np.float64)
    return json.dumps(r.tolist()).encode()


def _record(h: bytes) -> np.dtype | None:
    """The numpy record of one numeric typed row of head `h` (its head, then its values), or
    None when `h` is no numeric head."""
    rec = _RECORDS.get(h)
    if rec is None:
        dt = DTYPES.get(h[0] & ~VECTOR)
        if dt is None:
            return None
        width = int.from_bytes(h[1:4], "little")
        values = ("v", dt, (width,)) if h[0] & VECTOR else ("v", dt)
        rec = np.dtype([("h", "V4"), values])
        if len(_RECORDS) < 256:
            _RECORDS[h] = rec
    return rec


_RECORDS: dict[bytes, np.dtype] = {}
_VOIDS: dict[int, np.dtype] = {}


def _numeric(row: bytes) -> bool:
    """Whether `row` starts like a numeric typed row."""
    return len(row) >= HEAD and row[0] in TYPED_FIRST and row[0] & ~VECTOR != STRING


def _table(h: bytes, rb: int, n: int, joined: bytes) -> np.ndarray | None:
    """The `n` records (field "h": the head, "v": the values, (n,) or (n, width), strided views
    of `joined`) of numeric rows of head `h` and length `rb` joined, or None when that length
    is not the one the head gives."""
    rec = _record(h)
    if rec is None or rec.itemsize != rb:
        return None
    return np.frombuffer(joined, rec, n)


def runs(rows: list[bytes]):
    """(start, stop, array or None) over `rows`: maximal runs of numeric typed rows of one head
    and one length as one array; every other row on its own, with None."""
    n = len(rows)
    i = 0
    while i < n:
        r = rows[i]
        if not _numeric(r):
            yield i, i + 1, None
            i += 1
            continue
        h = r[:HEAD]
        rb = len(r)
        j = i + 1
        while j < n and len(rows[j]) == rb and rows[j][:HEAD] == h:
            j += 1
        t = _table(h, rb, j - i, b"".join(rows[i:j]) if j - i > 1 else r)
        yield i, j, None if t is None else t["v"]
        i = j


def render_rows(rows: list[bytes]) -> list[bytes]:
    """The JSON text of each row: typed rows rendered (a run of one head as one array), JSON
    text as it is. A row that only looks typed (an error cause) is returned as it is."""
    u = uniform(rows)
    if u is not None:
        return render_array(u[2])
    out: list[bytes] = []
    for i, j, arr in runs(rows):
        if arr is not None:
            out += render_array(arr)
            continue
        for r in rows[i:j]:
            if len(r) >= HEAD and r[:HEAD] == STRING_HEAD:
                out.append(orjson.dumps(r[HEAD:].decode(errors="replace")))
            else:
                out.append(r)
    return out


def uniform(rows: list[bytes]) -> tuple[int, bool, np.ndarray] | None:
    """(kind, vector, array) when every row is a numeric typed row of the first row's head, else
    None. A typed row's length follows from its head (`pack_rows`), and JSON text never starts
    like one, so heads at every multiple of the first row's length prove it: no loop per row."""
    n = len(rows)
    if not n or not _numeric(rows[0]):
        return None
    first = rows[0]
    h = first[:HEAD]
    rb = len(first)
    joined = first if n == 1 else b"".join(rows)
    if len(joined) != n * rb:
        return None
    t = _table(h, rb, n, joined)
    if t is None or (n > 1 and t["h"].tobytes() != h * n):
        return None
    return h[0] & ~VECTOR, bool(h[0] & VECTOR), t["v"]


def policy_input(row: bytes):
    """A model's answer row as a bandit policy's input: a float, a float64 vector, or None (not
    a number a policy can weigh). Equal to parsing the row's JSON text (`render_rows`): float32
    values go through their shortest decimal, as JSON carries them."""
    if not is_typed(row):
        return _json_input(row)
    kind = row[0] & ~VECTOR
    if kind == STRING:
        return None
    t = _table(row[:HEAD], len(row), 1, row)
    if t is None:
        return _json_input(row)
    arr = t["v"]
    if kind == F32:
        arr = arr.astype(str).astype(np.float64)
    elif kind == BOOL and not row[0] & VECTOR:
        return None  # JSON true/false: not a score
    if row[0] & VECTOR:
        return arr.reshape(-1).astype(np.float64)
    v = float(arr[0])
    return v if np.isfinite(v) else None


def _json_input(output: bytes):
    try:
        v = orjson.loads(output)
    except orjson.JSONDecodeError:  # NaN/Infinity tokens (see render_array) or not JSON
        try:
            v = json.loads(output)
        except ValueError:
            return None
    if isinstance(v, list):
        try:
            arr = np.asarray(v, dtype=np.float64).reshape(-1)
        except (ValueError, TypeError):  # ragged or not numbers: nothing a policy can weigh
            return None
        return arr
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v) if np.isfinite(v) else None  # a non-finite score counts as no answer
    return None
