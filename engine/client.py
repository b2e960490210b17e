"""A client of a running server's admin API: the methods a script calls to deploy, version,
roll back, scale and link, named after Clipper's `ClipperConnection` where one exists.

`connect(url, token)` returns an `AdminClient`; `schooner.Server` (the launcher) has the same
methods on the server it started. Every call answers when its change is in force on the
server; a refused call raises `AdminCallError` carrying the server's `{"error", "cause"}`.
Standard library only (http.client), so it works in any environment.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from collections.abc import Callable, Sequence


class AdminCallError(RuntimeError):
    """The server refused an admin call; `status` and `cause` say why."""

    def __init__(self, endpoint: str, status: int, doc) -> None:
        self.endpoint, self.status = endpoint, status
        self.error = doc.get("error", "") if isinstance(doc, dict) else ""
        self.cause = doc.get("cause", doc) if isinstance(doc, dict) else doc
        super().__init__(f"{endpoint}: {status} {self.error}: {self.cause}")


class AdminClient:
    def __init__(self, url: str = "http://127.0.0.1:1338", token: str | None = None, timeout_s: float = 900.0,
                 alive: Callable[[], None] | None = None) -> None:
        u = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 1338
        self.url = f"http://{self.host}:{self.port}"
        self.token = token if token is not None else os.environ.get("SCHOONER_ADMIN_TOKEN")
        self.timeout_s = timeout_s
        self._alive = alive  # the launcher's check that its engine still runs

    def call(self, endpoint: str, body: dict | None = None):
        """POST /admin/<endpoint> with `body` (GET for ping); the decoded answer."""
        if self._alive is not None:
            self._alive()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            method = "GET" if endpoint == "ping" else "POST"
            conn.request(method, f"/admin/{endpoint}", None if body is None else json.dumps(body), headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError:
            if self._alive is not None:
                self._alive()  # a dead engine says so rather than a connection error
            raise
        finally:
            conn.close()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = raw.decode(errors="replace")
        if resp.status != 200:
            raise AdminCallError(endpoint, resp.status, doc)
        return doc

    # -- Clipper's names ---------------------------------------------------------------------

    def ping(self) -> str:
        return self.call("ping")

    def register_application(self, name: str, input_type: str, default_output: str = "null",
                             latency_slo_micros: int = 100_000, **settings) -> dict:
        """An app: `settings` are the [[apps]] keys (input_shape, policy, cache, models, ...)."""
        return self.call("add_app", {"name": name, "input_type": input_type, "default_output": default_output,
                                     "latency_slo_micros": latency_slo_micros, **settings})

    def delete_application(self, name: str) -> dict:
        return self.call("delete_app", {"name": name})

    def deploy_model(self, name: str, version: str, input_type: str, entry_point: str | None = None,
                     **settings) -> dict:
        """A model version, current once its replicas are Ready. `entry_point` names a class,
        object or function (`pkg.module:attr`); or give `framework` ("torchscript", "sklearn",
        "onnx") and `model_path` for a saved artifact. `settings` are the [[models]] keys
        (input_shape, replicas, max_batch_size, device, init_args, batch_size, ...)."""
        body = {"model_name": name, "model_version": str(version), "input_type": input_type, **settings}
        if entry_point is not None:
            body["entry_point"] = entry_point
        return self.call("add_model", body)

    def link_model_to_app(self, app_name: str, model_name: str | Sequence[str]) -> dict:
        names = [model_name] if isinstance(model_name, str) else list(model_name)
        return self.call("add_model_links", {"app_name": app_name, "model_names": names})

    def unlink_model_from_app(self, app_name: str, model_name: str | Sequence[str]) -> dict:
        names = [model_name] if isinstance(model_name, str) else list(model_name)
        return self.call("delete_model_links", {"app_name": app_name, "model_names": names})

    def set_model_version(self, name: str, version: str) -> dict:
        return self.call("set_model_version", {"model_name": name, "model_version": str(version)})

    def set_num_replicas(self, name: str, num_replicas: int) -> dict:
        return self.call("set_num_replicas", {"model_name": name, "num_replicas": num_replicas})

    def delete_versioned_model(self, name: str, version: str) -> dict:
        return self.call("delete_versioned_model", {"model_name": name, "model_version": str(version)})

    def get_all_apps(self, verbose: bool = False) -> list:
        return self.call("get_all_applications", {"verbose": verbose})

    def get_app_info(self, name: str) -> dict:
        return self.call("get_application", {"name": name})

    def get_linked_models(self, app_name: str) -> list:
        return self.call("get_linked_models", {"app_name": app_name})

    def get_all_models(self, verbose: bool = False) -> list:
        return self.call("get_all_models", {"verbose": verbose})

    def get_model_info(self, name: str, version: str) -> dict:
        return self.call("get_model", {"model_name": name, "model_version": str(version)})

    def get_all_model_replicas(self, verbose: bool = False) -> list:
        return self.call("get_all_containers", {"verbose": verbose})


def connect(url: str = "http://127.0.0.1:1338", token: str | None = None) -> AdminClient:
    """A client of the admin API of a running server (the token: argument, else
    $SCHOONER_ADMIN_TOKEN)."""
    return AdminClient(url, token)
