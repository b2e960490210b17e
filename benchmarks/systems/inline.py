"""The inline server as a system under test (``benchmarks.systems.inline_server``): batch 1."""

from __future__ import annotations

import sys

from benchmarks.harness import REPO_ROOT
from benchmarks.harness.machine import pinned
from benchmarks.harness.servers import LOOPBACK, ServerProc, free_port
from benchmarks.systems import RunningSystem, StartContext
from benchmarks.workloads import Workload


class InlineSystem:
    name = "inline"
    description = "one Python process (uvloop + httptools), model inline, batch 1: the Python HTTP limit"
    batching = False

    def serves(self, workload: Workload) -> bool:
        return workload.name != "digits"

    def start(self, workload: Workload, ctx: StartContext) -> RunningSystem:
        port = free_port()
        argv = [sys.executable, "-m", "benchmarks.systems.inline_server", "--port", str(port)]
        if workload.config_path is not None:
            argv += ["--config", workload.config_path, "--app", workload.app_name]
        else:
            argv += ["--workload", workload.name]
        log = ctx.work_dir / f"inline-{workload.name}.log"
        server = ServerProc(f"inline {workload.name}", pinned(argv, ctx.server_cpus), port, REPO_ROOT, log)
        server.__enter__()
        settings = {"max_batch_size": 1, "batch_wait_s": 0.0, "processes": 1, "server_cpus": ctx.server_cpus}
        return RunningSystem("inline", f"http://{LOOPBACK}:{port}", server.stop, settings, log_path=log)
