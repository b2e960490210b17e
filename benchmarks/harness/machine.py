"""The machine: CPU pinning, and whether something else is using the CPUs before a point.

Owns the busy-machine check every suite runs before each point. The CPUs of this machine are
shared (a test suite, a build, another benchmark), and a point measured beside them is noise. The
check samples every process's CPU time over ``sample_s`` (one second by default) and counts only
processes outside this harness's own tree (a server under test, idle between points, is ours):
``others_cpu_percent`` is their total in percent of one CPU, beside the load average and the
busiest of them by name. ``wait_until_idle`` repeats the check until the others use less than
``threshold_percent`` or ``max_wait_s`` passes; either way the check goes into the result file,
so a figure measured on a busy machine says so.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import psutil

DEFAULT_SAMPLE_S = 1.0
DEFAULT_THRESHOLD_PERCENT = 15.0  # of one CPU, all other processes together
TOP_OTHERS = 3


@dataclass(frozen=True, slots=True)
class BusyCheck:
    """One sample of the machine before a point."""

    others_cpu_percent: float  # processes outside this harness's tree, % of one CPU
    loadavg_1m: float
    busiest: list[str] = field(default_factory=list)  # "name pid: 87%"
    waited_s: float = 0.0
    busy: bool = False  # still above the threshold when the harness went on

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def text(self) -> str:
        state = "BUSY" if self.busy else "idle"
        waited = f", waited {self.waited_s:.0f} s" if self.waited_s >= 1 else ""
        top = f" ({'; '.join(self.busiest)})" if self.busy and self.busiest else ""
        return (
            f"machine {state}: others {self.others_cpu_percent:.0f}% of a CPU, "
            f"load {self.loadavg_1m:.1f}{waited}{top}"
        )


def own_tree() -> set[int]:
    me = psutil.Process()
    pids = {me.pid}
    try:
        pids |= {p.pid for p in me.children(recursive=True)}
    except psutil.Error:
        pass
    return pids


def _cpu_times() -> dict[int, tuple[str, float]]:
    out = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None:
            out[p.pid] = (p.info["name"] or "?", t.user + t.system)
    return out


def _others(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], span_s: float) -> tuple[float, list[str]]:
    """Other processes' CPU over the span, in % of one CPU, and the busiest of them."""
    ours = own_tree()
    used = []
    for pid, (name, t1) in after.items():
        if pid in ours or pid not in before:
            continue
        delta = t1 - before[pid][1]
        if delta > 0:
            used.append((100 * delta / span_s, name, pid))
    used.sort(reverse=True)
    return sum(u for u, _, _ in used), [f"{name} {pid}: {u:.0f}%" for u, name, pid in used[:TOP_OTHERS]]


class OthersMeter:
    """Other processes' CPU *during* a point: a snapshot before, one after (no extra time)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._before = _cpu_times()

    def stop(self) -> tuple[float, list[str]]:
        return _others(self._before, _cpu_times(), max(1e-3, time.monotonic() - self._t0))


def sample_busy(sample_s: float = DEFAULT_SAMPLE_S, threshold_percent: float = DEFAULT_THRESHOLD_PERCENT) -> BusyCheck:
    """CPU used by processes outside this harness's tree over ``sample_s``."""
    before = _cpu_times()
    time.sleep(sample_s)
    total, busiest = _others(before, _cpu_times(), sample_s)
    return BusyCheck(total, os.getloadavg()[0], busiest, busy=total >= threshold_percent)


def wait_until_idle(
    max_wait_s: float,
    threshold_percent: float = DEFAULT_THRESHOLD_PERCENT,
    sample_s: float = DEFAULT_SAMPLE_S,
    on_wait=None,
) -> BusyCheck:
    """Samples until the machine is idle or ``max_wait_s`` has passed; returns the last sample."""
    began = time.monotonic()
    while True:
        check = sample_busy(sample_s, threshold_percent)
        waited = time.monotonic() - began - sample_s
        if not check.busy or waited >= max_wait_s:
            return BusyCheck(
                check.others_cpu_percent, check.loadavg_1m, check.busiest, max(0.0, waited), check.busy
            )
        if on_wait is not None:
            on_wait(check)


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def default_client_cpus() -> str | None:
    """The first allowed CPU when there are several: the load generator stays on one core."""
    cpus = allowed_cpus()
    return str(cpus[0]) if len(cpus) > 1 else None


def default_server_cpus(client_cpus: str | None) -> str | None:
    """Every allowed CPU but the client's: what a server can really use beside the client."""
    if client_cpus is None:
        return None
    taken = {int(c) for c in client_cpus.split(",") if c}
    rest = [c for c in allowed_cpus() if c not in taken]
    return ",".join(map(str, rest)) if rest else None


def cpu_count(cpus: str | None) -> int:
    """How many CPUs a taskset list names (all allowed ones for None)."""
    if cpus is None:
        return len(allowed_cpus())
    n = 0
    for part in cpus.split(","):
        a, _, b = part.partition("-")
        n += int(b) - int(a) + 1 if b else 1
    return n


def cpu_list(cpus: str | None) -> tuple[int, ...] | None:
    """ "0,2-3" -> (0, 2, 3); None for None."""
    if not cpus:
        return None
    out: list[int] = []
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return tuple(out)


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    """``argv`` under ``taskset -c cpus`` when given; taskset execs, so the pid stays the program's."""
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)
