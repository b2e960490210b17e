"""Open Inference Protocol routes (`/v2/...`) of a frontend process.

Addressing: `/v2/models/{name}` is the app of that name if there is one (its SLO, default
output and cache apply), else the current version of the model of that name;
`/v2/models/{name}/versions/{v}` always addresses version v of model `name` directly (cache
and batching apply, selection does not). Each app and model has one input named ``input`` and
one output named ``output``.

A V2 request of shape [N, ...] becomes N queries, batched with everything else; its answer is
one output tensor of N rows. Rows answered with the app's default output (SLO missed) are
counted in the response's ``parameters.schooner_defaults`` with ``default_explanation``; when
the default cannot stand in for a row (another shape), the request fails with 503 and that
explanation.
"""

from __future__ import annotations

import time

import numpy as np
import orjson

from schooner.engine.config import app_route, model_route, routes
from schooner.frontend.client_shm import ClientShmRegistry, ShmError
from schooner.frontend.codec import RequestError
from schooner.frontend.pending import PendingRequest
from schooner.frontend.v2 import (
    APP_DATATYPE,
    DATATYPES,
    TRITON_TYPE,
    InferInput,
    InferRequest,
    V2Error,
    _bytes_items,
    answer_tensor,
    binary_bytes,
    decode_infer,
    encode_infer_response,
    to_app_rows,
)

SERVER_NAME = "schooner"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
INPUT_NAME = "input"
OUTPUT_NAME = "output"
_JSON = b"application/json"
UNKNOWN_OUTPUT = {"datatype": "FP32", "shape": [-1, -1]}  # before a model's first answer, if not declared


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("schooner")
    except Exception:  # not installed as a distribution (running from a source tree)
        return "0"


