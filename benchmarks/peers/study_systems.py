"""The peers as systems of the latency study: ``python -m benchmarks.study --plugin benchmarks.peers.study_systems``.

Owns nothing but the adapter: it registers ``litserve`` and ``rayserve`` with
``benchmarks.study_systems.register_system``, each starting the record of
``benchmarks.peers.systems`` for the study's workload and handing back its base URL and stop.
The peers serve W1 and W2 only (the models of ``benchmarks.workloads``); the study's SLO means
nothing to them (they have no deadline), so it is not passed on.

Ray Serve's base URL is a port forward into its loopback-only network namespace
(``benchmarks.peers.netns_forward``): an open-loop client on the host's loopback reaches it
through one relay process, which costs CPU on the same cores and some latency per request.
``benchmarks.peers.run_peers`` avoids that hop by starting wrk inside the namespace.
"""

from __future__ import annotations

import orjson

from benchmarks.peers.systems import PeerSystem, make_peer_system
from benchmarks.study_systems import RunningSystem, System, SystemContext, register_system
from benchmarks.workloads_extra import StudyWorkload

PEER_WORKLOADS = frozenset({"w1", "w2"})


def starter(name: str):  # type: ignore[no-untyped-def]
    def start(workload: StudyWorkload, ctx: SystemContext) -> RunningSystem:
        if workload.name not in PEER_WORKLOADS:
            raise RuntimeError(f"{name} serves {sorted(PEER_WORKLOADS)} only, not {workload.name}")
        system: PeerSystem = make_peer_system(name, ctx.work_dir, ctx.server_cpus)
        base_url = system.start(workload.name)
        config_text = orjson.dumps(system.describe(), option=orjson.OPT_INDENT_2).decode()
        return RunningSystem(
            base_url, system.stop, log_path=system.log_path, config_text=config_text
        )

    return start


register_system(
    System(
        "litserve",
        "LitServe 0.2.19: 1 API server + 1 inference worker, batch 64 / 2 ms",
        starter("litserve"),
        PEER_WORKLOADS,
    )
)
register_system(
    System(
        "rayserve",
        "Ray Serve 2.60: 1 replica, @serve.batch 64 / 2 ms, own netns, reached via a port forward",
        starter("rayserve"),
        PEER_WORKLOADS,
    )
)
