"""CPU time of a server's process tree, by process role (psutil), and what it costs per query.

Owns ``snapshot`` (user + system seconds of the server's top process and every descendant now,
each labelled with its role group by ``tools.processes``: supervisor, frontend, scheduler, model,
other) and the pure ``cpu_delta_s`` (what each role group, and all of them together, spent
between two snapshots). A process is known by (pid, start time), so a reused pid is never
subtracted from another process's time; one that started between the snapshots counts from zero,
one that exited between them is lost (its time cannot be read back) and is counted in ``exited``.
Only the processes' own times: ``cpu_times().children_*`` (reaped children) are not added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from tools.processes import role_group, role_of

ROLE_GROUPS = ("frontend", "scheduler", "model", "supervisor", "other")
TOTAL = "total"


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    role: str  # a role group of ROLE_GROUPS
    cpu_s: float  # user + system


ProcessKey = tuple[int, float]  # (pid, create time)
CpuSnapshot = dict[ProcessKey, ProcessCpu]


def _read(process: psutil.Process, is_root: bool) -> tuple[ProcessKey, ProcessCpu]:
    with process.oneshot():
        times = process.cpu_times()
        role = role_group(role_of(process.cmdline(), is_root))
        return (process.pid, process.create_time()), ProcessCpu(role, times.user + times.system)


def snapshot(root_pid: int) -> CpuSnapshot:
    """Every live process of the tree under ``root_pid`` (itself included); raises if it is gone."""
    root = psutil.Process(root_pid)
    key, cpu = _read(root, True)
    out: CpuSnapshot = {key: cpu}
    for child in root.children(recursive=True):
        try:
            key, cpu = _read(child, False)
        except psutil.Error:  # exited since the listing
            continue
        out[key] = cpu
    return out


@dataclass(frozen=True, slots=True)
class CpuDelta:
    seconds: dict[str, float]  # role group -> CPU seconds between the snapshots, and TOTAL
    processes: int  # processes in the second snapshot
    started: int  # of which started after the first
    exited: int  # in the first, gone from the second (their last slice is not counted)

    def per_query_us(self, queries: int) -> dict[str, float] | None:
        """Microseconds of CPU per query of every role group and TOTAL; None for no query."""
        if queries <= 0:
            return None
        return {role: 1e6 * s / queries for role, s in self.seconds.items()}


def cpu_delta_s(before: Mapping[ProcessKey, ProcessCpu], after: Mapping[ProcessKey, ProcessCpu]) -> CpuDelta:
    """CPU seconds each role group spent from ``before`` to ``after`` (every group present, 0.0 if none)."""
    seconds = dict.fromkeys(ROLE_GROUPS, 0.0)
    for key, cpu in after.items():
        spent = cpu.cpu_s - before[key].cpu_s if key in before else cpu.cpu_s
        seconds[cpu.role] = seconds.get(cpu.role, 0.0) + max(0.0, spent)
    seconds[TOTAL] = sum(seconds.values())
    started = sum(1 for key in after if key not in before)
    exited = sum(1 for key in before if key not in after)
    return CpuDelta(seconds, len(after), started, exited)