class V2Routes:
    def __init__(self, fe) -> None:
        self.fe = fe
        cfg = fe.cfg
        self.cfg = cfg
        self.tables(cfg)
        self.shm = ClientShmRegistry(fe.client_shm_board) if cfg.allow_client_shm else None
        extensions = EXTENSIONS + (["system_shared_memory"] if self.shm is not None else [])
        self.server_meta = orjson.dumps({"name": SERVER_NAME, "version": _version(), "extensions": extensions})

    def tables(self, cfg) -> None:
        """Route tables for `cfg`: `direct` maps a model name to its current version's route,
        `by_name` adds the apps (an app wins over a model of the same name)."""
        self.cfg = cfg
        self.routes = routes(cfg)
        self._output_meta: dict[int, dict] = getattr(self, "_output_meta", {})
        self.direct = {m.name: model_route(mi) for mi, m in enumerate(cfg.models) if m.current and not m.deleted}
        self.by_name = dict(self.direct)
        self.by_name.update({a.name: app_route(i) for i, a in enumerate(cfg.apps) if not a.deleted})

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, conn, slot: list, method: bytes, parts: list[str], body: bytes, header_len: int | None) -> None:
        """Answer one `/v2/...` request (health is handled by the caller)."""
        try:
            self._handle(conn, slot, method, parts, body, header_len)
        except V2Error as e:
            conn.respond(slot, e.status, e.body())
        except ShmError as e:
            conn.respond(slot, e.status, orjson.dumps({"error": e.message}))

    def _handle(self, conn, slot, method, parts, body, header_len) -> None:
        if parts == ["v2"]:
            _expect(method, b"GET", "/v2")
            conn.respond(slot, 200, self.server_meta)
            return
        if len(parts) >= 2 and parts[1] == "cudasharedmemory":
            # no CUDA here: nothing is ever registered; perf_analyzer unregisters even in system mode
            if parts[-1] == "status":
                conn.respond(slot, 200, b"[]")
            elif parts[-1] == "unregister" and method == b"POST":
                conn.respond(slot, 200, b"{}")
            else:
                raise V2Error(501, "CUDA shared memory is not supported by this server")
            return
        if len(parts) >= 2 and parts[1] == "systemsharedmemory":
            self._system_shm(conn, slot, method, parts[2:], body)
            return
        if parts == ["v2", "models", "stats"]:  # every model, as Triton serves it
            _expect(method, b"GET", "statistics")
            stats = [s for mi in range(len(self.cfg.models)) if not self.cfg.models[mi].deleted
                     for s in self._stats(model_route(mi), self.cfg.models[mi].name)["model_stats"]]
            conn.respond(slot, 200, orjson.dumps({"model_stats": stats}))
            return
        if len(parts) < 3 or parts[1] != "models":
            raise V2Error(404, f"no route for /{'/'.join(parts)}")
        name = parts[2]
        rest = parts[3:]
        version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise V2Error(404, "expected /v2/models/{name}/versions/{version}")
            version = rest[1]
            rest = rest[2:]
        ri = self._resolve(name, version)
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "config", "infer", "stats"):
            raise V2Error(404, f"no route for /{'/'.join(parts)}")
        if action == "infer":
            _expect(method, b"POST", "infer")
            self._infer(conn, slot, ri, name, body, header_len)
            return
        _expect(method, b"GET", action or "model metadata")
        if action == "":
            conn.respond(slot, 200, orjson.dumps(self._metadata(ri, name)))
        elif action == "ready":
            ok = not self.fe.core.draining and not self.fe.core.scheduler_down and self.route_ready(ri)
            conn.respond(slot, 200 if ok else 503, b"" if ok else orjson.dumps({"error": f"{name} is not ready"}))
        elif action == "config":
            conn.respond(slot, 200, orjson.dumps(self._config(ri, name)))
        else:
            conn.respond(slot, 200, orjson.dumps(self._stats(ri, name)))

    def _system_shm(self, conn, slot, method: bytes, rest: list[str], body: bytes) -> None:
        if self.shm is None:
            raise V2Error(400, "system shared memory is off; start the server with --allow-client-shm")
        name = None
        if rest[:1] == ["region"]:
            if len(rest) < 3:
                raise V2Error(404, "expected /v2/systemsharedmemory/region/{name}/{register|unregister|status}")
            name, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else ""
        if action == "status":
            _expect(method, b"GET", "status")
            conn.respond(slot, 200, orjson.dumps(self.shm.status(name)))
        elif action == "unregister":
            _expect(method, b"POST", "unregister")
            self.shm.unregister(name)
            conn.respond(slot, 200, b"{}")
        elif action == "register" and name is not None:
            _expect(method, b"POST", "register")
            try:
                doc = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError:
                raise V2Error(400, "register expects a JSON body {key, offset, byte_size}") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("key"), str):
                raise V2Error(400, "register expects a JSON body {key, offset, byte_size}")
            self.shm.register(name, doc["key"], doc.get("offset", 0), doc.get("byte_size"))
            conn.respond(slot, 200, b"{}")
        else:
            raise V2Error(404, "no such system shared memory route")

    def _resolve(self, name: str, version: str | None) -> int:
        if version is not None:
            # a model's version, or an app's: the version of its (first) linked model, as
            # perf_analyzer and tritonclient address "the model" with the version it reported
            if name not in self.direct and name in self.by_name:
                ri = self.by_name[name]
                m = self._model_of(ri)
                if m is not None and version == m.version:
                    return ri
                model_name = m.name if m is not None else None
            else:
                model_name = name
            versions = {m.version: model_route(mi) for mi, m in enumerate(self.cfg.models)
                        if m.name == model_name and not m.deleted}
            if version not in versions:
                if model_name is None and name not in self.by_name:
                    raise V2Error(404, f"unknown model '{name}'; known: {sorted(self.by_name)}")
                raise V2Error(404, f"unknown version '{version}' of model '{name}'; available: {', '.join(sorted(versions)) or 'none'}")
            return versions[version]
        ri = self.by_name.get(name)
        if ri is None:
            raise V2Error(404, f"unknown model '{name}'; known: {sorted(self.by_name)}")
        return ri

    def _model_of(self, ri: int):
        mi = self.routes[ri].model
        return None if mi is None else self.cfg.models[mi]

    def _model_stats(self) -> list[dict]:
        """The scheduler's last per-model snapshot (statistics, readiness, learned outputs)."""
        raw = self.fe.stats_board.read()
        return orjson.loads(raw) if raw else []

    def route_ready(self, ri: int) -> bool:
        """An app is ready when one of its models is; a model when the scheduler says so (a
        replica idle or answering its batch within model_stall_timeout_s)."""
        models = self.routes[ri].models
        if not models:
            return False
        stats = self._model_stats()
        return any(mi < len(stats) and stats[mi].get("ready") for mi in models)

    def unready_apps(self) -> list[str]:
        """Apps linked to models of which none is ready (for the server's readiness). Models
        scaled to 0 replicas are left out: their apps answer defaults by design."""
        stats = self._model_stats()
        out = []
        for a in self.cfg.apps:
            if a.deleted:
                continue
            linked = [self.cfg.model_index(n) for n in a.models]
            linked = [mi for mi in linked if self.cfg.models[mi].replicas > 0]
            if linked and not any(mi < len(stats) and stats[mi].get("ready") for mi in linked):
                out.append(a.name)
        return out

    def output_meta(self, ri: int) -> dict | None:
        """{"datatype", "shape"} of the route's answers: declared, or learned by the scheduler
        at the model's first answer; None while unknown. Known once, it never changes, so it
        is kept (the infer path must not parse the statistics board per request)."""
        mi = self.routes[ri].model
        if mi is None:
            return None
        meta = self._output_meta.get(mi)
        if meta is None:
            stats = self._model_stats()
            meta = stats[mi].get("output") if mi < len(stats) else None
            if meta is not None:
                self._output_meta[mi] = meta
        return meta

    # -- metadata ---------------------------------------------------------------------------

    def _metadata(self, ri: int, name: str) -> dict:
        r = self.routes[ri]
        m = self._model_of(ri)
        shape = [-1, *r.input_shape] if r.input_shape else [-1]
        return {
            "name": name,
            "versions": [v.version for v in self.cfg.models if v.name == m.name and not v.deleted] if m is not None else [],
            "platform": SERVER_NAME,
            "inputs": [{"name": INPUT_NAME, "datatype": APP_DATATYPE[r.input_type], "shape": shape}],
            "outputs": [{"name": OUTPUT_NAME, **(self.output_meta(ri) or UNKNOWN_OUTPUT)}],
        }

    def _config(self, ri: int, name: str) -> dict:
        r = self.routes[ri]
        m = self._model_of(ri)
        out = self.output_meta(ri) or UNKNOWN_OUTPUT
        max_batch = m.max_batch_size if m is not None else 0
        cfg = {
            "name": name,
            "platform": SERVER_NAME,
            "backend": "python",
            "max_batch_size": max_batch,
            "input": [{"name": INPUT_NAME, "data_type": TRITON_TYPE[APP_DATATYPE[r.input_type]],
                       "dims": list(r.input_shape) or [1]}],
            "output": [{"name": OUTPUT_NAME, "data_type": TRITON_TYPE[out["datatype"]], "dims": out["shape"][1:] or [1]}],
        }
        if m is not None:
            cfg["dynamic_batching"] = {
                "max_queue_delay_microseconds": m.batch_wait_timeout_micros,
                "preferred_batch_size": [m.batch_size] if m.batch_size > 0 else [],
                "default_queue_policy": {"default_timeout_microseconds": r.latency_slo_micros},
            }
            cfg["parameters"] = {"batching": {"string_value": "aimd" if m.batch_size < 0 else "fixed"}}
            group = {"count": m.replicas, "kind": "KIND_CPU" if m.device == "cpu" else "KIND_GPU"}
            if m.gpus:
                group["gpus"] = sorted(set(m.gpus))
            cfg["instance_group"] = [group]
        return cfg

    def _stats(self, ri: int, name: str) -> dict:
        """Triton's statistics for the route's model, from the scheduler's last snapshot."""
        mi = self.routes[ri].model
        if mi is None:
            return {"model_stats": []}
        all_stats = self._model_stats()
        st = all_stats[mi] if mi < len(all_stats) else None
        m = self.cfg.models[mi]
        if st is None:
            return {"model_stats": [{"name": name, "version": m.version, "last_inference": 0, "inference_count": 0,
                                     "execution_count": 0, "inference_stats": {}, "batch_stats": []}]}

        def stat(count, ns):
            return {"count": count, "ns": ns}

        compute = stat(st["compute_count"], st["compute_ns"])
        return {"model_stats": [{
            "name": name,
            "version": m.version,
            "last_inference": st["last_inference"],
            "inference_count": st["inference_count"],
            "execution_count": st["execution_count"],
            "inference_stats": {
                "success": stat(st["success_count"], st["success_ns"]),
                "fail": stat(st["fail_count"], st["fail_ns"]),
                "queue": stat(st["queue_count"], st["queue_ns"]),
                "compute_input": stat(st["compute_count"], 0),
                "compute_infer": compute,
                "compute_output": stat(st["compute_count"], 0),
                "cache_hit": stat(st["cache_hit_count"], 0),
                "cache_miss": stat(st["cache_miss_count"], 0),
            },
            "batch_stats": [
                {"batch_size": int(size), "compute_input": stat(c, 0), "compute_infer": stat(c, ns), "compute_output": stat(c, 0)}
                for size, (c, ns) in sorted(st["batches"].items(), key=lambda kv: int(kv[0]))
            ],
        }]}  # fmt: skip

    # -- inference --------------------------------------------------------------------------

    def _infer(self, conn, slot, ri: int, name: str, body: bytes, header_len: int | None) -> None:
        fe = self.fe
        if fe.core.draining:
            raise V2Error(503, "the server is draining; retry on another instance")
        if fe.core.scheduler_down:
            raise V2Error(503, "the scheduler is restarting; retry in a moment")
        r = self.routes[ri]
        shm_read = self.shm.read if self.shm is not None else None
        req = self._raw_request(r, body) if header_len == 0 else decode_infer(body, header_len, shm_read)
        if len(req.inputs) != 1 or req.inputs[0].name != INPUT_NAME:
            got = [i.name for i in req.inputs]
            raise V2Error(400, f"expected exactly one input named '{INPUT_NAME}', got {got}")
        out_shm = None
        for o in req.outputs:
            if o["name"] != OUTPUT_NAME:
                raise V2Error(400, f"unknown output '{o['name']}'; this model has one output named '{OUTPUT_NAME}'")
            op = o.get("parameters") or {}
            if "shared_memory_region" in op:
                if self.shm is None:
                    raise V2Error(400, "system shared memory is off; start the server with --allow-client-shm")
                size = op.get("shared_memory_byte_size")
                if not isinstance(size, int) or size < 0:
                    raise V2Error(400, "outputs: shared_memory_byte_size must be a non-negative integer")
                out_shm = (op["shared_memory_region"], op.get("shared_memory_offset", 0), size)
                self.shm.check(*out_shm)  # refuse a bad region now, before queueing anything
        inp = req.inputs[0]
        n, data = to_app_rows(inp, r.input_type, r.input_shape)
        if n == 0:
            raise V2Error(400, "the input tensor holds no queries")
        if isinstance(data, list):
            chunks, lens = data, [len(d) for d in data]
        else:
            chunks, lens = [data], [len(data) // n] * n
        try:
            fe.core.check_request_nbytes(lens)
        except RequestError as e:
            raise V2Error(e.status, e.cause) from None
        slo_us = r.latency_slo_micros
        timeout = req.parameters.get("timeout")
        if timeout is not None:
            if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
                raise V2Error(400, "parameters.timeout must be a positive integer (microseconds)")
            slo_us = min(slo_us, timeout)
        priority = req.parameters.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 255:
            raise V2Error(400, "parameters.priority must be an integer from 0 (default) to 255; 1 is served first")
        unbatched = list(inp.shape) == list(r.input_shape) and r.input_shape != ()
        m = self._model_of(ri)
        version = m.version if m is not None else None
        now = time.monotonic_ns()
        meta = self.output_meta(ri)
        render = _renderer(name, version, req, unbatched, out_shm, self.shm, meta["datatype"] if meta else None)
        pending = PendingRequest(conn, slot, n, True, now, render)
        fe.core.enqueue(pending, ri, now + slo_us * 1000, chunks, lens, priority, typed=1)

    def _raw_request(self, r, body: bytes) -> InferRequest:
        """`Inference-Header-Content-Length: 0`: the whole body is the one input, binary."""
        dt = APP_DATATYPE[r.input_type]
        if dt == "BYTES":
            items = _bytes_items(memoryview(body), _count_bytes_items(body), "raw input")
            return InferRequest(None, {}, [InferInput(INPUT_NAME, dt, [len(items)], items)], [], True)
        dtype = DATATYPES[dt]
        row = int(np.prod(r.input_shape)) * dtype.itemsize
        if not body or len(body) % row:
            raise V2Error(400, f"raw input of {len(body)} bytes is not a whole number of {row}-byte {dt} rows")
        n = len(body) // row
        values = np.frombuffer(body, dtype=dtype)
        return InferRequest(None, {}, [InferInput(INPUT_NAME, dt, [n, *r.input_shape], values)], [], True)


def _count_bytes_items(body: bytes) -> int:
    off = count = 0
    while off + 4 <= len(body):
        off += 4 + int.from_bytes(body[off : off + 4], "little")
        count += 1
    return count


def _expect(method: bytes, allowed: bytes, what: str) -> None:
    if method != allowed:
        raise V2Error(405, f"{what} accepts {allowed.decode()} only")


def _renderer(name: str, version: str | None, req: InferRequest, unbatched: bool, out_shm=None, shm=None,
              datatype: str | None = None):
    def render(p):
        if p.error is not None:
            status, err = p.error
            doc = orjson.loads(err)
            return status, orjson.dumps({"error": doc.get("cause") or doc.get("error")}), b"", _JSON
        rows = [o[0] for o in p.outputs]
        defaults = [o[2] for o in p.outputs if o[1]]
        params = {"schooner_defaults": len(defaults), "default_explanation": defaults[0]} if defaults else {}
        extras = [o[4] for o in p.outputs if o[4]]
        if extras:  # an ensemble: the lowest confidence and the fewest models over the rows
            members = [orjson.loads(b"{" + x + b"}") for x in extras]
            params["confidence"] = min(m["confidence"] for m in members)
            params["models_used"] = min(m["models_used"] for m in members)
        params = params or None
        try:
            arr, dt = answer_tensor(rows, datatype)
        except (ValueError, TypeError):
            why = defaults[0] if defaults else "the model's outputs differ in shape"
            return 503, orjson.dumps({"error": why}), b"", _JSON
        if unbatched and arr.shape[0] == 1:
            arr = arr[0]
        if out_shm is not None:
            data = binary_bytes(arr, dt)
            region, offset, size = out_shm
            if size < len(data):  # a larger region is fine: the answer's shape says what was written
                if defaults:  # the default output stood in for rows and does not fit the region
                    return 503, orjson.dumps({"error": defaults[0]}), b"", _JSON
                return 400, orjson.dumps({"error": f"output needs {len(data)} bytes of shared memory; shared_memory_byte_size is {size}"}), b"", _JSON
            try:
                shm.write(region, offset, data)
            except ShmError as e:
                return e.status, orjson.dumps({"error": e.message}), b"", _JSON
        body, header_len = encode_infer_response(
            name, version, req.id, OUTPUT_NAME, arr, dt, req.binary_output, params, in_shm=out_shm is not None
        )
        if header_len is None:
            return 200, body, b"", _JSON
        return 200, body, b"Inference-Header-Content-Length: %d\r\n" % header_len, b"application/octet-stream"

    return render
