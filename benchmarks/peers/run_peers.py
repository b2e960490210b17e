"""``python -m benchmarks.peers.run_peers``: LitServe and Ray Serve beside the inline server and Schooner.

Owns the peer comparison's plan and report. In one run, for each workload (W1, W2) it drives
the inline server and Schooner exactly as ``benchmarks.run`` does (its ``drive_target``), and each
peer system (``benchmarks.peers.systems``) the same way: fresh server, readiness, one contract
request whose answer is compared with the model computed here in-process, a warm-up at the
highest concurrency, one closed-loop wrk run per concurrency with the same request bodies
(``benchmarks.run.RequestInputs``), stop and leak check. Peers the harness cannot reach on the
host's loopback (Ray Serve, confined to its own network namespace) are loaded by wrk started
inside that namespace (``nsenter``), not through the port forward, so no hop is added.

Prints ``benchmarks.run``'s table (req/s, p50, p99, ratio to inline, model limits, flags) and a
side-by-side table (one row per workload and concurrency, one column group per system), then
writes ``benchmarks/results/peers-<UTC>.json``: git sha, host, versions (Schooner's venv and
each peer's full ``pip freeze``), config, peer configurations, contract checks, and every point.
Nothing here judges a figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import orjson
import psutil

from benchmarks import run
from benchmarks.model_limit import ModelLimitPoint
from benchmarks.peers.envs import PEER_ENVS, PeerEnv, PeerEnvError, ensure_env
from benchmarks.peers.systems import LoadRoute, PeerSystem, make_peer_system
from benchmarks.server_proc import ServerStartError
from benchmarks.workloads import WORKLOADS, load_model, make_inputs, request_body
from benchmarks.wrk_driver import (
    WrkError,
    WrkResult,
    ensure_wrk,
    run_wrk,
)

BASE_SYSTEMS = ("inline", "schooner")
PEER_SYSTEM_NAMES = tuple(PEER_ENVS)
ALL_SYSTEMS = BASE_SYSTEMS + PEER_SYSTEM_NAMES
CONTRACT_SEED = 999  # one row, apart from the measured runs' seeds (1000 + run index)
CONTRACT_RTOL = 1e-5
CONTRACT_ATOL = 1e-6
CONTRACT_TIMEOUT_S = 30.0


class ContractError(RuntimeError):
    """A peer's answer does not follow the inline server's contract."""


@dataclass(frozen=True, slots=True)
class ContractCheck:
    """One request through ``base_url`` compared with the model's own answer."""

    system: str
    workload: str
    url: str
    status: int | None
    response: str
    expected_output: object
    ok: bool
    problem: str | None


@dataclass(frozen=True, slots=True)
class PeerRunConfig:
    bench: run.BenchConfig
    workloads: tuple[str, ...]
    litserve_fast_queue: bool


# ---------------------------------------------------------------------------------------------
# Contract and load


def expected_output(workload: str, row: np.ndarray) -> object:
    """The model's answer for ``row``, as JSON would carry it (float or list of floats)."""
    return load_model(workload).predict(row.reshape(1, -1))[0].tolist()


def check_contract(system: str, base_url: str, workload: str) -> ContractCheck:
    row = make_inputs(1, CONTRACT_SEED)[0]
    expected = expected_output(workload, row)
    url = f"{base_url}/{workload}/predict"
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=CONTRACT_TIMEOUT_S)
    status, text = None, ""

    def result(problem: str | None) -> ContractCheck:
        return ContractCheck(
            system, workload, url, status, text, expected, problem is None, problem
        )

    try:
        conn.request("POST", parts.path, request_body(row), {"Content-Type": "application/json"})
        response = conn.getresponse()
        status, text = response.status, response.read().decode(errors="replace")
    except OSError as exc:
        return result(f"request failed: {exc!r}")
    finally:
        conn.close()
    if status != 200:
        return result(f"status {status}")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return result(f"not JSON: {exc}")
    if not isinstance(doc, dict) or set(doc) != {"query_id", "output", "default"}:
        return result(f"keys {sorted(doc) if isinstance(doc, dict) else type(doc).__name__}")
    if type(doc["query_id"]) is not int or doc["default"] is not False:
        return result("query_id is not an integer or default is not false")
    got = np.asarray(doc["output"], dtype=np.float64)
    want = np.asarray(expected, dtype=np.float64)
    if got.shape != want.shape or not np.allclose(
        got, want, rtol=CONTRACT_RTOL, atol=CONTRACT_ATOL
    ):
        return result(f"output {doc['output']} differs from the model's {expected}")
    return result(None)


