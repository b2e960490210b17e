"""The management layer: Clipper's admin API applied to a running server, one call at a time.

Owns the queue of admin requests and the one in progress. Every mutating call is a generator
that makes a change through the supervisor's primitives (`broadcast`, `start_replicas`,
`retire_replicas`) and yields a condition to wait for (replicas Ready, a configuration
acknowledged by every process, replicas stopped); the supervisor's loop resumes it when its
events may have made the condition true. The call is answered when its change is in force,
or fails and leaves the previous state serving. Each successful change is saved in the
registry (`engine/registry.py`) so a restart keeps it.

Rules (Clipper's, where it had them):

* `add_model` of a new version: its replicas start while the old version serves; once they are
  Ready it becomes current (queries queued on the old version finish there). A version that
  fails to import or set up answers the call with the error and the old version keeps serving.
* `set_model_version`: roll back or forward; a stopped version is started first. The
  `warm_versions` most recent previous versions keep their processes; older ones stop.
* `set_num_replicas`: more replicas start and join once Ready; fewer: the extra ones get no new
  batch and stop once their batch is answered. 0 parks the model (its apps answer their default
  with "No connected models found for query", as Clipper does).
* Model and app indices never shift: deleted entries stay as tombstones.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque

import orjson

from schooner.engine.admin import AdminRequest
from schooner.engine.config import (
    ConfigError,
    ServerConfig,
    _Table,
    check_links,
    parse_app,
    parse_model,
)

log = logging.getLogger(__name__)

OP_TIMEOUT_S = 600.0  # the longest a call may wait (model start-up included)


class AdminError(Exception):
    def __init__(self, status: int, kind: str, cause: str) -> None:
        super().__init__(cause)
        self.status, self.kind, self.cause = status, kind, cause


def bad(cause: str) -> AdminError:
    return AdminError(400, "bad request", cause)


def _body(req: AdminRequest) -> dict:
    if req.body is None:
        raise AdminError(413, "payload too large", "admin request bodies are limited to 1 MiB")
    if not req.body:
        return {}
    try:
        doc = orjson.loads(req.body)
    except orjson.JSONDecodeError as e:
        raise bad(f"body is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise bad("body must be a JSON object")
    return doc


def _str(doc: dict, key: str) -> str:
    v = doc.get(key)
    if v is None:
        raise bad(f"missing \"{key}\"")
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not v:
        raise bad(f"\"{key}\" must be a non-empty string, got {v!r}")
    return v


class Manager:
    def __init__(self, sup, store=None, warm_versions: int = 1) -> None:
        self.sup = sup
        self.store = store
        self.warm_versions = warm_versions
        self.queue: deque[AdminRequest] = deque()
        self.req: AdminRequest | None = None
        self.op = None
        self.wait = None
        self.deadline = 0.0
        self.history: dict[str, list[str]] = {}  # model -> versions in the order they were current

    # -- the queue ---------------------------------------------------------------------------

    def submit(self, req: AdminRequest) -> None:
        self.queue.append(req)

    def busy(self) -> bool:
        return self.op is not None or bool(self.queue)

    def timeout_s(self) -> float | None:
        """How long the supervisor may block: until the current call's deadline."""
        if self.op is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def step(self) -> None:
        """Advance the call in progress as far as it can go; start the next ones."""
        while True:
            if self.op is None:
                if not self.queue:
                    return
                self.req = self.queue.popleft()
                try:
                    self.op = self._dispatch(self.req)
                except AdminError as e:
                    self._answer(e.status, {"error": e.kind, "cause": e.cause})
                    continue
                if not hasattr(self.op, "send"):  # a read: answered at once
                    result, self.op = self.op, None
                    self._answer(200, result)
                    continue
                self.wait = None
            try:
                if self.wait is not None and not self.wait():
                    if time.monotonic() < self.deadline:
                        return
                    raise AdminError(503, "timeout", f"the change did not take effect within {OP_TIMEOUT_S:g} s")
                self.wait = self.op.send(None)
                self.deadline = time.monotonic() + OP_TIMEOUT_S
            except StopIteration as e:
                self.op = None
                self._saved()
                self._answer(200, e.value if e.value is not None else {"success": True})
            except AdminError as e:
                self.op = None
                self._answer(e.status, {"error": e.kind, "cause": e.cause})
            except Exception as e:  # a bug costs one call, never the server
                log.exception("admin call %s failed", self.req.path)
                self.op = None
                self._answer(500, {"error": "internal error", "cause": repr(e)})

    def abandon(self, why: str) -> None:
        """The server stops: answer the call in progress and every queued one with 503."""
        doc = {"error": "unavailable", "cause": why}
        if self.req is not None:
            self._answer(503, doc)
        self.op = None
        while self.queue:
            self.req = self.queue.popleft()
            self._answer(503, doc)

    def _answer(self, status: int, doc) -> None:
        self.sup.admin.respond(self.req, status, doc)
        self.req = None

    def _saved(self) -> None:
        if self.store is not None:
            try:
                self.store.save(self.sup.cfg)
            except Exception:
                log.exception("could not save the registry")

    # -- routing -----------------------------------------------------------------------------

    def _dispatch(self, req: AdminRequest):
        if not req.authorized:
            raise AdminError(401, "unauthorized", "this admin port needs the header Authorization: Bearer <token>")
        path = req.path.rstrip("/")
        if not path.startswith("/admin/"):
            raise AdminError(404, "not found", f"no route for {req.path}; the admin API lives under /admin/")
        name = path[len("/admin/"):]
        if name == "ping":
            if req.method != "GET":
                raise AdminError(405, "method not allowed", "/admin/ping accepts GET only")
            return b"PONG"  # Clipper's answer, as text
        handler = _READS.get(name) or _WRITES.get(name)
        if handler is None:
            known = ", ".join(sorted(["ping", *_READS, *_WRITES]))
            raise AdminError(404, "not found", f"no admin endpoint '{name}'; known: {known}")
        if req.method != "POST":
            raise AdminError(405, "method not allowed", f"/admin/{name} accepts POST only")
        return getattr(self, handler)(_body(req))

    # -- reads ---------------------------------------------------------------------------------

    @property
    def cfg(self) -> ServerConfig:
        return self.sup.cfg

    def _app_doc(self, a) -> dict:
        return {"name": a.name, "input_type": a.input_type, "input_shape": list(a.input_shape),
                "default_output": a.default_output, "latency_slo_micros": a.latency_slo_micros,
                "linked_models": list(a.models), "policy": a.policy, "cache": a.cache}

    def _model_doc(self, mi: int) -> dict:
        m = self.cfg.models[mi]
        return {"model_name": m.name, "model_version": m.version, "is_current_version": m.current,
                "input_type": m.input_type, "input_shape": list(m.input_shape), "entry_point": m.entry_point,
                "container_name": m.entry_point, "batch_size": m.batch_size, "max_batch_size": m.max_batch_size,
                "replicas": m.replicas, "device": m.device if isinstance(m.device, str) else list(m.device),
                "labels": []}

    def _apps(self):
        return [(i, a) for i, a in enumerate(self.cfg.apps) if not a.deleted]

    def _models(self):
        return [(mi, m) for mi, m in enumerate(self.cfg.models) if not m.deleted]

    def get_all_applications(self, doc):
        verbose = bool(doc.get("verbose"))
        return [self._app_doc(a) if verbose else a.name for _, a in self._apps()]

    def get_application(self, doc):
        name = _str(doc, "name")
        return next((self._app_doc(a) for _, a in self._apps() if a.name == name), {})

    def get_linked_models(self, doc):
        name = _str(doc, "app_name")
        app = next((a for _, a in self._apps() if a.name == name), None)
        if app is None:
            raise AdminError(404, "not found", f"no application named '{name}'; known: {[a.name for _, a in self._apps()]}")
        return list(app.models)

    def get_all_models(self, doc):
        verbose = bool(doc.get("verbose"))
        return [self._model_doc(mi) if verbose else f"{m.name}:{m.version}" for mi, m in self._models()]

    def get_model(self, doc):
        name, version = _str(doc, "model_name"), _str(doc, "model_version")
        mi = self._find_model(name, version, missing_ok=True)
        return {} if mi is None else self._model_doc(mi)

    def get_all_containers(self, doc):
        verbose = bool(doc.get("verbose"))
        out = []
        for mi, m in self._models():
            for ri in range(m.replicas):
                slot = self.sup.replicas[mi][ri] if mi < len(self.sup.replicas) and ri < len(self.sup.replicas[mi]) else None
                child = slot.child if slot is not None else None
                if verbose:
                    out.append({"model_name": m.name, "model_version": m.version, "replica_id": ri,
                                "pid": child.popen.pid if child else None, "ready": bool(child and child.ready),
                                "gpu": m.gpus[ri] if ri < len(m.gpus) else None})
                else:
                    out.append(f"{m.name}:{m.version}:{ri}")
        return out

    def get_container(self, doc):
        name, version = _str(doc, "model_name"), _str(doc, "model_version")
        rid = doc.get("replica_id")
        for c in self.get_all_containers({"verbose": True}):
            if (c["model_name"], c["model_version"], c["replica_id"]) == (name, version, rid):
                return c
        return {}

    def _find_model(self, name: str, version: str | None = None, missing_ok: bool = False) -> int | None:
        for mi, m in self._models():
            if m.name == name and (m.current if version is None else m.version == version):
                return mi
        if missing_ok:
            return None
        versions = [m.version for _, m in self._models() if m.name == name]
        if not versions:
            raise AdminError(404, "not found", f"no model named '{name}'; known: {sorted({m.name for _, m in self._models()})}")
        raise AdminError(404, "not found", f"model '{name}' has no version '{version}'; versions: {versions}")

    def _app_index(self, name: str) -> int:
        for i, a in self._apps():
            if a.name == name:
                return i
        raise AdminError(404, "not found", f"no application named '{name}'; known: {[a.name for _, a in self._apps()]}")

    # -- writes (generators: each `yield` is a condition to wait for) -----------------------

    def _apply(self, cfg: ServerConfig):
        """Broadcast `cfg` and wait until every process has it."""
        try:
            epoch = self.sup.broadcast(cfg)
        except ValueError as e:  # GpuConfigError: an impossible placement
            raise bad(str(e)) from None
        yield lambda: self.sup.configured(epoch)

    def _replace_model(self, mi: int, **changes) -> ServerConfig:
        models = list(self.cfg.models)
        models[mi] = dataclasses.replace(models[mi], **changes)
        return dataclasses.replace(self.cfg, models=tuple(models))

    def _start(self, mi: int, ris: range):
        """Start replicas `ris` of model `mi`; wait until Ready or fail naming the error."""
        self.sup.start_replicas(mi, ris)
        yield lambda: self.sup.replicas_state(mi, ris)[0] or bool(self.sup.replicas_state(mi, ris)[1])
        ok, error = self.sup.replicas_state(mi, ris)
        if not ok:
            self.sup.retire_replicas(mi, ris)
            yield lambda: self.sup.retired(mi, ris)
            m = self.cfg.models[mi]
            raise bad(f"model {m.name}:{m.version} could not start: {error}")

    def _stop(self, mi: int, ris: range):
        self.sup.retire_replicas(mi, ris)
        yield lambda: self.sup.retired(mi, ris)

    def set_num_replicas(self, doc):
        name = _str(doc, "model_name")
        n = doc.get("num_replicas")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise bad(f"\"num_replicas\" must be an integer >= 0 (0 parks the model), got {n!r}")
        mi = self._find_model(name)
        cur = self.cfg.models[mi].replicas
        if n > cur:
            yield from self._apply(self._replace_model(mi, replicas=n))
            try:
                yield from self._start(mi, range(cur, n))
            except AdminError:
                yield from self._apply(self._replace_model(mi, replicas=cur))
                raise
        elif n < cur:
            yield from self._stop(mi, range(n, cur))
            yield from self._apply(self._replace_model(mi, replicas=n))
        return {"success": True, "model_name": name, "num_replicas": n}

    def add_model(self, doc):
        raw = dict(doc)
        for old, new in (("model_name", "name"), ("model_version", "version")):
            if old in raw:
                raw[new] = raw.pop(old)
        container = raw.pop("container_name", None)
        if "entry_point" not in raw and isinstance(container, str) and ":" in container:
            raw["entry_point"] = container
        if "framework" in raw and "model_data_path" in raw and "model_path" not in raw:
            raw["model_path"] = raw.pop("model_data_path")
        for clipper_only in ("labels", "model_data_path"):
            raw.pop(clipper_only, None)
        raw.pop("current", None)
        try:
            m = parse_model(_Table("add_model", "body", raw))
        except ConfigError as e:
            raise bad(str(e)) from None
        if self._find_model(m.name, m.version, missing_ok=True) is not None:
            raise bad(f"model {m.name} already has a version {m.version}; deploy another version string")
        current = self._find_model(m.name, missing_ok=True)
        if current is not None:
            c = self.cfg.models[current]
            if (c.input_type, c.input_shape) != (m.input_type, m.input_shape):
                raise bad(f"model {m.name} takes {c.input_type}{list(c.input_shape)} in version {c.version}; "
                          f"version {m.version} declares {m.input_type}{list(m.input_shape)}")
        for _, a in self._apps():
            if m.name in a.models and (a.input_type, a.input_shape) != (m.input_type, m.input_shape):
                raise bad(f"app {a.name} is linked to {m.name} and takes {a.input_type}{list(a.input_shape)}, "
                          f"not {m.input_type}{list(m.input_shape)}")
        m = dataclasses.replace(m, current=False)  # current once its replicas are Ready
        mi = len(self.cfg.models)
        yield from self._apply(dataclasses.replace(self.cfg, models=(*self.cfg.models, m)))
        try:
            yield from self._start(mi, range(m.replicas))
        except AdminError:
            yield from self._apply(self._replace_model(mi, deleted=True, replicas=0))
            raise
        yield from self._make_current(mi)
        return {"success": True, "model_name": m.name, "model_version": m.version}

    def _make_current(self, mi: int):
        """Make version `mi` current (started if it is not), then stop versions past the warm ones."""
        target = self.cfg.models[mi]
        if target.replicas == 0:
            prev = self._find_model(target.name, missing_ok=True)
            n = max(1, self.cfg.models[prev].replicas) if prev is not None else 1
            yield from self._apply(self._replace_model(mi, replicas=n))
            yield from self._start(mi, range(n))
        else:
            missing = [ri for ri in range(target.replicas)
                       if mi >= len(self.sup.replicas) or ri >= len(self.sup.replicas[mi])
                       or self.sup.replicas[mi][ri].child is None]
            if missing:
                yield from self._start(mi, range(min(missing), target.replicas))
        hist = self.history.setdefault(target.name, [])
        if not hist:  # the versions running before this server's first switch; the current one last
            running = [m for i, m in self._models() if m.name == target.name and m.replicas > 0 and i != mi]
            hist.extend(m.version for m in sorted(running, key=lambda m: m.current))
        models = [dataclasses.replace(m, current=(i == mi)) if m.name == target.name and not m.deleted else m
                  for i, m in enumerate(self.cfg.models)]
        yield from self._apply(dataclasses.replace(self.cfg, models=tuple(models)))
        if target.version in hist:
            hist.remove(target.version)
        hist.append(target.version)
        keep = set(hist[-1 - self.warm_versions:])
        for i, m in self._models():
            if m.name == target.name and m.version not in keep and m.replicas > 0:
                yield from self._stop(i, range(m.replicas))
                yield from self._apply(self._replace_model(i, replicas=0))

    def set_model_version(self, doc):
        name, version = _str(doc, "model_name"), _str(doc, "model_version")
        mi = self._find_model(name, version)
        if not self.cfg.models[mi].current:
            yield from self._make_current(mi)
        return {"success": True, "model_name": name, "model_version": version}

    def delete_versioned_model(self, doc):
        name, version = _str(doc, "model_name"), _str(doc, "model_version")
        mi = self._find_model(name, version)
        m = self.cfg.models[mi]
        if m.current:
            raise bad(f"version {version} of model {name} is current; set another version current first")
        yield from self._stop(mi, range(m.replicas))
        yield from self._apply(self._replace_model(mi, replicas=0, deleted=True))
        return {"success": True}

    def add_app(self, doc):
        raw = dict(doc)
        if "default_output" in raw and not isinstance(raw["default_output"], str):
            raw["default_output"] = orjson.dumps(raw["default_output"]).decode()
        current = {m.name: m for _, m in self._models() if m.current}
        try:
            a = parse_app(_Table("add_app", "body", raw), current)
        except ConfigError as e:
            raise bad(str(e)) from None
        if any(o.name == a.name for _, o in self._apps()):
            raise bad(f"an application named '{a.name}' exists already")
        yield from self._apply(dataclasses.replace(self.cfg, apps=(*self.cfg.apps, a)))
        return {"success": True, "name": a.name}

    def delete_app(self, doc):
        i = self._app_index(_str(doc, "name"))
        apps = list(self.cfg.apps)
        apps[i] = dataclasses.replace(apps[i], deleted=True)
        yield from self._apply(dataclasses.replace(self.cfg, apps=tuple(apps)))
        return {"success": True}

    def _links(self, doc, add: bool):
        i = self._app_index(_str(doc, "app_name"))
        names = doc.get("model_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise bad("\"model_names\" must be a non-empty list of model names")
        a = self.cfg.apps[i]
        if add:
            models = tuple(dict.fromkeys([*a.models, *names]))
        else:
            missing = [n for n in names if n not in a.models]
            if missing:
                raise bad(f"app {a.name} is not linked to {missing}; its links: {list(a.models)}")
            models = tuple(n for n in a.models if n not in names)
        policy = a.policy
        if len(models) > 1 and policy == "single":
            policy = "exp4"  # several models need a selection policy: Exp4 combines them
        elif len(models) <= 1 and policy != "single":
            policy = "single"
        new = dataclasses.replace(a, models=models, policy=policy, policy_params={} if policy != a.policy else a.policy_params)
        current = {m.name: m for _, m in self._models() if m.current}

        def fail(key, expected, got=None):
            return bad(f"{key}: expected {expected}, got {got!r}")

        check_links(new, current, fail)
        apps = list(self.cfg.apps)
        apps[i] = new
        yield from self._apply(dataclasses.replace(self.cfg, apps=tuple(apps)))
        return {"success": True, "app_name": a.name, "linked_models": list(models)}

    def add_model_links(self, doc):
        return (yield from self._links(doc, True))

    def delete_model_links(self, doc):
        return (yield from self._links(doc, False))


_READS = {n: n for n in ("get_all_applications", "get_application", "get_linked_models", "get_all_models",
                         "get_model", "get_all_containers", "get_container")}
_WRITES = {n: n for n in ("add_app", "delete_app", "add_model", "add_model_links", "delete_model_links",
                          "set_model_version", "delete_versioned_model", "set_num_replicas")}
_WRITES["set_model_replicas"] = "set_num_replicas"
