"""The suites: each one question, one file, run as ``python -m benchmarks <suite>``.

``SUITES`` maps a suite's name to its module and one line of what it answers; a suite module has
``main(argv) -> int``. Nothing imports a suite but the command line (``benchmarks.__main__``).
"""

from __future__ import annotations

SUITES: dict[str, tuple[str, str]] = {
    "serving": ("benchmarks.suites.serving", "make bench: Schooner vs the inline server vs the model limit, closed loop (wrk)"),
    "peers": ("benchmarks.suites.peers", "Schooner vs LitServe and Ray Serve, same batching, batch wait 0 and 2 ms"),
    "capacity": ("benchmarks.suites.capacity", "open loop: capacity at the SLO by bisection, recovery, bursts"),
    "management": ("benchmarks.suites.management", "a version switch and a scale-up under a steady open-loop load vs the same load without"),
    "scheduler": ("benchmarks.suites.scheduler", "AIMD vs fixed batch sizes, delayed batching, the cache"),
    "selection": ("benchmarks.suites.selection", "model-selection policies on real data (no server)"),
    "perf-analyzer": ("benchmarks.suites.perf_analyzer", "Triton's perf_analyzer against the V2 endpoint"),
    "ceiling": ("benchmarks.suites.ceiling", "the open-loop load generator's own ceiling"),
    "readme": ("benchmarks.suites.readme", "print the README's tables from benchmarks/published/ (command, date, machine, spread)"),
    "ipc": ("benchmarks.micro.ipc", "micro: the IPC round trips of DESIGN.md's table"),
    "scheduler-core": ("benchmarks.micro.metrics_cost", "micro: the scheduler core's cost per query, with and without metrics"),
    "answers": ("benchmarks.micro.answers", "micro: a V2 answer from scores to tensor, JSON rows vs typed rows"),
}