def run_wrk_routed(
    route: LoadRoute,
    wrk: str,
    url: str,
    concurrency: int,
    duration_s: float,
    bodies_path: Path,
    cpus: str | None,
) -> WrkResult:
    """``benchmarks.wrk_driver.run_wrk``, started under ``route.prefix`` (e.g. nsenter) when it has one."""
    return run_wrk(wrk, url, concurrency, duration_s, bodies_path, cpus, route.prefix or ())


def drive_peer(
    system: PeerSystem,
    workload: str,
    config: run.BenchConfig,
    wrk: str,
    inputs: run.RequestInputs,
    checks: list[ContractCheck],
) -> run.TargetOutcome:
    """``benchmarks.run.drive_target`` for a peer system record; failures are recorded, not raised."""
    target = run.Target(system.name, workload, workload, run.FLOATS_FAMILY)
    outcome = run.TargetOutcome(target, psutil.cpu_percent(interval=run.BUSY_SAMPLE_S))
    label = f"{system.name} {workload}"
    pin = config.wrk_cpus
    try:
        base_url = system.start(workload)
        route = system.load_route
        via = f" (load: {' '.join(route.prefix)} {route.base_url})" if route.prefix else ""
        print(
            f"{label}: ready at {base_url}{via} "
            f"(machine {outcome.cpu_busy_percent_before:.0f}% busy just before start)",
            flush=True,
        )
        check = check_contract(system.name, base_url, workload)
        checks.append(check)
        if not check.ok:
            raise ContractError(
                f"contract check failed: {check.problem}; answer: {check.response[:300]}"
            )
        print(f"{label}: contract ok: {check.response[:120]}", flush=True)
        url = f"{route.base_url}/{workload}/predict"
        warmup = inputs.bodies(target.input_family, 0)
        outcome.warmup = run_wrk_routed(
            route, wrk, url, max(config.concurrencies), config.warmup_s, warmup.path, pin
        )
        for run_index, concurrency in enumerate(config.concurrencies, start=1):
            bodies = inputs.bodies(target.input_family, run_index)
            point = run.Point(system.name, workload, concurrency, bodies.count, None)
            try:
                result = run_wrk_routed(
                    route, wrk, url, concurrency, config.duration_s, bodies.path, pin
                )
            except WrkError as exc:
                outcome.points.append(dataclasses.replace(point, error=str(exc)))
                print(f"{label} c={concurrency}: wrk failed: {exc}", flush=True)
                continue
            outcome.points.append(dataclasses.replace(point, result=result))
            print(f"{label} c={concurrency}: {run.describe(result)}", flush=True)
    except (ServerStartError, WrkError, PeerEnvError, ContractError) as exc:
        outcome.error = str(exc)
        print(f"{label}: FAILED: {exc}", flush=True)
    finally:
        outcome.stop = system.stop()
    return outcome


# ---------------------------------------------------------------------------------------------
# Report


