"""HTTP fuzzing of one real `schooner serve`: hypothesis writes the bytes, a raw TCP socket sends
them, and every answer is checked against what the server promises any client.

One server (started once for the module) serves four apps: `sums` (floats [4], a model that
raises on a negative first value), `strlen` (strings), `blobs` (bytes, base64 in JSON) and
`pick` (an Exp3 app over two models answering class scores, so `/pick/update` feeds a policy).
The strategies produce Clipper predict/update bodies, V2 infer bodies (JSON, binary tensors with
`Inference-Header-Content-Length`, raw binary), arbitrary methods, paths and headers, bodies
framed by Content-Length or chunked transfer encoding, several requests pipelined on one
connection and sent in arbitrary fragments, and garbage bytes.

Properties checked for every request:

* the server answers with a complete HTTP response, or closes the connection; it never leaves
  a client waiting (every socket read has a timeout: a timeout fails the test). A well-framed
  request is always answered: the server may close a connection only after a response that
  says `Connection: close`, or after bytes that are not a well-framed request;
* the only 5xx answers are the documented ones:
  - 500 when a model raises (its body names the model's exception: here "negative first
    feature"),
  - 503 while draining (never during this run) or when an SLO default cannot stand in for a
    V2 output (its body carries the SLO explanation),
  - 501 for Triton's CUDA shared memory routes on a server without CUDA shared memory;
  every other bad input is the client's fault and gets a 4xx;
* every 4xx answer (except to HEAD, which has no body) is a JSON object with an "error" key;
* nothing follows a `Connection: close` response on that connection.

After each test: no server process died or was replaced (the same child pids as at start) and
a normal query is answered 200. The runs are deterministic (`derandomize=True`) and together
send at least 2,000 requests.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.serving import SchoonerServer

CONFIG = """
[[models]]
name = "summer"
entry_point = "tests.models:PickyModel"
input_type = "floats"
input_shape = [4]

[[models]]
name = "lengths"
entry_point = "tests.models:StringLengths"
input_type = "strings"

[[models]]
name = "bloblen"
entry_point = "tests.models:StringLengths"
input_type = "bytes"

[[models]]
name = "one"
entry_point = "tests.models:ConstantClass"
input_type = "floats"
input_shape = [4]
init_args = { label = 1 }

[[models]]
name = "zero"
entry_point = "tests.models:ConstantClass"
input_type = "floats"
input_shape = [4]
init_args = { label = 0 }

[[apps]]
name = "sums"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 10000000
default_output = "-1"
models = ["summer"]

[[apps]]
name = "strlen"
input_type = "strings"
latency_slo_micros = 10000000
default_output = "0"
models = ["lengths"]

[[apps]]
name = "blobs"
input_type = "bytes"
latency_slo_micros = 10000000
default_output = "0"
models = ["bloblen"]

