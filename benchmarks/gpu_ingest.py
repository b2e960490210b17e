"""GPU ingest benchmark: how fast batches reach the device from shared memory.

    python -m benchmarks.gpu_ingest [--quick]

Measures, on device 0 with CUDA events around back-to-back async copies on one stream:

* host-to-device GB/s from pageable numpy memory, from ``cupyx.empty_pinned`` memory (the
  baseline) and from a POSIX shm mapping registered with ``cudaHostRegister`` (what model
  processes do), for 4 KiB to 64 MiB;
* end-to-end ingest through the model process's ingest sequence (`DeviceIngest` with
  `CupyBackend` over a ring in registered shm: stage, take, a one-pass model, release, finish),
  in GB/s of batch payload, for batches of 1, 4 and 16 MiB;
* the time to register (pin) and unregister 64 MiB of shm.

It prints a table with each figure's ratio to the pinned-buffer copy rate and writes JSON
(git sha, host, GPU, sizes, figures) under ``benchmarks/results/``. It judges nothing; the
goals in issue 12 (registered >= 0.9x pinned at >= 1 MiB, the loop >= 0.8x) are for a reader.
On a machine without CuPy or a GPU it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIZES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]


def _refuse(why: str):
    print(f"gpu_ingest: {why}; nothing was measured", file=sys.stderr)
    raise SystemExit(2)


def _need_gpu():
    try:
        import cupy as cp
    except ImportError as e:
        _refuse(f"CuPy is not installed ({e}); pip install 'schooner[gpu]' on a machine with a GPU")
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:
        _refuse(f"no usable CUDA device ({type(e).__name__}: {e})")
    if n < 1:
        _refuse("CUDA sees no GPU")
    return cp


class ShmMapping:
    """A /dev/shm segment mapped read-write (no posix_ipc needed); unlinked at close."""

    def __init__(self, nbytes: int) -> None:
        self.path = f"/dev/shm/schooner-bench-{os.getpid()}-{secrets.token_hex(3)}"
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, nbytes)
            self.mm = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        finally:
            os.close(fd)
        self.view = np.frombuffer(self.mm, np.uint8)

    def close(self) -> None:
        self.view = None
        self.mm.close()
        os.unlink(self.path)


def h2d_gbps(cp, src_ptr: int, nbytes: int, dst, stream, reps: int) -> float:
    rt = cp.cuda.runtime
    start, end = cp.cuda.Event(), cp.cuda.Event()
    rt.memcpyAsync(dst.data.ptr, src_ptr, nbytes, rt.memcpyHostToDevice, stream.ptr)  # warm
    stream.synchronize()
    start.record(stream)
    for _ in range(reps):
        rt.memcpyAsync(dst.data.ptr, src_ptr, nbytes, rt.memcpyHostToDevice, stream.ptr)
    end.record(stream)
    end.synchronize()
    ms = cp.cuda.get_elapsed_time(start, end)
    return nbytes * reps / (ms / 1e3) / 1e9


def reps_for(nbytes: int, quick: bool) -> int:
    budget = (64 if quick else 512) << 20
    return max(5, min(2000, budget // nbytes))


def copy_rates(cp, quick: bool) -> list[dict]:
    import cupyx

    rt = cp.cuda.runtime
    stream = cp.cuda.Stream(non_blocking=True)
    top = SIZES[-1]
    dst = cp.empty(top, cp.uint8)
    pageable = np.ones(top, np.uint8)
    pinned = cupyx.empty_pinned(top, np.uint8)
    pinned[:] = 1
    shm = ShmMapping(top)
    shm.view[:] = 1
    base = shm.view.ctypes.data
    rt.hostRegister(base, top, 0)
    rows = []
    try:
        for n in SIZES:
            reps = reps_for(n, quick)
            row = {
                "nbytes": n,
                "reps": reps,
                "pageable_gbps": h2d_gbps(cp, pageable.ctypes.data, n, dst, stream, reps),
                "pinned_gbps": h2d_gbps(cp, pinned.ctypes.data, n, dst, stream, reps),
                "registered_shm_gbps": h2d_gbps(cp, base, n, dst, stream, reps),
            }
            rows.append(row)
    finally:
        stream.synchronize()
        rt.hostUnregister(base)
        shm.close()
    return rows


def pin_time(cp) -> dict:
    rt = cp.cuda.runtime
    n = 64 << 20
    shm = ShmMapping(n)
    base = shm.view.ctypes.data
    t0 = time.perf_counter()
    rt.hostRegister(base, n, 0)
    t1 = time.perf_counter()
    rt.hostUnregister(base)
    t2 = time.perf_counter()
    shm.close()
    return {"nbytes": n, "register_s": t1 - t0, "unregister_s": t2 - t1}


def loop_rate(cp, batch_nbytes: int, nbatches: int) -> dict:
    """Payload GB/s through the model process's ingest sequence over a registered shm ring."""
    import pyarrow as pa

    from schooner.ipc.arrow_lite import FrameCodec
    from schooner.ipc.ring import Ring, ring_nbytes
    from schooner.model_procs.ingest import CupyBackend, DeviceIngest

    width = 1024
    rows = batch_nbytes // (4 * width)
    codec = FrameCodec(pa.schema([("input", pa.list_(pa.float32(), width))]))
    nslots, slot_nbytes = 4, batch_nbytes + 4096
    shm = ShmMapping(ring_nbytes(nslots, slot_nbytes))
    Ring.create(shm.mm, nslots, slot_nbytes)
    producer, consumer = Ring(shm.mm), Ring(shm.mm)
    x = np.random.default_rng(0).standard_normal((rows, width), dtype=np.float32)

    class Reader:
        def pending(self):
            return consumer.pending()

        def read(self, i=0):
            return consumer.peek(i)

        def release(self, count=1):
            consumer.release(count)

    backend = CupyBackend(np.dtype("<f4"), rows * width, torch_input=False)
    ingest = DeviceIngest(backend, codec, (width,))
    ingest.attach([shm.mm])
    reader = Reader()
    done = 0
    try:
        t0 = None
        while done < nbatches:
            while producer.free() and done + len(consumer) < nbatches:
                slot = producer.reserve()
                producer.publish(codec.write(slot, rows, [x]))
                slot.release()
            ingest.stage(reader)
            s, dev = ingest.take()
            with backend.computing():
                y = dev[:, 0] * 2  # one pass over one column: the copy is the cost measured
            ingest.release_copied(reader)
            ingest.release_copied(reader, upto=s)
            ingest.finish(s)
            done += 1
            if done == 2:  # after warm-up
                backend.compute.synchronize()
                t0 = time.perf_counter()
        backend.synchronize()
        elapsed = time.perf_counter() - t0
        del y, dev
    finally:
        ingest.detach()
        producer.close()
        consumer.close()
        shm.close()
    return {"batch_nbytes": rows * width * 4, "batches": nbatches - 2,
            "gbps": rows * width * 4 * (nbatches - 2) / elapsed / 1e9}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args(argv)
    cp = _need_gpu()
    props = cp.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    print(f"GPU: {gpu}; CuPy {cp.__version__}; CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}")
    rates = copy_rates(cp, args.quick)
    print("\nH2D, one stream, CUDA events; ratio = / pinned")
    print(f"{'size':>10} {'pageable':>10} {'pinned':>10} {'reg. shm':>10} {'pg/pin':>7} {'shm/pin':>8}")
    for r in rates:
        pin = r["pinned_gbps"]
        print(f"{r['nbytes'] >> 10:>8}Ki {r['pageable_gbps']:>9.2f}G {pin:>9.2f}G {r['registered_shm_gbps']:>9.2f}G "
              f"{r['pageable_gbps'] / pin:>7.2f} {r['registered_shm_gbps'] / pin:>8.2f}")
    pinned_at = {r["nbytes"]: r["pinned_gbps"] for r in rates}
    loops = [loop_rate(cp, n, 20 if args.quick else 100) for n in (1 << 20, 4 << 20, 16 << 20)]
    print("\nend-to-end ingest (stage, take, one-pass model, release, finish), payload GB/s")
    for r in loops:
        ref = pinned_at.get(r["batch_nbytes"]) or pinned_at[min(pinned_at, key=lambda k: abs(k - r["batch_nbytes"]))]
        r["ratio_to_pinned"] = r["gbps"] / ref
        print(f"{r['batch_nbytes'] >> 20:>8}Mi {r['gbps']:>9.2f}G  {r['ratio_to_pinned']:.2f}x pinned")
    pin = pin_time(cp)
    print(f"\nregister 64 MiB of shm: {pin['register_s'] * 1e3:.1f} ms; unregister {pin['unregister_s'] * 1e3:.1f} ms")
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        sha = None
    out = ROOT / "benchmarks" / "results" / f"gpu_ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"git": sha, "host": platform.node(), "gpu": gpu, "quick": args.quick,
                               "h2d": rates, "loop": loops, "pin": pin}, indent=1))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