def side_by_side(outcomes: Sequence[run.TargetOutcome], systems: Sequence[str]) -> str:
    """One row per (workload, concurrency); per system: req/s, ratio to inline, p99 ms."""
    points = {(p.system, p.workload, p.concurrency): p for o in outcomes for p in o.points}
    inline = run.inline_rates(outcomes)
    shown = [s for s in systems if any(o.target.system == s for o in outcomes)]
    gap = "   "
    head = f"{'':<9}{'':>5}" + "".join(f"{gap}{s:<25}" for s in shown)
    sub = f"{'workload':<9}{'conc':>5}" + "".join(
        f"{gap}{'req/s':>8} {'x inline':>8} {'p99 ms':>7}" for _ in shown
    )
    lines = [head.rstrip(), sub, "-" * len(sub)]
    order = {w: i for i, w in enumerate(WORKLOADS)}
    keys = sorted(
        {(p.workload, p.concurrency) for p in points.values()},
        key=lambda k: (order.get(k[0], len(order)), k[1]),
    )
    for workload, concurrency in keys:
        row = f"{workload:<9}{concurrency:>5}"
        for system in shown:
            point = points.get((system, workload, concurrency))
            r = point.result if point else None
            if point is None or r is None:
                row += f"{gap}{'-':>8} {'-':>8} {'-':>7}"
                continue
            ratio = run.ratio_to_inline(point, inline)
            ratio_text = f"{ratio:.2f}x" if ratio is not None else "-"
            rate = f"{r.req_per_s:,.0f}" + ("*" if run.point_flags(point) else "")
            row += f"{gap}{rate:>8} {ratio_text:>8} {r.p99_ms:>7.1f}"
        lines.append(row)
    lines.append("* the point has flags (errors, repeated inputs): see the table above")
    return "\n".join(lines)


def peer_record(system: PeerSystem, env: PeerEnv | None) -> dict[str, object]:
    record: dict[str, object] = {"config": system.describe()}
    if env is not None:
        record["env"] = {
            "path": str(env.spec.path),
            "requirements": list(env.spec.requirements),
            "last_install": env.last_install,
            "installed_in_this_run_s": env.install_s,
            "freeze": list(env.freeze),
        }
    return record


def write_results(
    config: PeerRunConfig,
    outcomes: Sequence[run.TargetOutcome],
    limits: Sequence[ModelLimitPoint],
    checks: Sequence[ContractCheck],
    peers: dict[str, dict[str, object]],
    wrk: str,
    started: datetime,
) -> Path:
    inline = run.inline_rates(outcomes)
    document = {
        "started_utc": started.isoformat(),
        "command": ["python", "-m", "benchmarks.peers.run_peers", *sys.argv[1:]],
        "git": run.git_info(),
        "host": run.host_info(),
        "versions": run.versions(wrk),
        "config": asdict(config),
        "schooner_configs": {
            w: run.schooner_config_toml(WORKLOADS[w], config.bench) for w in config.workloads
        },
        "peers": peers,
        "contract_checks": [asdict(c) for c in checks],
        "model_limits": [asdict(p) for p in limits],
        "targets": [
            {
                "target": asdict(o.target),
                "cpu_busy_percent_before": o.cpu_busy_percent_before,
                "error": o.error,
                "stop": asdict(o.stop) if o.stop else None,
                "warmup": asdict(o.warmup) if o.warmup else None,
                "flags": run.outcome_flags(o),
            }
            for o in outcomes
        ],
        "points": [
            {
                **asdict(p),
                "ratio_to_inline": run.ratio_to_inline(p, inline),
                "flags": run.point_flags(p),
            }
            for o in outcomes
            for p in o.points
        ],
    }
    run.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = run.RESULTS_DIR / f"peers-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return path


# ---------------------------------------------------------------------------------------------
# Entry point


