"""Request decoding and validation: each bad input gets a 4xx naming what was expected."""

import base64

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schooner.engine.config import AppConfig, ModelConfig
from schooner.frontend.codec import (
    InputCodec,
    RequestError,
    decode_predict,
    encode_batch,
    encode_prediction,
)


def app(input_type="floats", shape=(4,)):
    return AppConfig("a", input_type, shape, 1000, "-1", ("m",))


MODEL = ModelConfig("m", "1", "x:y", "floats", (4,))


def test_floats_accept_ints_and_encode_little_endian_float32():
    c = InputCodec(app())
    assert c.encode([1, 2.5, 3, 4]) == np.array([1, 2.5, 3, 4], "<f4").tobytes()


def test_multi_dim_shape_accepts_nested_and_flat():
    c = InputCodec(app(shape=(2, 2)))
    assert c.encode([[1, 2], [3, 4]]) == c.encode([1, 2, 3, 4])


@pytest.mark.parametrize(
    "item, fragment",
    [
        ([1, 2, 3], "shape [3]"),
        ("abc", "got a string"),
        ([1, "2", 3, 4], "got strings"),
        ([True, False, True, True], "booleans"),
        ([[1, 2], [3]], "ragged"),
        ([1, None, 3, 4], "mixed"),
        (None, "got null"),
        ({"x": 1}, "got an object"),
    ],
)
def test_bad_numeric_inputs_name_the_expected_schema(item, fragment):
    with pytest.raises(RequestError) as e:
        InputCodec(app()).encode(item)
    assert e.value.status == 400
    assert fragment in e.value.cause
    assert "JSON array of numbers with shape [4]" in e.value.cause


def test_ints_reject_fractions_and_out_of_range():
    c = InputCodec(app("ints", (2,)))
    assert c.encode([1, -2]) == np.array([1, -2], "<i4").tobytes()
    with pytest.raises(RequestError, match="non-integer"):
        c.encode([1.5, 2])
    with pytest.raises(RequestError, match="int32 range"):
        c.encode([2**40, 1])


def test_strings_and_bytes():
    assert InputCodec(app("strings", ())).encode("héllo") == "héllo".encode()
    assert InputCodec(app("bytes", ())).encode(base64.b64encode(b"\x00\x01").decode()) == b"\x00\x01"
    with pytest.raises(RequestError, match="base64"):
        InputCodec(app("bytes", ())).encode("not base64!")
    with pytest.raises(RequestError, match="JSON string"):
        InputCodec(app("strings", ())).encode([1])


def test_decode_predict_shapes():
    assert decode_predict(b'{"input": [1,2,3,4]}', app(), MODEL) == ([[1, 2, 3, 4]], False)
    assert decode_predict(b'{"input_batch": [[1],[2]]}', app(), MODEL) == ([[1], [2]], True)
    assert decode_predict(b'{"input": [1], "version": "1"}', app(), MODEL)[1] is False


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1,2]", 400, "JSON object"),
        (b"{}", 400, 'missing "input"'),
        (b'{"input": [1], "input_batch": [[1]]}', 400, "not both"),
        (b'{"input_batch": []}', 400, "non-empty"),
        (b'{"inputs": [1]}', 400, "unexpected key"),
        (b'{"input": [1], "version": "7"}', 400, "Requested version: 7 does not exist for model: m"),
    ],
)
def test_decode_predict_errors(body, status, fragment):
    with pytest.raises(RequestError) as e:
        decode_predict(body, app(), MODEL)
    assert e.value.status == status and fragment in e.value.cause
    assert set(orjson.loads(e.value.body())) == {"error", "cause"}


def test_encoders_produce_the_clipper_shapes():
    one = orjson.loads(encode_prediction(3, b"[1.5,2]", False, None))
    assert one == {"query_id": 3, "output": [1.5, 2], "default": False}
    d = orjson.loads(encode_prediction(4, b"-1", True, "why"))
    assert d == {"query_id": 4, "output": -1, "default": True, "default_explanation": "why"}
    assert orjson.loads(encode_batch([encode_prediction(1, b"1", False, None)])) == {
        "batch_predictions": [{"query_id": 1, "output": 1, "default": False}]
    }


_ELEMENTS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.floats(min_value=-3.5e38, max_value=3.5e38),
    st.integers(min_value=-(2**53), max_value=2**53), st.integers(min_value=-(2**31) - 2, max_value=2**31 + 1),
    st.booleans(), st.none(), st.text(max_size=2), st.lists(st.floats(allow_nan=False), max_size=2),
)


@pytest.mark.parametrize("input_type", ["floats", "doubles", "ints"])
@settings(max_examples=300, deadline=None)
@given(item=st.one_of(st.lists(_ELEMENTS, min_size=4, max_size=4), st.lists(st.sampled_from([1, 2.5, True]), max_size=5)))
def test_the_packed_fast_path_encodes_and_refuses_as_numpy_does(input_type, item):
    """A flat list of the input's width is packed by struct; it must give numpy's bytes, or
    refuse (with numpy's message) exactly what numpy refuses."""
    fast = InputCodec(app(input_type))
    slow = InputCodec(app(input_type))
    slow._pack = None  # the general (numpy) path only
    try:
        want = slow.encode(item)
    except RequestError as e:
        with pytest.raises(RequestError) as got:
            fast.encode(item)
        assert (got.value.status, got.value.cause) == (e.status, e.cause)
        return
    assert fast.encode(item) == want


def test_floats_overflowing_both_ways_are_refused_not_crashed():
    c = InputCodec(app())
    with pytest.raises(RequestError, match="float32 range"):
        c.encode([0.0, 0.0, 3.5e38, -3.5e38])
