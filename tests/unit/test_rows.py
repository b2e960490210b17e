"""Typed answer rows (`schooner.ipc.rows`): what the scheduler packs, the frontend renders
and the V2 route copies must be what the scheduler's JSON gave. The oracles: `old_scores` (a
policy's input parsed from a row's JSON) and `rows_to_tensor` (the V2 tensor parsed from the
rows' JSON) are the code before typed rows, unchanged; `old_render` is the scheduler's JSON of
a batch before typed rows with the two changes its docstring names (pinned by
`test_boolean_vectors_render_as_lists` and `test_a_non_finite_float_changes_only_its_row`)."""

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from schooner.frontend.v2 import DATATYPES, answer_tensor, bf16_to_float32, rows_to_tensor
from schooner.ipc import rows
from schooner.ipc.rows import TextRows

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def old_render(scores) -> list[bytes]:
    """The scheduler's `render_outputs` before typed rows, rendering each row on its own, with
    two changes: a boolean vector renders as a list (it rendered as the word true, see
    `test_boolean_vectors_render_as_lists`), and a non-finite float switches only its own row
    to Python's json (it switched the whole batch, which then wrote float32 values widened to
    float64: 0.10000000149011612 for 0.1), float32 values by their shortest decimal."""
    if isinstance(scores, TextRows):
        if scores.kind == "json":
            return scores.items
        return [orjson.dumps(t.decode(errors="replace")) for t in scores.items]
    if scores.dtype == np.uint8 and scores.ndim == 1:
        return [b"true" if v else b"false" for v in scores.tolist()]
    if scores.dtype == np.uint8:
        scores = scores.astype(bool)
    out = []
    for r in scores:
        if np.isfinite(r).all():
            out.append(orjson.dumps(np.ascontiguousarray(r) if np.ndim(r) else r, option=_NUMPY))
        else:
            out.append(json.dumps((r.astype(str).astype(np.float64) if r.dtype == np.float32 else r).tolist()).encode())
    return out


def old_scores(output: bytes):
    try:
        v = orjson.loads(output)
    except orjson.JSONDecodeError:
        try:
            v = json.loads(output)
        except ValueError:
            return None
    if isinstance(v, list):
        try:
            return np.asarray(v, dtype=np.float64).reshape(-1)
        except (ValueError, TypeError):
            return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v) if np.isfinite(v) else None
    return None


RNG = np.random.default_rng(3)
CASES = [
    RNG.standard_normal(64).astype(np.float32),
    RNG.standard_normal((64, 10)).astype(np.float32),
    RNG.standard_normal((5, 3)).astype(np.float64),
    RNG.integers(-(2**62), 2**62, 9).astype(np.int64),
    RNG.integers(-5, 5, (7, 3)).astype(np.int64),
    np.zeros((6, 1), np.float32),
    np.zeros((5, 0), np.float32),
    np.zeros(0, np.float32),
    np.zeros((0, 4), np.float32),
    np.array([1e30, -1e-30, 0.0, -0.0, 3.4e38], np.float32),
    np.arange(12, dtype=np.int64).reshape(4, 3)[:, ::-1],  # not contiguous
    np.array([1.5, 2.5], np.float32),  # short batches take the per-row path
    np.array([[np.nan, 1.0], [np.inf, -np.inf], [0, 0], [1, 2]], np.float32),
    np.array([1, 0, 1, 1, 0], np.uint8),
    np.array([[1, 0], [0, 0], [1, 1], [0, 1]], np.uint8),
]


@pytest.mark.parametrize("scores", CASES, ids=[f"{c.dtype}{list(c.shape)}" for c in CASES])
def test_rendering_packed_rows_equals_rendering_each_row(scores):
    assert rows.render_rows(rows.pack_rows(scores)) == old_render(scores)
    assert rows.render_array(np.asarray(scores)) == old_render(scores)


def test_spellings():
    r = rows.render_rows(rows.pack_rows(np.array([[np.nan, 1.0], [np.inf, -np.inf], [0, 0], [1, 2]], np.float32)))
    assert r[1] == b"[Infinity, -Infinity]" and json.loads(r[3]) == [1.0, 2.0]
    assert rows.render_rows(rows.pack_rows(TextRows("string", [b'say "hi"', b"b"]))) == [b'"say \\"hi\\""', b'"b"']
    assert rows.pack_rows(TextRows("json", [b'{"a":1}'])) == [b'{"a":1}']


def test_boolean_vectors_render_as_lists():
    """Before typed rows a boolean vector rendered as the single word true."""
    assert rows.render_rows(rows.pack_rows(np.array([[1, 0], [0, 0]], np.uint8))) == [b"[true,false]", b"[false,false]"]


