"""arrow_lite writes real Arrow IPC messages (pyarrow reads them) and reads pyarrow's."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schooner.ipc import frames
from schooner.ipc.arrow_lite import FrameCodec, FrameError

MIXED = pa.schema([
    ("id", pa.uint64()), ("app", pa.uint16()), ("flag", pa.bool_()), ("x", pa.float64()),
    ("blob", pa.binary()), ("text", pa.string()), ("t", pa.list_(pa.float32(), 3)),
])  # fmt: skip


def columns(rows):
    ids = np.array([r[0] for r in rows], np.uint64)
    blobs = [r[1] for r in rows]
    off = np.zeros(len(rows) + 1, np.int32)
    np.cumsum([len(b) for b in blobs], out=off[1:])
    texts = [b.hex() for b in blobs]
    toff = np.zeros(len(rows) + 1, np.int32)
    np.cumsum([len(t) for t in texts], out=toff[1:])
    t = np.arange(3 * len(rows), dtype=np.float32).reshape(len(rows), 3)
    return [ids, ids.astype(np.uint16), ids % 2 == 1, ids * 0.5, (off, b"".join(blobs)),
            (toff, "".join(texts).encode()), t]


rows_st = st.lists(st.tuples(st.integers(0, 2**16 - 1), st.binary(max_size=20)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(rows_st)
def test_pyarrow_reads_what_arrow_lite_writes(rows):
    codec = FrameCodec(MIXED)
    slot = memoryview(bytearray(1 << 16))
    n = codec.write(slot, len(rows), columns(rows))
    batch = pa.ipc.read_record_batch(pa.py_buffer(slot[:n]), MIXED)
    batch.validate(full=True)
    assert batch.num_rows == len(rows)
    assert batch.column("id").to_pylist() == [r[0] for r in rows]
    assert batch.column("flag").to_pylist() == [r[0] % 2 == 1 for r in rows]
    assert batch.column("blob").to_pylist() == [r[1] for r in rows]
    assert batch.column("text").to_pylist() == [r[1].hex() for r in rows]
    assert batch.column("t").to_pylist() == [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(len(rows))]


@settings(max_examples=60, deadline=None)
@given(rows_st)
def test_arrow_lite_reads_what_pyarrow_writes(rows):
    cols = columns(rows)
    arrays = [
        pa.array(cols[0]), pa.array(cols[1]), pa.array(cols[2]), pa.array(cols[3]),
        pa.array([r[1] for r in rows], pa.binary()), pa.array([r[1].hex() for r in rows], pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(cols[6].reshape(-1)), 3),
    ]  # fmt: skip
    data = memoryview(pa.record_batch(arrays, schema=MIXED).serialize().to_pybytes())
    n, got = FrameCodec(MIXED).read(data)
    assert n == len(rows)
    assert got[0].tolist() == cols[0].tolist() and got[2].tolist() == cols[2].tolist()
    off, blob = got[4]
    assert [blob[off[i] - off[0] : off[i + 1] - off[0]].tobytes() for i in range(n)] == [r[1] for r in rows]
    assert np.array_equal(got[6], cols[6])


def test_list_column_is_a_zero_copy_writable_view():
    schema = frames.model_input_schema("floats", (2, 2))
    codec = FrameCodec(schema)
    buf = bytearray(4096)
    slot = memoryview(buf)
    codec.write(slot, 2, [np.arange(8, dtype=np.float32).reshape(2, 4)])
    _, (t,) = codec.read(slot)
    assert t.flags.writeable and t.shape == (2, 4)
    t[0, 0] = 42  # writes through to the slot
    assert codec.read(slot)[1][0][0, 0] == 42


def test_refuses_garbage_and_wrong_schema():
    codec = FrameCodec(frames.SUBMIT_SCHEMA)
    with pytest.raises(FrameError):
        codec.read(memoryview(b"\x00" * 64))
    other = FrameCodec(pa.schema([("x", pa.int64())]))
    slot = memoryview(bytearray(4096))
    other.write(slot, 1, [np.array([1])])
    with pytest.raises(FrameError, match="schema expects"):
        codec.read(slot)


def test_overflow_is_reported():
    codec = FrameCodec(pa.schema([("x", pa.int64())]))
    with pytest.raises(OverflowError):
        codec.write(memoryview(bytearray(100)), 100, [np.arange(100)])


def test_binary_data_may_be_a_list_of_chunks_copied_back_to_back():
    schema = pa.schema([("b", pa.binary())])
    codec = FrameCodec(schema)
    slot = memoryview(bytearray(4096))
    chunks = [b"ab", memoryview(b"cdef"), np.frombuffer(b"gh", np.uint8)]
    offsets = np.array([0, 1, 3, 6, 8], np.int32)  # rows need not align with chunks
    n = codec.write(slot, 4, [(offsets, chunks)])
    batch = pa.ipc.read_record_batch(pa.py_buffer(slot[:n]), schema)
    assert batch.column(0).to_pylist() == [b"a", b"bc", b"def", b"gh"]


@pytest.mark.parametrize("big", [False, True])
def test_chunks_joined_or_written_one_by_one_give_the_same_message(big):
    """Small chunks are joined before the copy (bytes, byte views and numpy arrays of any
    dtype alike), large ones copied one by one; so are chunks that are not plain contiguous
    buffers (a strided numpy view). Both give the message of the joined bytes."""
    from schooner.ipc import arrow_lite

    schema = pa.schema([("b", pa.binary())])
    codec = FrameCodec(schema)
    size = arrow_lite.JOIN_NBYTES if big else 4
    if big:  # one strided view: no join, each chunk viewed and copied on its own
        third = np.arange(2 * size, dtype=np.uint8)[::2]
    else:  # joined: a multi-byte numpy chunk too (size bytes of float32)
        third = np.arange(size // 4, dtype="<f4") + 0.5
    chunks = [b"x" * size, memoryview(b"y" * size), third, np.full(size, 7, np.uint8)]
    whole = b"".join(bytes(memoryview(np.ascontiguousarray(c)).cast("B")) for c in chunks)
    offsets = np.array([0, size, 2 * size, 3 * size, 4 * size], np.int32)
    slot = memoryview(bytearray(8 * size + 4096))
    n = codec.write(slot, 4, [(offsets, chunks)])
    slot2 = memoryview(bytearray(8 * size + 4096))
    assert codec.write(slot2, 4, [(offsets, whole)]) == n
    assert bytes(slot[:n]) == bytes(slot2[:n])
    batch = pa.ipc.read_record_batch(pa.py_buffer(slot[:n]), schema)
    assert b"".join(batch.column(0).to_pylist()) == whole


def test_a_model_error_too_long_for_the_slot_is_cut_not_raised():
    codec = frames.ScoresCodec()
    slot = memoryview(bytearray(4096))
    n = codec.write_error(slot, "ValueError: " + "x" * 20_000)
    assert n <= 4096
    scores, error = codec.read(slot[:n])
    assert scores is None and error.startswith("ValueError: xxx") and error.endswith("[cut]")
    n = codec.write_error(slot, "short")
    assert codec.read(slot[:n]) == (None, "short")


PRIMS = pa.schema([(f"c{i}", t) for i, t in enumerate(
    [pa.int8(), pa.uint8(), pa.int16(), pa.uint16(), pa.int32(), pa.uint32(), pa.int64(), pa.uint64(),
     pa.float32(), pa.float64()])])  # fmt: skip
_ANY_VALUE = st.one_of(
    st.integers(-(2**64), 2**64), st.floats(allow_nan=False, width=64), st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_prim_columns_given_as_lists_pack_as_numpy_converts_them(data):
    """A prim column given as a Python list is packed by `struct`; whatever struct refuses
    (out of range, not an integer, overflowing float32) goes through numpy. The bytes, or
    the error type, are those of numpy converting the list."""
    codec = FrameCodec(PRIMS)
    n = data.draw(st.integers(0, 6))
    cols = []
    for col in codec.cols:
        if col.dtype.kind == "f":
            values = data.draw(st.lists(st.floats(allow_nan=False, width=64) | st.integers(-(2**70), 2**70), min_size=n, max_size=n))
        else:
            info = np.iinfo(col.dtype)
            values = data.draw(st.lists(st.integers(info.min, info.max) | _ANY_VALUE, min_size=n, max_size=n))
        cols.append(values)
    as_lists = memoryview(bytearray(4096))
    as_arrays = memoryview(bytearray(4096))
    try:
        with np.errstate(over="ignore"):
            arrays = [np.asarray(v, dtype=c.dtype) for v, c in zip(cols, codec.cols, strict=True)]
    except (OverflowError, TypeError, ValueError) as e:
        with pytest.raises(type(e)):
            with np.errstate(over="ignore"):
                codec.write(as_lists, n, cols)
        return
    with np.errstate(over="ignore"):
        k = codec.write(as_lists, n, cols)
    assert codec.write(as_arrays, n, arrays) == k
    assert bytes(as_lists[:k]) == bytes(as_arrays[:k])
    batch = pa.ipc.read_record_batch(pa.py_buffer(as_lists[:k]), PRIMS)
    batch.validate(full=True)
    _, got = codec.read(as_lists[:k])
    assert all(np.array_equal(g, a, equal_nan=True) for g, a in zip(got, arrays, strict=True))


@settings(max_examples=60, deadline=None)
@given(rows_st)
def test_the_short_parse_of_own_messages_agrees_with_the_flatbuffer_walk(rows):
    from schooner.ipc.arrow_lite import _parse

    codec = FrameCodec(MIXED)
    slot = memoryview(bytearray(1 << 16))
    n = codec.write(slot, len(rows), columns(rows))
    assert codec._parse_own(slot[:n]) == _parse(slot[:n])
    # a message laid out otherwise (pyarrow's) takes the walk and reads the same
    theirs = memoryview(pa.ipc.read_record_batch(pa.py_buffer(slot[:n]), MIXED).serialize().to_pybytes())
    assert codec._parse_own(theirs) == _parse(theirs)
    _, a = codec.read(slot[:n])
    _, b = codec.read(theirs)
    assert a[0].tolist() == b[0].tolist() and np.array_equal(a[6], b[6])


def test_overflow_names_the_size_the_message_would_have():
    codec = FrameCodec(MIXED)
    rows = [(i, bytes(i)) for i in range(30)]
    slot = memoryview(bytearray(1 << 16))
    n = codec.write(slot, len(rows), columns(rows))
    for room in (0, 50, n // 2, n - 1):
        with pytest.raises(OverflowError, match=f"record batch of {n} bytes does not fit a slot of {room} bytes"):
            codec.write(memoryview(bytearray(room)), len(rows), columns(rows))
    assert codec.write(memoryview(bytearray(n)), len(rows), columns(rows)) == n


@settings(max_examples=40, deadline=None)
@given(rows_st)
def test_binary_offsets_given_as_a_list_or_an_array_give_the_same_message(rows):
    codec = FrameCodec(MIXED)
    cols = columns(rows)
    a, b = memoryview(bytearray(1 << 16)), memoryview(bytearray(1 << 16))
    n = codec.write(a, len(rows), cols)
    listed = [*cols[:4], (cols[4][0].tolist(), cols[4][1]), frames.binary_column([r[1].hex().encode() for r in rows]), cols[6]]
    assert codec.write(b, len(rows), listed) == n
    assert bytes(a[:n]) == bytes(b[:n])


_SUBMIT_ROW = st.tuples(
    st.integers(0, 2**64 - 1), st.integers(0, 2**16 - 1), st.integers(-(2**63), 2**63 - 1), st.integers(0, 255),
    st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=40), st.integers(0, 1),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(_SUBMIT_ROW, max_size=30), st.integers(0, 3))
def test_read_rows_gives_the_values_read_gives(rows, skip):
    """`read_rows` (lists and bytes) against `read` (numpy views), on the submit schema and on
    a schema with bool and list columns (which `read_rows` leaves to `read`); binary offsets
    that do not start at 0 (a writer that sliced) included."""
    codec = FrameCodec(frames.SUBMIT_SCHEMA)
    n = len(rows)
    cols = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(8)]
    blobs = cols[6]
    offsets = [skip + k for k in frames.binary_column(blobs)[0]]
    cols[6] = (offsets, b"x" * skip + b"".join(blobs))
    slot = memoryview(bytearray(1 << 16))
    k = codec.write(slot, n, cols)
    got_n, got = codec.read_rows(slot[:k])
    assert got_n == n
    assert got[:6] == [list(c) for c in cols[:6]]
    assert got[6] == blobs and all(type(b) is bytes for b in got[6]) and got[7] == cols[7]
    _, viewed = codec.read(slot[:k])
    assert [c.tolist() for c in viewed[:6]] == got[:6]
    mixed = FrameCodec(MIXED)
    m_rows = [(r[1], r[6]) for r in rows]
    k = mixed.write(slot, n, columns(m_rows))
    _, got = mixed.read_rows(slot[:k])
    assert got[0] == [r[0] for r in m_rows] and got[4] == [r[1] for r in m_rows]
    assert got[2].tolist() == [r[0] % 2 == 1 for r in m_rows]


_PADDED_CASES = [
    (frames.SUBMIT_SCHEMA, [[1, 2], [0, 0], [5, 5], [0, 0], [-1, -1], [7, 7], frames.binary_column([b"abc", b"de"]), [0, 1]]),
    (pa.schema([("b", pa.binary())]), [frames.binary_column([b"abc", b"de"])]),
    (pa.schema([("t", pa.list_(pa.uint8(), 5))]), [np.arange(10, dtype=np.uint8).reshape(2, 5)]),
]


@pytest.mark.parametrize(("schema", "cols"), _PADDED_CASES)
def test_a_slot_that_holds_the_last_column_but_not_its_padding_is_refused(schema, cols):
    """A message's size counts the last column's padding to 8 bytes: in a slot whose length
    is not a multiple of 8, one that ends within 7 bytes of the end does not fit (the ring
    would refuse to publish more bytes than the slot has)."""
    codec = FrameCodec(schema)
    n = codec.write(memoryview(bytearray(4096)), 2, cols)
    assert n % 8 == 0
    for room in range(n - 7, n):
        with pytest.raises(OverflowError, match=f"record batch of {n} bytes"):
            codec.write(memoryview(bytearray(room)), 2, cols)
    assert codec.write(memoryview(bytearray(n)), 2, cols) == n


def test_binary_items_of_a_column_whose_offsets_do_not_start_at_zero():
    offsets = np.array([3, 5, 8], np.int32)
    data = np.frombuffer(b"xxxabcde", np.uint8)
    assert frames.binary_items(offsets, data) == [b"ab", b"cde"]
    schema = pa.schema([("b", pa.binary()), ("f", pa.bool_())])  # a bool column: read_rows's fallback
    codec = FrameCodec(schema)
    slot = memoryview(bytearray(4096))
    k = codec.write(slot, 2, [([3, 5, 8], b"xxxabcde"), [True, False]])
    _, (items, flags) = codec.read_rows(slot[:k])
    assert items == [b"ab", b"cde"] and flags.tolist() == [True, False]
