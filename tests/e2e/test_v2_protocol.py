"""Open Inference Protocol end to end, with tritonclient (the protocol's reference client)."""

import socket
import time

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.serving import SchoonerServer

CONFIG = """
[[models]]
name = "summer"
version = "2"
entry_point = "tests.models:PickyModel"
input_type = "floats"
input_shape = [4]

[[models]]
name = "lengths"
entry_point = "tests.models:StringLengths"
input_type = "strings"

[[models]]
name = "nanbits"
entry_point = "tests.models:NanPayload"
input_type = "floats"
input_shape = [4]

[[apps]]
name = "nans"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 5000000
default_output = "0"
cache = false
models = ["nanbits"]

[[apps]]
name = "sums"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 5000000
default_output = "-1"
models = ["summer"]

[[apps]]
name = "strlen"
input_type = "strings"
latency_slo_micros = 5000000
default_output = "0"
models = ["lengths"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with SchoonerServer(tmp_path_factory.mktemp("v2"), CONFIG) as srv:
        yield srv
        assert srv.stop() == 0


@pytest.fixture
def client(server):
    c = triton.InferenceServerClient(f"{server.host}:{server.port}")
    yield c
    c.close()


def tensor(data, datatype, binary):
    t = triton.InferInput("input", list(data.shape), datatype)
    t.set_data_from_numpy(data, binary_data=binary)
    return t


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "schooner" and "binary_tensor_data" in meta["extensions"]
    m = client.get_model_metadata("sums")
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert m["versions"] == ["2"]
    assert client.is_model_ready("sums") and client.is_model_ready("summer", "2")
    cfg = client.get_model_config("summer")
    assert cfg["max_batch_size"] == 64 and cfg["input"][0]["data_type"] == "TYPE_FP32"


@pytest.mark.parametrize("binary", [False, True])
def test_infer_fp32_json_and_binary(client, binary):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = triton.InferRequestedOutput("output", binary_data=binary)
    res = client.infer("sums", [tensor(x, "FP32", binary)], outputs=[out], request_id="r-1")
    assert res.get_response()["id"] == "r-1"
    np.testing.assert_allclose(res.as_numpy("output"), x.sum(axis=1))


def test_float32_answers_keep_the_models_bits(client, server):
    """Answers travel typed to the frontend: a binary V2 output is the model's float32 values
    as they were; V2 JSON writes them widened to float64 (as Triton does), Clipper JSON by
    their shortest decimal."""
    x = np.array([[0.1, 0, 0, 0], [1 / 3, 0, 0, 0]], dtype=np.float32)
    want = x.sum(axis=1)
    res = client.infer("sums", [tensor(x, "FP32", True)], outputs=[triton.InferRequestedOutput("output", binary_data=True)])
    assert res.as_numpy("output").dtype == np.float32 and res.as_numpy("output").tobytes() == want.tobytes()
    res = client.infer("sums", [tensor(x, "FP32", False)], outputs=[triton.InferRequestedOutput("output", binary_data=False)])
    assert res.get_response()["outputs"][0]["data"] == want.tolist()

    def hits():
        time.sleep(0.1)  # the scheduler's statistics snapshot trails by at most 20 ms
        stats = client.get_inference_statistics("sums")["model_stats"][0]["inference_stats"]
        return stats["cache_hit"]["count"]

    before = hits()  # the V2 batch left typed rows in the cache: Clipper meets one and gets JSON
    status, body = server.predict("sums", {"input": [0.1, 0, 0, 0]})
    assert status == 200 and body["output"] == 0.1 and not body["default"]
    assert hits() == before + 1


def test_v2_batches_answer_typed_rows(client, server):
    """A batch of V2 queries travels as typed rows: the model's NaN bits reach a binary answer
    (JSON text would have turned them into the one NaN it has); Clipper's answer is JSON."""
    x = np.zeros((3, 4), dtype=np.float32)
    res = client.infer("nans", [tensor(x, "FP32", True)], outputs=[triton.InferRequestedOutput("output", binary_data=True)])
    assert res.as_numpy("output").tobytes() == b"\x01\x00\xc0\x7f" * 3
    status, body, _ = server.request("POST", "/nans/predict", b'{"input": [0, 0, 0, 0]}')
    assert status == 200 and b'"output":NaN' in body  # Triton's spelling; orjson refuses it, so raw bytes


def test_priority_and_timeout_parameters_are_accepted(client):
    x = np.ones((1, 4), dtype=np.float32) * 7
    res = client.infer("sums", [tensor(x, "FP32", True)], priority=1, timeout=2_000_000)
    np.testing.assert_allclose(res.as_numpy("output"), [28.0])