def test_a_non_finite_float_changes_only_its_row():
    """Before typed rows a NaN anywhere in a batch wrote every float32 of it widened."""
    for pack in (rows.pack_rows, lambda a: a):
        out = rows.render_rows(pack(np.array([0.1, np.nan, 2.5, 1 / 3], np.float32))) if pack is rows.pack_rows \
            else rows.render_array(np.array([0.1, np.nan, 2.5, 1 / 3], np.float32))
        assert out == [b"0.1", b"NaN", b"2.5", b"0.33333334"]


def test_a_row_too_wide_for_a_head_is_json(monkeypatch):
    """A head holds a width up to 2**24 - 1 (here made 3); a wider row is answered as JSON
    text, not refused (a refusal raised in the scheduler)."""
    monkeypatch.setattr(rows, "_MAX_WIDTH", 3)
    assert rows.pack_rows(np.zeros((2, 4), np.uint8)) == [b"[false,false,false,false]"] * 2
    assert rows.is_typed(rows.pack_rows(np.zeros((2, 3), np.uint8))[0])


def test_json_text_never_starts_like_a_typed_row():
    for text in [b"0", b"-1", b'"s"', b"[1]", b"{}", b"true", b"false", b"null", b"NaN", b"Infinity", b" 1", b"\t1", b"\n1", b"\r1"]:
        assert not rows.is_typed(text + b"xxxx")


def test_a_row_that_only_looks_typed_is_passed_through():
    odd = bytes([rows.F32, 0, 0, 0]) + b"abcdefg"  # 7 bytes is no float32
    assert rows.render_rows([odd, b"1"]) == [odd, b"1"]
    assert rows.policy_input(odd) is None


_arrays = st.one_of(
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8]),
               st.tuples(st.integers(0, 9)) | st.tuples(st.integers(0, 9), st.integers(0, 5)),
               elements={"allow_subnormal": True}),
)


def _normalized(arr):
    if arr.dtype == np.uint8:
        return (arr % 2).astype(np.uint8)
    return arr


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_arrays, min_size=1, max_size=4), json_rows=st.lists(st.sampled_from([b"null", b'"d"', b"[1,2]", b"7"]), max_size=3))
def test_messages_mixing_forms_render_as_their_rows_did(parts, json_rows):
    """A response message mixes models, defaults and JSON rows: each row renders as the
    scheduler rendered it, whatever its neighbours."""
    packed, expected = [], []
    for arr in map(_normalized, parts):
        packed += rows.pack_rows(arr)
        expected += old_render(arr) if len(arr) else []
        for j in json_rows[:1]:
            packed.append(j)
            expected.append(j)
    assert rows.render_rows(packed) == expected


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and a == b
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@settings(max_examples=300, deadline=None)
@given(arr=_arrays)
def test_policy_input_equals_parsing_the_json(arr):
    arr = _normalized(arr)
    for packed, text in zip(rows.pack_rows(arr), old_render(arr), strict=True):
        assert _same(rows.policy_input(packed), old_scores(text)), (packed, text)


def test_policy_input_of_float32_goes_through_the_shortest_decimal():
    (row,) = rows.pack_rows(np.array([0.1], np.float32))
    assert rows.policy_input(row) == 0.1
    (row,) = rows.pack_rows(np.array([[0.1, 1 / 3]], np.float32))
    assert list(rows.policy_input(row)) == [0.1, 0.33333334]


@settings(max_examples=300, deadline=None)
@given(arr=_arrays, datatype=st.sampled_from([None, *DATATYPES]), defaults=st.booleans())
def test_v2_tensor_of_typed_rows_equals_parsing_their_json(arr, datatype, defaults):
    arr = _normalized(arr)
    if not len(arr):
        return
    packed = rows.pack_rows(arr)
    texts = old_render(arr)
    if defaults:  # a default among the rows: the JSON path, as before
        packed[0] = texts[0] = b"0"
    try:
        want = rows_to_tensor(texts, datatype)
    except (ValueError, TypeError, OverflowError) as e:
        with pytest.raises(type(e)):
            answer_tensor(packed, datatype)
        return
    got = answer_tensor(packed, datatype)
    assert got[1] == want[1]
    assert got[0].dtype == want[0].dtype and got[0].shape == want[0].shape
    if want[0].dtype == object:
        assert list(got[0]) == list(want[0])
    else:  # NaN may differ in sign or payload: typed rows keep the model's bits, JSON has one NaN
        g, w = (bf16_to_float32(got[0]), bf16_to_float32(want[0])) if want[1] == "BF16" else (got[0], want[0])
        same = np.array_equal(g, w, equal_nan=w.dtype.kind == "f")
        assert same or got[0].tobytes() == want[0].tobytes(), (arr, datatype)


def test_v2_tensor_copies_float32_rows():
    packed = rows.pack_rows(np.array([[0.1, 0.2], [0.3, 0.4]], np.float32))
    arr, dt = answer_tensor(packed, "FP32")
    assert dt == "FP32" and arr.tobytes() == np.array([[0.1, 0.2], [0.3, 0.4]], np.float32).tobytes()
