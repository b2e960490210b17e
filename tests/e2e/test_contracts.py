"""Contract corners of both protocols: answers that are strings, objects, non-finite floats or
too large; output metadata from what a model returns; perf_analyzer's addressing; stats of
every model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tritonclient.http as triton

from tests.serving import SchoonerServer, until

CONFIG = """
[server]
response_slot_nbytes = 1048576

[[models]]
name = "names"
version = "3"
entry_point = "tests.fault_models:ClassNames"
input_type = "floats"
input_shape = [2]

[[models]]
name = "records"
entry_point = "tests.fault_models:Records"
input_type = "floats"
input_shape = [2]

[[models]]
name = "nonfinite"
entry_point = "tests.fault_models:NonFinite"
input_type = "floats"
input_shape = [2]

[[models]]
name = "huge"
entry_point = "tests.fault_models:Huge"
input_type = "floats"
input_shape = [2]
max_batch_size = 1

[[models]]
name = "ints"
entry_point = "tests.fault_models:Ints"
input_type = "floats"
input_shape = [2]

[[models]]
name = "declared"
entry_point = "tests.fault_models:NonFinite"
input_type = "floats"
input_shape = [2]
output_type = "FP32"
output_shape = [4]

[[apps]]
name = "animals"
input_type = "floats"
input_shape = [2]
latency_slo_micros = 10000000
default_output = "unknown"
models = ["names"]

[[apps]]
name = "recs"
input_type = "floats"
input_shape = [2]
latency_slo_micros = 10000000
models = ["records"]

[[apps]]
name = "nf"
input_type = "floats"
input_shape = [2]
latency_slo_micros = 10000000
models = ["nonfinite"]

[[apps]]
name = "big"
input_type = "floats"
input_shape = [2]
latency_slo_micros = 10000000
models = ["huge"]

[[apps]]
name = "sum"
input_type = "floats"
input_shape = [2]
latency_slo_micros = 10000000
default_output = "-1"
models = ["ints"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with SchoonerServer(tmp_path_factory.mktemp("contracts"), CONFIG) as srv:
        yield srv
        assert srv.stop() == 0


@pytest.fixture
def client(server):
    c = triton.InferenceServerClient(f"{server.host}:{server.port}")
    yield c
    c.close()




def _input(x: np.ndarray) -> triton.InferInput:
    t = triton.InferInput("input", list(x.shape), "FP32")
    t.set_data_from_numpy(x, binary_data=False)
    return t


def test_string_answers_are_json_strings_and_v2_bytes(server, client):
    status, body = server.predict("animals", {"input_batch": [[0, 0], [1, 0], [2, 5]]})
    assert status == 200, body
    assert [p["output"] for p in body["batch_predictions"]] == ["cat", "dog", "bird"]
    res = client.infer("animals", [_input(np.array([[3, 0], [1, 1]], dtype=np.float32))])
    assert [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("output").tolist()] == ["fish", "dog"]
    until(lambda: client.get_model_metadata("animals")["outputs"][0]["datatype"] == "BYTES", "learned BYTES output")


def test_object_answers_are_embedded_as_json(server):
    status, body = server.predict("recs", {"input": [2, 3]})
    assert status == 200, body
    assert body["output"] == {"sum": 5.0, "first": 2.0}


def test_non_finite_floats_are_written_as_triton_writes_them(server, client):
    status, raw, _ = server.request("POST", "/nf/predict", b'{"input": [7, 0]}')
    assert status == 200
    text = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    doc = json.loads(text)  # Python's json reads NaN and Infinity
    out = doc["output"]
    assert math.isnan(out[0]) and out[1] == math.inf and out[2] == -math.inf and out[3] == 7.0
    for binary in (False, True):
        res = client.infer("nf", [_input(np.array([[1, 0]], dtype=np.float32))],
                           outputs=[triton.InferRequestedOutput("output", binary_data=binary)])
        got = res.as_numpy("output")
        np.testing.assert_array_equal(got, np.array([[np.nan, np.inf, -np.inf, 1.0]], dtype=np.float32))


def test_an_answer_larger_than_the_response_slot_is_500_and_the_server_keeps_serving(server):
    status, body = server.predict("big", {"input": [1, 2]})
    assert status == 500, body
    assert "response slot" in body["cause"] and "1048576" in body["cause"]
    status, body = server.predict("sum", {"input": [1, 2]})
    assert status == 200 and body["output"] == 3
    assert server.proc.poll() is None


def test_output_metadata_is_declared_or_learned(server, client):
    meta = client.get_model_metadata("declared")
    assert meta["outputs"][0] == {"name": "output", "datatype": "FP32", "shape": [-1, 4]}
    assert server.predict("sum", {"input": [1, 2]})[0] == 200
    # the scheduler publishes what it learned at the end of the turn that answered
    until(lambda: client.get_model_metadata("sum")["outputs"][0]["datatype"] == "INT64", "learned INT64 output")
    meta = client.get_model_metadata("sum")
    assert meta["outputs"][0] == {"name": "output", "datatype": "INT64", "shape": [-1]}
    cfg = client.get_model_config("sum")
    assert cfg["output"][0]["data_type"] == "TYPE_INT64"
    res = client.infer("sum", [_input(np.array([[1, 2], [3, 4]], dtype=np.float32))])
    assert res.as_numpy("output").dtype == np.int64
    assert res.as_numpy("output").tolist() == [3, 7]


def test_apps_answer_on_their_versions_path_as_perf_analyzer_asks(server, client):
    assert client.is_model_ready("animals", "3")
    meta = client.get_model_metadata("animals", "3")
    assert meta["versions"] == ["3"]
    res = client.infer("animals", [_input(np.array([[0, 0]], dtype=np.float32))], model_version="3")
    assert res.as_numpy("output").tolist() in ([b"cat"], ["cat"])
    status, body, _ = server.request("GET", "/v2/models/animals/versions/9")
    assert status == 404 and "available: 3" in body["error"]


def test_stats_of_every_model(server, client):
    assert server.predict("sum", {"input": [5, 5]})[0] == 200
    stats = client.get_inference_statistics()
    names = {s["name"] for s in stats["model_stats"]}
    assert {"names", "records", "nonfinite", "huge", "ints", "declared"} <= names