def test_infer_by_model_version_and_fp16_input(client):
    x = np.ones((2, 4), dtype=np.float16)
    res = client.infer("summer", [tensor(x, "FP16", True)], model_version="2")
    np.testing.assert_allclose(res.as_numpy("output"), [4.0, 4.0])
    assert res.get_response()["model_version"] == "2"


def test_bytes_tensors(client):
    x = np.array([b"a", b"hello", "héllo".encode()], dtype=np.object_)
    for binary in (False, True):
        res = client.infer("strlen", [tensor(x, "BYTES", binary)])
        assert res.as_numpy("output").tolist() == [1, 5, 5]


def test_unknown_model_and_version(client):
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [tensor(np.ones((1, 4), np.float32), "FP32", False)])
    with pytest.raises(InferenceServerException, match="unknown version '9'"):
        client.get_model_metadata("summer", "9")
    assert not client.is_model_ready("nope")


def test_wrong_datatype_and_shape_are_400(client, server):
    with pytest.raises(InferenceServerException, match="cannot be converted to FP32"):
        client.infer("sums", [tensor(np.ones((1, 4), np.float64), "FP64", False)])
    with pytest.raises(InferenceServerException, match=r"expected \[N, 4\]"):
        client.infer("sums", [tensor(np.ones((1, 5), np.float32), "FP32", False)])


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{oops", "malformed"),
        (b'{"inputs": []}', "non-empty list"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]}', "unknown datatype"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2]}]}', "shape says 4"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]}', "FP32"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3,4]}], "outputs": [{"name": "zz"}]}', "unknown output"),
        (b'{"parameters": {"priority": -1}, "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3,4]}]}', "priority"),
        (b'{"parameters": {"timeout": "soon"}, "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3,4]}]}', "timeout"),
    ],
)
def test_malformed_requests(server, body, fragment):
    status, parsed, _ = server.request("POST", "/v2/models/sums/infer", body)
    assert status == 400 and fragment in parsed["error"], parsed


def test_bf16_json_and_raw_binary_request(server):
    body = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BF16", "data": [1.5, 2, 3, 4]}]})
    status, parsed, _ = server.request("POST", "/v2/models/sums/infer", body)
    assert status == 200 and parsed["outputs"][0]["data"] == [10.5]
    raw = np.arange(8, dtype=np.float32).tobytes()  # two rows of four
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/sums/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 0\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, rest = data.split(b"\r\n\r\n", 1)
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        total = int(headers[b"Content-Length"])
        while len(rest) < total:
            rest += s.recv(65536)
    json_len = int(headers[b"Inference-Header-Content-Length"])
    doc = orjson.loads(rest[:json_len])
    assert doc["outputs"][0]["shape"] == [2]
    assert np.frombuffer(rest[json_len:], dtype=np.float32).tolist() == [6.0, 22.0]


def test_cuda_unregister_is_a_no_op_and_shm_is_off_by_default(server, client):
    assert server.request("POST", "/v2/cudasharedmemory/unregister", b"")[0] == 200
    status, body, _ = server.request("POST", "/v2/systemsharedmemory/region/x/register", b'{"key": "/x", "byte_size": 4}')
    assert status == 400 and "--allow-client-shm" in body["error"]
    assert "system_shared_memory" not in client.get_server_metadata()["extensions"]


def test_metrics_parse_and_count_the_traffic(server, client):
    def families():
        status, text, _ = server.request("GET", "/metrics")
        assert status == 200
        return {f.name: f for f in text_string_to_metric_families(text.decode() if isinstance(text, bytes) else text)}

    def value(fams, name, **labels):
        if name not in fams:
            return 0.0
        for s in fams[name].samples:
            if s.name == name + "_total" or s.name == name:
                if all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0

    time.sleep(0.1)  # the scheduler's snapshot trails by at most 20 ms: let earlier tests' traffic land
    before = families()
    x = np.arange(20, dtype=np.float32).reshape(5, 4) + 1000  # unseen inputs: no cache hits
    client.infer("sums", [tensor(x, "FP32", True)])
    deadline = time.monotonic() + 10
    sent_before = value(before, "schooner_model_queries", model="summer")
    while value(families(), "schooner_model_queries", model="summer") < sent_before + 5:  # snapshots trail
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.1)
    after = families()
    assert value(after, "schooner_model_queries", model="summer") - sent_before == 5
    assert value(after, "schooner_app_queries", app="sums") - value(before, "schooner_app_queries", app="sums") == 5
    assert value(after, "schooner_http_requests", code="200") > value(before, "schooner_http_requests", code="200")
    assert after["schooner_model_latency_seconds"].type == "histogram"