def parse_config(argv: list[str] | None) -> PeerRunConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers.run_peers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=float, help="seconds per point (default 5, --quick 2)")
    parser.add_argument(
        "--concurrency", default="1,16,64", help="wrk connections (default 1,16,64)"
    )
    parser.add_argument(
        "--systems", default=",".join(ALL_SYSTEMS), help=f"subset of {','.join(ALL_SYSTEMS)}"
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="subset of w1,w2")
    parser.add_argument(
        "--server-cpus", help="taskset CPU list for every server (default unpinned)"
    )
    parser.add_argument(
        "--litserve-fast-queue", action="store_true", help="LitServe's ZeroMQ queues (fast_queue)"
    )
    parser.add_argument("--quick", action="store_true", help="short points, for a smoke run")
    args = parser.parse_args(argv)
    systems = tuple(s for s in ALL_SYSTEMS if s in args.systems.split(","))
    workloads = tuple(w for w in WORKLOADS if w in args.workloads.split(","))
    if set(args.systems.split(",")) - set(ALL_SYSTEMS) or not systems:
        parser.error(f"--systems takes a subset of {','.join(ALL_SYSTEMS)}")
    if set(args.workloads.split(",")) - set(WORKLOADS) or not workloads:
        parser.error(f"--workloads takes a subset of {','.join(WORKLOADS)}")
    # benchmarks.run's own parser builds the shared config (durations, inputs, wrk pinning).
    run_argv = ["--systems", ",".join(s for s in systems if s in BASE_SYSTEMS) or "inline"]
    run_argv += ["--concurrency", args.concurrency]
    if args.duration:
        run_argv += ["--duration", str(args.duration)]
    if args.server_cpus:
        run_argv += ["--server-cpus", args.server_cpus]
    if args.quick:
        run_argv.append("--quick")
    bench = dataclasses.replace(run.parse_config(run_argv), systems=systems)
    return PeerRunConfig(bench, workloads, args.litserve_fast_queue)


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    bench = config.bench
    started = datetime.now(UTC)
    wrk = ensure_wrk()
    peer_names = [s for s in bench.systems if s in PEER_SYSTEM_NAMES]
    envs = {name: ensure_env(name) for name in peer_names}  # install first, outside any timing
    print(
        f"Peer benchmark: systems {', '.join(bench.systems)}; workloads "
        f"{', '.join(config.workloads)}; concurrency {bench.concurrencies}; "
        f"{bench.duration_s:g} s per point after a {bench.warmup_s:g} s warm-up; "
        f"{bench.distinct_inputs_per_run:,} distinct request bodies per run, the same for every system"
    )
    print(
        f"load: closed loop, wrk -t1 -c<C> --latency on CPU {bench.wrk_cpus or 'any'} "
        f"(inside the server's network namespace for rayserve); servers on {run.LOOPBACK}, "
        f"CPU {bench.server_cpus or 'any'}"
    )
    limits: list[ModelLimitPoint] = []
    if {"inline", "schooner"} & set(bench.systems):
        limits = run.measure_model_limits(bench)
        print(run.format_model_limits(limits), flush=True)
    outcomes: list[run.TargetOutcome] = []
    checks: list[ContractCheck] = []
    peers: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="schooner-peers-") as tmp:
        work_dir = Path(tmp)
        inputs = run.RequestInputs(work_dir, bench.distinct_inputs_per_run)
        for system_name in bench.systems:
            for workload in config.workloads:
                if system_name in BASE_SYSTEMS:
                    target = run.Target(system_name, workload, workload, run.FLOATS_FAMILY)
                    outcomes.append(run.drive_target(target, bench, wrk, inputs, work_dir))
                    continue
                options = (
                    {"fast_queue": True}
                    if system_name == "litserve" and config.litserve_fast_queue
                    else {}
                )
                system = make_peer_system(system_name, work_dir, bench.server_cpus, **options)
                outcomes.append(drive_peer(system, workload, bench, wrk, inputs, checks))
                peers[system_name] = peer_record(system, envs[system_name])
        print()
        print(run.format_report(outcomes, limits))
        print()
        print(side_by_side(outcomes, bench.systems))
    path = write_results(config, outcomes, limits, checks, peers, wrk, started)
    print(f"\nresults: {path}")
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
