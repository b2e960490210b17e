"""Schooner: low-latency prediction serving over shared memory (Clipper, done properly).

This is the `schooner` package itself (pyproject maps it onto `engine/api/`); what a script
needs is here:

    import schooner

    with schooner.Server(port=0, admin_port=0) as server:          # an engine of its own
        server.deploy_model("mlp", "1", "floats", entry_point="mypkg.models:MLP",
                            input_shape=[16], replicas=2)
        server.deploy_python_closure("double", "1", lambda batch: batch * 2, "floats",
                                     input_shape=[16])
        server.register_application("demo", "floats", default_output="-1",
                                    latency_slo_micros=20_000, input_shape=[16])
        server.link_model_to_app("demo", "mlp")
        server.set_num_replicas("mlp", 3)
        print(server.query_url, server.admin_url, server.get_all_models())

    admin = schooner.connect("http://127.0.0.1:1338")               # a running server

* `Server` starts `schooner serve` in a child process (a fresh interpreter, never a fork),
  returns once it serves, and stops it (drained, cleaned up) when the block ends.
* `connect(url, token)` gives the same admin methods for a server started elsewhere.
* Every admin method answers when its change is in force and raises `AdminCallError` with the
  server's cause when refused; `EngineExited` when the launcher's engine died.
"""

from schooner.engine.client import AdminCallError, AdminClient, connect
from schooner.engine.launcher import EngineExited, Server


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("schooner")
    except Exception:  # a source tree that is not installed
        return "0+unknown"


__version__ = _version()
__all__ = ["AdminCallError", "AdminClient", "EngineExited", "Server", "connect", "__version__"]