def test_statistics_are_real_and_grow(server, client):
    assert "statistics" in client.get_server_metadata()["extensions"]

    def stats():
        return client.get_inference_statistics("summer", "2")["model_stats"][0]

    before = stats()
    x = np.arange(12, dtype=np.float32).reshape(3, 4) + 5000  # unseen: computed, not cached
    client.infer("summer", [tensor(x, "FP32", True)], model_version="2")
    deadline = time.monotonic() + 10
    while stats()["inference_count"] < before["inference_count"] + 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    after = stats()
    assert after["execution_count"] > before["execution_count"]
    inf = after["inference_stats"]
    assert inf["success"]["count"] >= before["inference_stats"].get("success", {}).get("count", 0) + 3
    assert inf["queue"]["count"] >= 3 and inf["compute_infer"]["ns"] > 0
    assert after["batch_stats"] and after["last_inference"] > 0


ORDERED = """
[[models]]
name = "ordered"
entry_point = "tests.models:OrderRecorder"
input_type = "floats"
input_shape = [4]
max_batch_size = 1
replicas = 1
init_args = {{ marker_path = "{marker}" }}

[[apps]]
name = "ordered"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 60000000
default_output = "-1"
cache = false
models = ["ordered"]
"""


def infer_bytes(tag: int, hold_ms: int, **parameters) -> bytes:
    doc = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [tag, hold_ms, 0, 0]}]}
    if parameters:
        doc["parameters"] = parameters
    body = orjson.dumps(doc)
    return b"POST /v2/models/ordered/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def read_answers(sock: socket.socket, n: int) -> list[tuple[int, dict]]:
    """`n` pipelined responses (Content-Length framed) as (status, JSON body)."""
    f = sock.makefile("rb")
    out = []
    for _ in range(n):
        status = int(f.readline().split()[1])
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        out.append((status, orjson.loads(f.read(int(headers["content-length"])))))
    return out


def test_priority_changes_the_order_and_timeout_the_deadline(tmp_path):
    """One replica serving one query at a time (each batch holds the model for the ms its input
    asks): while a long batch runs, 20 queries at the default priority are queued, then 5 at
    priority 1 and one with a 100 ms `parameters.timeout`, all in one pipelined write. The model
    sees the priority-1 queries before the default ones queued earlier; the timed-out one gets
    the default output (counted in `parameters.schooner_defaults`) and never reaches the model,
    while the same request without a timeout gets the model's answer."""
    marker = tmp_path / "order"
    with SchoonerServer(tmp_path, ORDERED.format(marker=marker)) as srv:
        def served() -> list[int]:
            return [int(x) for x in marker.read_text().split()] if marker.exists() else []

        with socket.create_connection((srv.host, srv.port), timeout=120) as blocker, \
                socket.create_connection((srv.host, srv.port), timeout=120) as s:
            blocker.sendall(infer_bytes(0, 3000))  # holds the only replica for 3 s
            deadline = time.monotonic() + 60
            while served() != [0]:
                assert time.monotonic() < deadline, served()
                time.sleep(0.01)
            default = list(range(100, 120))
            urgent = list(range(200, 205))
            s.sendall(b"".join([*(infer_bytes(t, 20) for t in default),
                                *(infer_bytes(t, 20, priority=1) for t in urgent),
                                infer_bytes(300, 20, timeout=100_000)]))
            answers = read_answers(s, 26)
            assert read_answers(blocker, 1)[0][1]["outputs"][0]["data"] == [3000.0]
        for tag, (status, doc) in zip(default + urgent, answers, strict=False):
            assert status == 200 and doc["outputs"][0]["data"] == [tag + 20.0], (tag, doc)
            assert "schooner_defaults" not in (doc.get("parameters") or {}), (tag, doc)
        status, doc = answers[-1]
        assert status == 200 and doc["outputs"][0]["data"] == [-1.0], doc
        assert doc["parameters"]["schooner_defaults"] == 1, doc
        order = served()
        assert sorted(order) == sorted([0, *default, *urgent]), order  # the timed-out one never ran
        for t in urgent:
            later_defaults = [d for d in default if order.index(d) > order.index(t)]
            assert len(later_defaults) >= 15, (t, order)  # served before most default-priority ones
        status, body, _ = srv.request("POST", "/v2/models/ordered/infer", infer_bytes(300, 20).split(b"\r\n\r\n", 1)[1])
        assert status == 200 and body["outputs"][0]["data"] == [320.0], body
        assert "schooner_defaults" not in (body.get("parameters") or {}), body
        assert served().count(300) == 1
        assert srv.stop() == 0
