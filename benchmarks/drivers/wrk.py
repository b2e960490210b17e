"""Load generation with wrk: install it, write request bodies, run one closed-loop point, parse it.

Owns every contact with wrk. A point is ``wrk -t1 -c<C> -d<S>s --latency -s wrk_post.lua URL --
BODIES``: C connections, each sending its next request as soon as the previous answer arrives
(closed loop), cycling through the JSON bodies in the BODIES file. Figures come from the Lua
``done()`` hook (exact µs from wrk's histogram) rather than from wrk's rounded text; the text is
kept beside them for reading.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

LUA_SCRIPT = Path(__file__).with_name("wrk_post.lua")
RESULT_MARKER = "BENCH_RESULT "
WRK_TIMEOUT_S = 2  # wrk's own default, stated so the JSON records it
WRK_EXTRA_WAIT_S = 60  # on top of the run: loading the bodies file and connecting


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result line."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    concurrency: int
    requests: int
    duration_s: float
    req_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    command: list[str]
    output: str

    @property
    def error_count(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def run_printed(command: list[str]) -> bool:
    print(f"wrk not found: running {' '.join(command)}", flush=True)
    return subprocess.run(command, check=False).returncode == 0


def ensure_wrk() -> str:
    """Path of wrk, installing the Debian package first when it is missing."""
    found = shutil.which("wrk")
    if found is None:
        install = ["apt-get", "install", "-y", "wrk"]
        if not run_printed(install):  # a fresh image may have no package lists yet
            run_printed(["apt-get", "update"])
            run_printed(install)
        found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed and `apt-get install -y wrk` did not install it")
    return found


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (proc.stdout or proc.stderr).splitlines()
    return first[0].strip() if first else "unknown"


def write_bodies(path: Path, bodies: Iterable[bytes]) -> int:
    """Writes one JSON body per line; returns how many."""
    count = 0
    with path.open("wb") as f:
        for body in bodies:
            f.write(body)
            f.write(b"\n")
            count += 1
    return count


def whole_seconds(duration_s: float) -> int:
    """wrk takes whole seconds; at least one."""
    return max(1, round(duration_s))


def wrk_command(
    wrk: str, url: str, concurrency: int, duration_s: float, bodies_path: Path, cpus: str | None
) -> list[str]:
    """The wrk command line; ``cpus`` (a taskset list such as "0") pins wrk when given."""
    pin = ["taskset", "-c", cpus] if cpus else []
    return pin + [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{whole_seconds(duration_s)}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(bodies_path),
    ]


def parse_wrk_output(output: str, concurrency: int, command: list[str]) -> WrkResult:
    """Builds a WrkResult from the ``BENCH_RESULT`` line that wrk_post.lua prints."""
    lines = [line for line in output.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise WrkError(f"no {RESULT_MARKER.strip()} line in wrk output:\n{output}")
    raw = orjson.loads(lines[-1][len(RESULT_MARKER) :])
    duration_s = raw["duration_us"] / 1e6
    return WrkResult(
        concurrency=concurrency,
        requests=raw["requests"],
        duration_s=duration_s,
        req_per_s=raw["requests"] / duration_s if duration_s > 0 else 0.0,
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        mean_ms=raw["mean_us"] / 1e3,
        non_2xx=raw["non_2xx"],
        socket_errors={k: raw[f"errors_{k}"] for k in ("connect", "read", "write", "timeout")},
        command=command,
        output=output,
    )


def run_wrk(
    wrk: str,
    url: str,
    concurrency: int,
    duration_s: float,
    bodies_path: Path,
    cpus: str | None,
    prefix: tuple[str, ...] | list[str] = (),
) -> WrkResult:
    """Run wrk (under `prefix`, e.g. nsenter into a server's network namespace) and parse it."""
    command = [*prefix, *wrk_command(wrk, url, concurrency, duration_s, bodies_path, cpus)]
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=duration_s + WRK_EXTRA_WAIT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {' '.join(command)}") from exc
    if proc.returncode != 0:
        raise WrkError(
            f"wrk exited {proc.returncode}: {' '.join(command)}\n{proc.stdout}{proc.stderr}"
        )
    return parse_wrk_output(proc.stdout + proc.stderr, concurrency, command)
