"""Start a Schooner engine from Python, deploy a model, query it, roll out a new version,
scale it, and stop -- all while it serves. Run from the repository root (or anywhere the
`examples` package is importable):

    python examples/deploy_and_query.py
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import schooner  # noqa: E402


class Scaled:
    """A stand-in for a real model: each row's sum times `factor` (module-level, so the model
    process can import it as `examples.deploy_and_query:Scaled`)."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.sum(axis=1) * self.factor


def predict(server: schooner.Server, app: str, x: list[float]) -> dict:
    req = urllib.request.Request(f"{server.query_url}/{app}/predict", data=json.dumps({"input": x}).encode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def main() -> None:
    with schooner.Server(port=0, admin_port=0) as server:
        print("query port:", server.query_url, " admin:", server.admin_url)
        server.deploy_model("scaled", "1", "floats", entry_point="examples.deploy_and_query:Scaled",
                            input_shape=[4], init_args={"factor": 1.0})
        server.register_application("demo", "floats", default_output="-1", latency_slo_micros=100_000,
                                    input_shape=[4])
        server.link_model_to_app("demo", "scaled")
        print("v1:", predict(server, "demo", [1, 2, 3, 4]))

        server.deploy_model("scaled", "2", "floats", entry_point="examples.deploy_and_query:Scaled",
                            input_shape=[4], init_args={"factor": 10.0})  # current once ready
        print("v2:", predict(server, "demo", [1, 2, 3, 4]))
        server.set_model_version("scaled", "1")  # roll back: v1 stayed warm
        print("rolled back:", predict(server, "demo", [1, 2, 3, 4]))

        server.deploy_python_closure("negate", "1", lambda batch: -batch.sum(axis=1), "floats", input_shape=[4])
        server.set_num_replicas("scaled", 2)
        print("models:", server.get_all_models(), " replicas:", server.get_all_model_replicas())


if __name__ == "__main__":
    main()
