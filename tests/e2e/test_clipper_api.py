"""`schooner serve` as a user runs it, driven over real sockets with a real HTTP client."""

import socket
import time

import pytest
from sklearn.datasets import load_digits

from tests.serving import ClientThread, SchoonerServer, finish, start, until

CONFIG = """
[[models]]
name = "mlp"
version = "3"
entry_point = "tests.models:TorchMLP"
input_type = "floats"
input_shape = [16]
max_batch_size = 16

[[models]]
name = "picky"
entry_point = "tests.models:PickyModel"
input_type = "doubles"
input_shape = [2, 2]

[[apps]]
name = "mlp"
input_type = "floats"
input_shape = [16]
latency_slo_micros = 5000000
default_output = "-1"
models = ["mlp"]

[[apps]]
name = "picky"
input_type = "doubles"
input_shape = [2, 2]
latency_slo_micros = 5000000
default_output = "-1"
models = ["picky"]

[[apps]]
name = "orphan"
input_type = "strings"
latency_slo_micros = 5000000
default_output = "{\\"label\\": \\"unknown\\"}"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clipper")
    with SchoonerServer(tmp, CONFIG, "--frontends", "2") as srv:
        yield srv
        assert srv.stop() == 0


def test_single_and_batch_predictions(server):
    status, body = server.predict("mlp", {"input": list(range(16))})
    assert status == 200 and body["default"] is False and len(body["output"]) == 4
    assert isinstance(body["query_id"], int)
    status, batch = server.predict("mlp", {"input_batch": [list(range(16)), [0] * 16, list(range(16))]})
    preds = batch["batch_predictions"]
    assert status == 200 and len(preds) == 3
    # same input, same answer (up to float rounding of a different batch size), in order
    assert preds[0]["output"] == pytest.approx(body["output"], rel=1e-4)
    assert preds[2]["output"] == pytest.approx(body["output"], rel=1e-4)
    assert preds[1]["output"] != pytest.approx(preds[0]["output"], rel=1e-4)


def test_batch_of_one_stays_a_batch_and_version_pin(server):
    status, body = server.predict("mlp", {"input_batch": [[1] * 16]})
    assert status == 200 and len(body["batch_predictions"]) == 1
    assert server.predict("mlp", {"input": [1] * 16, "version": "3"})[0] == 200
    status, body = server.predict("mlp", {"input": [1] * 16, "version": "9"})
    assert status == 400 and body["cause"] == "Requested version: 9 does not exist for model: mlp"


def test_multi_dimensional_input_and_model_errors_keep_the_worker_alive(server):
    status, body = server.predict("picky", {"input": [[1, 2], [3, 4]]})
    assert (status, body["output"]) == (200, 10.0)
    status, body = server.predict("picky", {"input": [-1, 2, 3, 4]})
    assert status == 500 and set(body) == {"error", "cause"} and "negative first feature" in body["cause"]
    # the traceback is in the server's log, naming the model process
    until(lambda: "predict failed" in server.log() and "ValueError: negative first feature" in server.log(),
          "the model's traceback in the log", 30)
    assert "model[picky:" in server.log()
    assert server.predict("picky", {"input": [1, 1, 1, 1]})[1]["output"] == 4.0


def test_app_without_model_answers_its_default(server):
    status, body = server.predict("orphan", {"input": "hello"})
    assert status == 200 and body["default"] is True
    assert body["output"] == {"label": "unknown"}
    assert body["default_explanation"] == "No connected models found for query"


@pytest.mark.parametrize(
    "path, method, body, status, fragment",
    [
        ("/mlp/predict", "POST", b"{oops", 400, "not valid JSON"),
        ("/mlp/predict", "POST", b"{}", 400, 'missing "input"'),
        ("/mlp/predict", "POST", b'{"input": [1, 2]}', 400, "shape [16]"),
        ("/mlp/predict", "POST", b'{"input": "abc"}', 400, "JSON array of numbers"),
        ("/mlp/predict", "POST", b'{"input_batch": [[1], "x"]}', 400, "shape [16]"),
        ("/nope/predict", "POST", b'{"input": [1]}', 404, "no application named 'nope'"),
        ("/mlp/predict", "GET", None, 405, "accepts POST"),
        ("/v2/health/ready", "POST", b"", 405, "accepts GET"),
        ("/somewhere", "GET", None, 404, "no route"),
    ],
)
def test_bad_requests_get_json_4xx_naming_the_expectation(server, path, method, body, status, fragment):
    got, parsed, _ = server.request(method, path, body)
    assert got == status
    assert set(parsed) == {"error", "cause"} and fragment in parsed["cause"]


def test_oversized_body_is_413_and_the_server_keeps_serving(server):
    conn = server.connect()
    huge = b'{"input": [' + b"1," * (9 * 1024 * 1024) + b"1]}"
    status, body, headers = server.request("POST", "/mlp/predict", huge, conn)
    assert status == 413 and "16777216" in body["cause"]
    assert server.predict("mlp", {"input": [0] * 16})[0] == 200


def test_malformed_http_gets_400_and_closes_only_that_connection(server):
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 400")
    assert server.predict("mlp", {"input": [0] * 16})[0] == 200


def test_keep_alive_and_pipelined_requests_answer_in_order(server):
    conn = server.connect()
    for i in range(5):
        status, body = server.predict("mlp", {"input": [i] * 16}, conn)
        assert status == 200
    body = b'{"input": [%d,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}'
    reqs = b"".join(
        b"POST /picky/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (len(b'{"input": [%d,1,1,1]}' % i), b'{"input": [%d,1,1,1]}' % i)
        for i in range(1, 6)
    )
    del body
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(reqs)
        data = b""
        while data.count(b"HTTP/1.1 200") < 5:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    outputs = [float(part.split(b'"output":')[1].split(b",")[0]) for part in data.split(b"HTTP/1.1 200")[1:]]
    assert outputs == [4.0, 5.0, 6.0, 7.0, 8.0]


def test_health_endpoints_and_two_frontends(server):
    assert server.request("GET", "/v2/health/live")[0] == 200
    assert server.request("GET", "/v2/health/ready")[0] == 200
    assert len(server.children("frontend")) == 2


def test_both_frontends_answer_queries(server):
    """With `--frontends 2` both frontend processes answer: fresh connections spread over the
    two SO_REUSEPORT sockets, and the top bits of a Clipper query_id (`query_id >> 48`) are the
    index of the frontend that answered (the bits below 48 are not relied on)."""
    seen: set[int] = set()
    answers = 0
    deadline = time.monotonic() + 60
    while seen != {0, 1}:
        assert time.monotonic() < deadline, f"after {answers} answers on fresh connections only frontends {seen} answered"
        status, body = server.predict("picky", {"input": [1, 2, 3, answers]})  # a new connection each time
        assert status == 200 and body["output"] == 6.0 + answers, body
        seen.add(body["query_id"] >> 48)
        assert seen <= {0, 1}, f"query_id {body['query_id']} names frontend {body['query_id'] >> 48} of 2"
        answers += 1


def test_concurrent_clients_each_get_their_own_answer(server):
    errors = []

    def client(k):
        conn = server.connect()
        for i in range(30):
            status, body = server.predict("picky", {"input": [k, i, 0, 0]}, conn)
            if status != 200 or body["output"] != float(k + i):
                errors.append((k, i, status, body))

    finish(start([ClientThread(client, k) for k in range(8)]))
    assert errors == []


def test_builtin_demo_answers_digits(tmp_path):
    digits = load_digits()
    with SchoonerServer(tmp_path) as srv:
        deadline = time.monotonic() + 10
        while not any("curl -s -X POST" in line for line in srv.lines) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any("curl -s -X POST" in line for line in srv.lines)  # a ready-to-paste example
        rows = digits.data[:20].tolist()
        status, body = srv.predict("digits", {"input_batch": rows})
        assert status == 200
        got = [p["output"] for p in body["batch_predictions"]]
        correct = sum(int(g == t) for g, t in zip(got, digits.target[:20], strict=True))
        assert correct >= 18  # a trained classifier, not a constant
        assert srv.stop() == 0
