"""The IPC round trips of DESIGN.md's table, re-measurable: ``python -m benchmarks ipc``.

Owns the micro-benchmarks behind the design card's "Measured on this machine" table: a wake-up
round trip between two processes (eventfd, posix_ipc semaphore, pipe; both on one core, and one
per core), ``multiprocessing.Queue``, building and writing one Arrow IPC message and reading it
back into numpy, a raw numpy slot write and view, and orjson's loads/dumps of the sizes a query
carries. Each figure is the median over ``--repeats`` runs (min-max beside it) of the run's
median (round trips: and p99) per operation. Child processes are forked and reaped here; the
semaphore is unlinked at once (nothing is left in /dev/shm).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Callable

import numpy as np

from benchmarks.harness.cli import add_common_flags, common_config
from benchmarks.harness.machine import allowed_cpus, wait_until_idle
from benchmarks.harness.results import ResultWriter, markdown_table
from benchmarks.harness.stats import spread

ROUND_TRIPS = 20_000
QUICK_ROUND_TRIPS = 3_000


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def round_trip_us(kind: str, n: int, parent_cpu: int | None, child_cpu: int | None) -> tuple[float, float]:
    """(median, p99) µs of ``n`` ping-pongs between this process and a forked child."""
    import posix_ipc

    if kind == "eventfd":
        a, b = os.eventfd(0), os.eventfd(0)
        post = lambda fd: os.eventfd_write(fd, 1)  # noqa: E731
        wait = os.eventfd_read
        ends = (a, b, a, b)
    elif kind == "pipe":
        (ra, wa), (rb, wb) = os.pipe(), os.pipe()
        post = lambda fd: os.write(fd, b"x")  # noqa: E731
        wait = lambda fd: os.read(fd, 1)  # noqa: E731
        ends = (wa, rb, ra, wb)  # parent posts on wa, waits on rb; child waits on ra, posts on wb
    elif kind == "semaphore":
        name = f"/schooner-bench-ipc-{os.getpid()}"
        sa = posix_ipc.Semaphore(name + "a", posix_ipc.O_CREX, initial_value=0)
        sb = posix_ipc.Semaphore(name + "b", posix_ipc.O_CREX, initial_value=0)
        sa.unlink()
        sb.unlink()  # both ends hold them open: nothing stays in /dev/shm
        sems = {1: sa, 2: sb}
        post = lambda k: sems[k].release()  # noqa: E731
        wait = lambda k: sems[k].acquire()  # noqa: E731
        ends = (1, 2, 1, 2)
    else:
        raise ValueError(kind)
    parent_post, parent_wait, child_wait, child_post = ends
    pid = os.fork()
    if pid == 0:
        try:
            _pin(child_cpu)
            for _ in range(n + 100):
                wait(child_wait)
                post(child_post)
        finally:
            os._exit(0)
    _pin(parent_cpu)
    times = np.empty(n, dtype=np.int64)
    for i in range(n + 100):
        t0 = time.perf_counter_ns()
        post(parent_post)
        wait(parent_wait)
        if i >= 100:
            times[i - 100] = time.perf_counter_ns() - t0
    os.waitpid(pid, 0)
    os.sched_setaffinity(0, set(allowed_cpus()))
    return float(np.median(times)) / 1e3, float(np.percentile(times, 99)) / 1e3


def _queue_child(q_in, q_out, n: int) -> None:
    for _ in range(n):
        q_out.put(q_in.get())


def queue_round_trip_us(n: int) -> tuple[float, float]:
    ctx = multiprocessing.get_context("fork")
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_queue_child, args=(q_in, q_out, n))
    p.start()
    times = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = time.perf_counter_ns()
        q_in.put(i)
        q_out.get()
        times[i] = time.perf_counter_ns() - t0
    p.join()
    return float(np.median(times)) / 1e3, float(np.percentile(times, 99)) / 1e3


def per_call_us(fn: Callable[[], object], n: int) -> float:
    fn()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n / 1e3


def in_process(n: int) -> dict[str, float]:
    import orjson
    import pyarrow as pa

    rows = np.random.default_rng(0).random((64, 16), dtype=np.float32)
    schema = pa.schema([("x", pa.list_(pa.float32(), 16))])

    def arrow_write() -> bytes:
        arr = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), 16)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as w:
            w.write_batch(pa.record_batch([arr], schema=schema))
        return sink.getvalue()

    message = arrow_write()

    def arrow_read() -> np.ndarray:
        batch = pa.ipc.open_stream(message).read_next_batch()
        return batch.column(0).values.to_numpy(zero_copy_only=True).reshape(-1, 16)

    slot = np.zeros(64 * 16, dtype=np.float32)
    body16 = orjson.dumps({"input": rows[0].tolist()})
    out10 = rows[0][:10].tolist()
    return {
        "Arrow IPC build+write one 64×16 message": per_call_us(arrow_write, n),
        "Arrow IPC read it into numpy": per_call_us(arrow_read, n),
        "raw numpy slot write+view": per_call_us(lambda: (slot.__setitem__(slice(None), rows.reshape(-1)), slot.reshape(64, 16)), n),
        "orjson loads 16 floats": per_call_us(lambda: orjson.loads(body16), n),
        "orjson dumps 10 floats": per_call_us(lambda: orjson.dumps({"output": out10}), n),
        "list → float32 array (16)": per_call_us(lambda: np.array(rows[0].tolist(), dtype=np.float32), n),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ipc", description=__doc__.split("\n")[0])
    add_common_flags(parser)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    n = QUICK_ROUND_TRIPS if common.quick else ROUND_TRIPS
    cpus = allowed_cpus()
    placements = {"same core": (cpus[0], cpus[0])}
    if len(cpus) > 1:
        placements["across cores"] = (cpus[0], cpus[1])
    writer = ResultWriter("ipc", {"round_trips": n, "repeats": common.repeats, "placements": placements})
    results: dict[str, list[tuple[float, float]]] = {}
    for repeat in range(common.repeats):
        writer.check(f"repeat {repeat + 1}", wait_until_idle(common.max_wait_idle_s, common.idle_threshold_percent))
        for kind in ("eventfd", "semaphore", "pipe"):
            for where, (pc, cc) in placements.items():
                results.setdefault(f"{kind} round trip, {where}", []).append(round_trip_us(kind, n, pc, cc))
        results.setdefault("multiprocessing.Queue round trip", []).append(queue_round_trip_us(n // 4))
        for k, us in in_process(n).items():
            results.setdefault(k, []).append((us, float("nan")))
        print(f"[{repeat + 1}/{common.repeats}] done", flush=True)
    rows = []
    for what, runs in results.items():
        med = spread([m for m, _ in runs])
        p99 = spread([p for _, p in runs])
        rows.append([what, med.text(".1f") if med else "-", p99.text(".0f") if p99 else "-"])
    table = markdown_table(["what", "µs median (min–max of runs)", "µs p99"], rows)
    print(table)
    paths = writer.write({"table": table, "results": results}, publish=common.publish)
    print("results: " + ", ".join(str(p) for p in paths))
    return 0