[[apps]]
name = "pick"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 10000000
default_output = "-1"
models = ["one", "zero"]
policy = "exp3"
policy_params = { eta = 0.3, gamma = 0.1 }
"""

READ_TIMEOUT_S = 30.0  # per socket read; an answer takes milliseconds, an SLO default <= 10 s
MODEL_ERROR = "negative first feature"  # what PickyModel raises with
SLO_EXPLANATION = "latency SLO"
SENT = {"requests": 0}  # every request written to the server by this module
MIN_REQUESTS = 2000

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with SchoonerServer(tmp_path_factory.mktemp("fuzz"), CONFIG) as srv:
        srv.start_pids = {p.pid for p in srv.children()}
        assert len(srv.start_pids) == 7  # 1 frontend, 1 scheduler, 5 models
        yield srv
        assert srv.stop() == 0


@pytest.fixture(autouse=True)
def still_serving(server):
    """After each fuzz test: every process that started is still the one serving, and a normal
    query gets its real answer."""
    yield
    assert server.proc.poll() is None, "the server exited: " + server.log()[-3000:]
    now = {p.pid for p in server.children()}
    assert now == server.start_pids, f"server processes died or were replaced: {sorted(server.start_pids - now)} gone, {sorted(now - server.start_pids)} new"
    status, body = server.predict("sums", {"input": [1, 2, 3, 4]})
    assert (status, body["output"], body["default"]) == (200, 10.0, False), body


# -- a strict HTTP/1.x response reader over a raw socket -------------------------------------------


class Hang(AssertionError):
    pass


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    raw_head: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get(b"connection", b"").lower() == b"close"


@dataclass
class Wire:
    sock: socket.socket
    buf: bytes = b""
    eof: bool = False
    reset: bool = False

    def fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise Hang(f"no byte from the server for {READ_TIMEOUT_S} s (it neither answered nor closed); "
                       f"received so far: {self.buf[:500]!r}") from None
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise AssertionError(f"connection closed inside a response: wanted {n} bytes, have {self.buf[:300]!r}")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self.fill():
                raise AssertionError(f"connection closed inside a response head: {self.buf[:300]!r}")
        out, self.buf = self.buf.split(b"\r\n", 1)
        return out

    def response(self, head_only: bool) -> Response | None:
        """The next response, or None if the server closed the connection before sending one."""
        while True:
            if not self.buf and not self.fill():
                return None
            status_line = self.line()
            m = re.fullmatch(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?", status_line)
            assert m, f"not an HTTP status line: {status_line[:200]!r}"
            status = int(m.group(1))
            headers: dict[bytes, bytes] = {}
            head = [status_line]
            while (h := self.line()) != b"":
                head.append(h)
                name, sep, value = h.partition(b":")
                assert sep and name and name.strip() == name, f"malformed header line {h!r}"
                lname = name.lower()
                assert lname not in headers or lname == b"set-cookie", f"duplicate header {name!r}"
                headers[lname] = value.strip()
            if 100 <= status < 200:
                continue  # an interim response; the real one follows
            if head_only or status in (204, 304):
                body = b""
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = b""
                while True:
                    size = int(self.line().split(b";")[0], 16)
                    if size == 0:
                        while self.line() != b"":
                            pass
                        break
                    body += self.take(size)
                    assert self.take(2) == b"\r\n", "chunk not followed by CRLF"
            elif b"content-length" in headers:
                body = self.take(int(headers[b"content-length"]))
            else:
                while self.fill():
                    pass
                body, self.buf = self.buf, b""
            return Response(status, headers, body, b"\r\n".join(head))


# -- building requests --------------------------------------------------------------------------


@dataclass
class Req:
    """One request: `framed` is True when its bytes are a complete, well-framed HTTP/1.1 message
    (the server must answer it); False for deliberately broken framing and garbage."""

    method: str
    path: str
    data: bytes
    framed: bool = True


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=12)
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])
APPS = ["sums", "strlen", "blobs", "pick"]
NAMES = st.sampled_from([*APPS, "summer", "lengths", "bloblen", "one", "zero", "nope", "v2", "metrics", "%2e%2e", "%00", "a" * 300])

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
number = st.one_of(st.integers(-(2**40), 2**40), finite)
scalar_json = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=10))
any_json = st.recursive(
    scalar_json,
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=15,
)
row4 = st.lists(number, min_size=4, max_size=4)


def dumps(draw, doc) -> bytes:
    """JSON text of `doc`: strict (orjson), lax (stdlib: NaN, Infinity, big integers) or cut short."""
    how = draw(st.sampled_from(["strict", "strict", "strict", "lax", "cut"]))
    try:
        text = orjson.dumps(doc) if how == "strict" else json.dumps(doc).encode()
    except (TypeError, ValueError, orjson.JSONEncodeError):
        text = json.dumps(doc).encode()
    if how == "cut" and text:
        text = text[: draw(st.integers(0, len(text) - 1))]
    return text


def app_input(draw, app: str):
    """A valid input for `app` most of the time, anything at all otherwise."""
    if draw(st.integers(0, 4)) == 0:
        return draw(any_json)
    if app in ("sums", "pick"):
        return draw(st.one_of(row4, row4.map(lambda r: [r[:2], r[2:]]), st.lists(number, max_size=6)))
    if app == "strlen":
        return draw(st.text(max_size=30))
    return base64.b64encode(draw(st.binary(max_size=30))).decode()


@st.composite
def clipper_predict(draw) -> tuple[str, bytes]:
    app = draw(st.sampled_from(APPS) if draw(st.integers(0, 9)) else NAMES)
    doc: dict = {}
    if draw(st.booleans()):
        doc["input"] = app_input(draw, app)
    else:
        doc["input_batch"] = [app_input(draw, app) for _ in range(draw(st.integers(0, 4)))]
    if draw(st.integers(0, 5)) == 0:
        doc["version"] = draw(st.one_of(st.just("1"), st.text(max_size=4), st.integers()))
    if draw(st.integers(0, 5)) == 0:
        doc["uid"] = draw(st.one_of(st.integers(-5, 2**70), any_json))
    if draw(st.integers(0, 9)) == 0:
        doc = draw(any_json)
    return f"/{app}/predict", dumps(draw, doc)


@st.composite
def clipper_update(draw) -> tuple[str, bytes]:
    app = draw(st.sampled_from(["pick", "pick", "pick", "sums", "nope"]))
    doc = {"uid": draw(st.one_of(st.integers(0, 20), st.integers(), any_json)),
           "input": app_input(draw, app),
           "label": draw(st.one_of(st.integers(0, 3), number, any_json))}
    for key in list(doc):
        if draw(st.integers(0, 7)) == 0:
            del doc[key]
    return f"/{app}/update", dumps(draw, doc)


DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BF16", "BYTES"]  # fmt: skip
ITEMSIZE = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
            "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}  # fmt: skip
V2_TARGETS = [("sums", "FP32", [4]), ("pick", "FP32", [4]), ("strlen", "BYTES", []), ("blobs", "BYTES", []),
              ("summer", "FP32", [4]), ("lengths", "BYTES", []), ("one", "FP32", [4])]  # fmt: skip


def v2_path(draw, name: str) -> str:
    if draw(st.integers(0, 3)) == 0:
        return f"/v2/models/{name}/versions/{draw(st.sampled_from(['1', '2', 'x']))}/infer"
    return f"/v2/models/{name}/infer"


def v2_parameters(draw) -> dict | None:
    if draw(st.booleans()):
        return None
    params = {}
    if draw(st.booleans()):
        params["priority"] = draw(st.one_of(st.integers(0, 255), st.integers(-3, 300), any_json))
    if draw(st.booleans()):
        params["timeout"] = draw(st.one_of(st.integers(1, 20_000_000), st.integers(-3, 2**70), any_json))
    if draw(st.integers(0, 4)) == 0:
        params[draw(st.text(max_size=6))] = draw(any_json)
    return params


@st.composite
def v2_tensor(draw, datatype: str, shape: list[int], binary: bool) -> tuple[dict, bytes]:
    """A tensor of shape [n, *shape] (mostly consistent, sometimes not) and its binary bytes."""
    n = draw(st.integers(0, 3))
    full = [n, *shape]
    count = n * (shape[0] if shape else 1)
    t: dict = {"name": draw(st.sampled_from(["input", "input", "input", "x"])), "datatype": datatype, "shape": full}
    if draw(st.integers(0, 6)) == 0:
        t["shape"] = draw(st.lists(st.integers(-2, 2**33), max_size=4) | any_json)
    if draw(st.integers(0, 8)) == 0:
        t["datatype"] = draw(st.sampled_from(DATATYPES) | st.text(max_size=5))
    if draw(st.integers(0, 8)) == 0:
        count = draw(st.integers(0, 10))
    blob = b""
    if binary:
        if datatype == "BYTES":
            items = [draw(st.binary(max_size=12)) for _ in range(count)]
            blob = b"".join(len(i).to_bytes(4, "little") + i for i in items)
        else:
            blob = draw(st.binary(min_size=count * ITEMSIZE[datatype], max_size=count * ITEMSIZE[datatype]))
        size = len(blob)
        if draw(st.integers(0, 6)) == 0:
            size = draw(st.one_of(st.integers(-5, len(blob) + 50), any_json))
        t["parameters"] = {"binary_data_size": size}
    else:
        if datatype == "BYTES":
            data = [draw(st.text(max_size=12)) for _ in range(count)]
        else:
            data = [draw(number) for _ in range(count)]
        if shape and draw(st.booleans()) and count == n * shape[0]:
            data = [data[i * shape[0] : (i + 1) * shape[0]] for i in range(n)]  # the nested form
        if draw(st.integers(0, 8)) == 0:
            data = draw(any_json)
        t["data"] = data
    if draw(st.integers(0, 10)) == 0:
        del t[draw(st.sampled_from(sorted(t)))]
    return t, blob


@st.composite
def v2_json_infer(draw) -> tuple[str, bytes, list[tuple[str, str]]]:
    name, dt, shape = draw(st.sampled_from(V2_TARGETS))
    if draw(st.integers(0, 9)) == 0:
        name = draw(NAMES)
    tensors = [draw(v2_tensor(dt, shape, False)) for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2])))]
    doc: dict = {"inputs": [t for t, _ in tensors]}
    if (params := v2_parameters(draw)) is not None:
        doc["parameters"] = params
    if draw(st.booleans()):
        doc["id"] = draw(st.one_of(st.text(max_size=8), any_json))
    if draw(st.booleans()):
        doc["outputs"] = [{"name": draw(st.sampled_from(["output", "output", "zz"]))} for _ in range(draw(st.integers(0, 2)))]
    if draw(st.integers(0, 12)) == 0:
        doc = draw(any_json)
    return v2_path(draw, name), dumps(draw, doc), []


@st.composite
def v2_binary_infer(draw) -> tuple[str, bytes, list[tuple[str, str]]]:
    name, dt, shape = draw(st.sampled_from(V2_TARGETS))
    if draw(st.integers(0, 6)) == 0:  # the raw form: the whole body is the one input
        if dt == "BYTES":
            items = [draw(st.binary(max_size=10)) for _ in range(draw(st.integers(0, 3)))]
            body = b"".join(len(i).to_bytes(4, "little") + i for i in items)
        else:
            body = draw(st.binary(max_size=40))
        return v2_path(draw, name), body, [("Inference-Header-Content-Length", "0")]
    tensors = [draw(v2_tensor(dt, shape, True)) for _ in range(draw(st.sampled_from([1, 1, 1, 2])))]
    doc: dict = {"inputs": [t for t, _ in tensors]}
    if (params := v2_parameters(draw)) is not None:
        doc["parameters"] = params
    if draw(st.booleans()):
        doc["outputs"] = [{"name": "output", "parameters": {"binary_data": draw(st.booleans())}}]
    header = dumps(draw, doc)
    body = header + b"".join(b for _, b in tensors)
    hlen: str = str(len(header))
    k = draw(st.integers(0, 9))
    if k == 0:
        hlen = str(draw(st.integers(-3, len(body) + 10)))
    elif k == 1:
        hlen = draw(st.sampled_from(["", "abc", "1e3", " 12", "99999999999999999999", "-0"]))
    return v2_path(draw, name), body, [("Inference-Header-Content-Length", hlen)]


@st.composite
def other_route(draw) -> tuple[str, bytes, list[tuple[str, str]]]:
    name = draw(NAMES)
    path = draw(st.sampled_from([
        "/v2", "/v2/health/live", "/v2/health/ready", "/metrics", f"/v2/models/{name}",
        f"/v2/models/{name}/ready", f"/v2/models/{name}/config", f"/v2/models/{name}/stats",
        f"/v2/models/{name}/versions/1", f"/v2/models/{name}/versions/1/stats", "/v2/models/stats",
        "/v2/systemsharedmemory/status", f"/v2/systemsharedmemory/region/{name}/register",
        "/v2/systemsharedmemory/unregister", "/v2/cudasharedmemory/unregister", "/v2/repository/index",
        "/", "//", "/v2/", "/v2/models/", f"/{name}", f"/{name}/predict/extra", "/%ff%fe/predict",
    ]))  # fmt: skip
    if draw(st.integers(0, 5)) == 0:
        path += "?" + draw(st.text(alphabet="abc=&%20", max_size=12))
    body = b"" if draw(st.booleans()) else dumps(draw, draw(any_json))
    return path, body, []


@st.composite
def request(draw) -> Req:
    """One well-framed request (Content-Length or chunked), whose method mostly fits its route."""
    kind = draw(st.sampled_from(["predict", "predict", "update", "v2json", "v2json", "v2bin", "v2bin", "other"]))
    if kind == "predict":
        path, body = draw(clipper_predict())
        extra: list = []
    elif kind == "update":
        path, body = draw(clipper_update())
        extra = []
    else:
        path, body, extra = draw({"v2json": v2_json_infer(), "v2bin": v2_binary_infer(), "other": other_route()}[kind])
    method = "POST" if kind != "other" else draw(st.sampled_from(["GET", "GET", "POST"]))
    if draw(st.integers(0, 9)) == 0:
        method = draw(METHODS)
    version = "HTTP/1.1" if draw(st.integers(0, 9)) else "HTTP/1.0"
    headers = [("Host", "fuzz"), *extra]
    if version == "HTTP/1.0" and draw(st.booleans()):
        headers.append(("Connection", "keep-alive"))
    elif draw(st.integers(0, 15)) == 0:
        headers.append(("Connection", "close"))
    for _ in range(draw(st.integers(0, 2))):
        headers.append((draw(TOKEN), draw(HEADER_VALUE)))
    if draw(st.booleans()):
        headers.append(("Content-Type", draw(st.sampled_from(["application/json", "application/octet-stream", "text/plain"]))))
    chunked = version == "HTTP/1.1" and draw(st.integers(0, 3)) == 0
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
        payload = b""
        rest = body
        while rest:
            n = draw(st.integers(1, max(1, len(rest))))
            ext = draw(st.sampled_from(["", "", ";a=b"]))
            size = draw(st.sampled_from(["%x", "%X"])) % n
            payload += f"{size}{ext}\r\n".encode() + rest[:n] + b"\r\n"
            rest = rest[n:]
        payload += b"0\r\n"
        if draw(st.integers(0, 5)) == 0:
            payload += b"X-Trailer: 1\r\n"
        payload += b"\r\n"
    else:
        payload = body
        if body or method in ("POST", "PUT", "PATCH") or draw(st.booleans()):
            headers.append(("Content-Length", str(len(body))))
    draw(st.randoms(use_true_random=False)).shuffle(headers)
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return Req(method, path, head.encode("utf-8") + payload)


@st.composite
def broken(draw) -> Req:
    """Bytes that are not one well-framed request: the server may answer 4xx or close."""
    kind = draw(st.sampled_from(["garbage", "garbage-after-line", "bad-length", "cl+te", "bad-chunk", "bad-header", "bad-line"]))
    body = draw(st.binary(max_size=60))
    if kind == "garbage":
        data = draw(st.binary(min_size=1, max_size=200))
    elif kind == "garbage-after-line":
        data = b"POST /sums/predict HTTP/1.1\r\n" + draw(st.binary(min_size=1, max_size=100))
    elif kind == "bad-length":
        cl = draw(st.sampled_from(["-1", "abc", "1 2", "99999999999999999999999", "0x10", "+5", ""]))
        data = b"POST /sums/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n%s" % (cl.encode(), body)
    elif kind == "cl+te":
        data = (b"POST /sums/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) + 5, len(body), body))
    elif kind == "bad-chunk":
        data = b"POST /sums/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + draw(
            st.sampled_from([b"zz\r\n", b"5\r\nab\r\n", b"-1\r\n", b"ffffffffffffffffff\r\n", b"3\r\nabcXX"])) + body
    elif kind == "bad-header":
        data = b"POST /sums/predict HTTP/1.1\r\n" + draw(st.sampled_from(
            [b"Bad Header: x\r\n", b": empty\r\n", b"X: \x00\r\n", b"X\r\n", b" folded: y\r\n", b"Content-Length: 1\r\nContent-Length: 2\r\n"])) + b"\r\n" + body  # fmt: skip
    else:
        data = draw(st.sampled_from([b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET  /  HTTP/1.1\r\n\r\n",
                                     b"\r\n\r\n", b"G\x00T / HTTP/1.1\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"]))  # fmt: skip
    return Req("?", "?", data, framed=False)


# -- sending and checking -----------------------------------------------------------------------


def check_answer(req: Req, resp: Response) -> None:
    where = f"request {req.data[:2000]!r} got {resp.raw_head!r}\r\n\r\n{resp.body[:1000]!r}"
    if resp.status >= 500:
        text = resp.body.decode("utf-8", "replace")
        documented = (resp.status == 500 and MODEL_ERROR in text) or (
            resp.status == 503 and (SLO_EXPLANATION in text or "draining" in text)) or (
            resp.status == 501 and "CUDA shared memory is not supported" in text)
        assert documented, "undocumented 5xx: " + where
    if 400 <= resp.status < 500 and req.method != "HEAD":
        try:
            doc = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            doc = None
        assert isinstance(doc, dict) and "error" in doc, "4xx body is not JSON with an 'error' key: " + where
    assert 100 <= resp.status < 600, where


def exchange(server, reqs: list[Req], pieces: list[int]) -> None:
    """Send `reqs` pipelined on one connection (their bytes cut at `pieces`), then read and
    check every answer. Only the last request may be broken: after the answers to the others,
    the client ends its side (broken framing may leave the server waiting for more bytes)."""
    assert all(r.framed for r in reqs[:-1])
    data = b"".join(r.data for r in reqs)
    cuts = sorted({p % (len(data) + 1) for p in pieces} | {0, len(data)})
    note(f"sent {len(reqs)} request(s): {data[:4000]!r}")
    SENT["requests"] += len(reqs)
    with socket.create_connection((server.host, server.port), timeout=READ_TIMEOUT_S) as s:
        wire = Wire(s)
        try:
            for a, b in zip(cuts, cuts[1:], strict=False):
                s.sendall(data[a:b])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed early (after a 4xx on broken bytes): the reads below check it
        for i, req in enumerate(reqs):
            if not req.framed:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the server has already reset the connection: the reads below see it
                while (resp := wire.response(head_only=False)) is not None:
                    note(f"answer to the broken bytes: {resp.status} {resp.body[:300]!r}")
                    check_answer(req, resp)
                    if resp.closes:
                        break
                return expect_end(wire)
            resp = wire.response(head_only=req.method == "HEAD")
            assert resp is not None, (
                f"the server closed the connection ({'reset' if wire.reset else 'eof'}) without answering "
                f"well-framed request {i} of {len(reqs)}: {req.data[:2000]!r}")
            note(f"answer {i}: {resp.status} {resp.body[:300]!r}")
            check_answer(req, resp)
            if resp.closes:
                return expect_end(wire)
        s.settimeout(0.0)
        try:
            extra = s.recv(65536)
        except (BlockingIOError, ConnectionResetError):
            extra = b""
        assert not (wire.buf or extra), f"bytes beyond the answers to {len(reqs)} request(s): {(wire.buf + extra)[:300]!r}"


def expect_end(wire: Wire) -> None:
    """After `Connection: close`: the server closes, and sends nothing more before it does."""
    while not wire.eof:
        wire.fill()
    assert wire.buf == b"", f"bytes after a Connection: close response: {wire.buf[:300]!r}"


pieces = st.lists(st.integers(0, 10_000), max_size=4)


@settings(FUZZ, max_examples=500)
@given(reqs=st.lists(request(), min_size=1, max_size=5), cut=pieces)
def test_pipelined_requests_are_each_answered_within_the_contract(server, reqs, cut):
    exchange(server, reqs, cut)


@settings(FUZZ, max_examples=250)
@given(reqs=st.lists(st.tuples(st.sampled_from(["predict", "update"]), st.data()), min_size=1, max_size=4), cut=pieces)
def test_clipper_bodies(server, reqs, cut):
    out = []
    for kind, data in reqs:
        path, body = data.draw(clipper_predict() if kind == "predict" else clipper_update())
        out.append(Req("POST", path, b"POST %s HTTP/1.1\r\nHost: f\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)))
    exchange(server, out, cut)


@settings(FUZZ, max_examples=250)
@given(reqs=st.lists(st.one_of(v2_json_infer(), v2_binary_infer()), min_size=1, max_size=4), cut=pieces)
def test_v2_infer_bodies(server, reqs, cut):
    out = []
    for path, body, extra in reqs:
        head = "".join(f"{k}: {v}\r\n" for k, v in extra).encode()
        out.append(Req("POST", path, b"POST %s HTTP/1.1\r\nHost: f\r\n%sContent-Length: %d\r\n\r\n%s" % (path.encode(), head, len(body), body)))
    exchange(server, out, cut)


@settings(FUZZ, max_examples=250)
@given(before=st.lists(request(), max_size=2), bad=broken(), cut=pieces)
def test_broken_framing_and_garbage_get_a_4xx_or_a_close(server, before, bad, cut):
    exchange(server, [*before, bad], cut)


def test_enough_requests_were_sent_and_the_server_still_serves(server):
    # (fewer when a fuzz test above stopped at a failing example: fix that one first)
    assert SENT["requests"] >= MIN_REQUESTS, SENT
    conn = server.connect()
    for app, body, want in [("sums", {"input": [1, 1, 1, 1]}, 4.0), ("strlen", {"input": "four"}, 4),
                            ("blobs", {"input": base64.b64encode(b"abc").decode()}, 3)]:  # fmt: skip
        status, got = server.predict(app, body, conn)
        assert (status, got["output"], got["default"]) == (200, want, False), got
    status, got = server.predict("pick", {"input": [0, 0, 0, 0]}, conn)
    assert status == 200 and got["default"] is False and len(got["output"]) == 4
    status, got, _ = server.request("POST", "/pick/update", {"uid": 1, "input": [0, 0, 0, 0], "label": 1}, conn)
    assert (status, got) == (200, {"ok": True})
    deadline = time.monotonic() + 30
    while (ready := server.request("GET", "/v2/health/ready")[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready == 200
