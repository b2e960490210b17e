"""Fault drill: SIGKILL each process role of a running Schooner under a steady stream of
queries and report how long service took to come back and how many queries failed.

    python -m tools.fault_drill [--clients 4] [--rounds 3] [--json out.json]

It starts its own server (two frontends, one scheduler, two model replicas of a small
model), runs `--clients` closed-loop clients (one query at a time each, a fresh connection per
query), and for each role in turn kills one process of that role and measures:

* recovery: from the kill to the first correct answer whose query was sent after the kill
  (for the model: no query fails at all, the other replica and the retry absorb it);
* outage: the longest gap between two correct answers around the kill;
* failed: queries answered with anything but the correct 200 (or whose connection broke).

The figures are what the README's "Limits and failure behaviour" quotes.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import orjson
import psutil

CONFIG = """
[server]
frontends = 2
max_restarts = 100

[[models]]
name = "summer"
entry_point = "tools.fault_drill:RowSum"
input_type = "floats"
input_shape = [4]
replicas = 2

[[apps]]
name = "sums"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 10000000
default_output = "-1"
models = ["summer"]
"""


class RowSum:
    """The drill's model: row sums (imported by the model processes)."""

    def predict(self, batch):
        return batch.reshape(len(batch), -1).sum(axis=1)


def _children(pid: int, role: str) -> list[psutil.Process]:
    out = []
    for c in psutil.Process(pid).children(recursive=True):
        try:
            if f'"role":"{role}"' in " ".join(c.cmdline()):
                out.append(c)
        except psutil.NoSuchProcess:
            continue
    return out


class Stream:
    def __init__(self, host: str, port: int, clients: int) -> None:
        self.host, self.port = host, port
        self.stop = threading.Event()
        self.events: list[tuple[float, float, bool]] = []  # (sent, answered, ok)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            x = [float(i), float(n % 11), 1.0, 2.0]
            sent = time.monotonic()
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("POST", "/sums/predict", orjson.dumps({"input": x}))
                resp = conn.getresponse()
                body = orjson.loads(resp.read())
                conn.close()
                ok = resp.status == 200 and body.get("output") == sum(x) and not body.get("default")
            except (OSError, http.client.HTTPException, orjson.JSONDecodeError):
                ok = False
            with self.lock:
                self.events.append((sent, time.monotonic(), ok))

    def snapshot(self) -> list[tuple[float, float, bool]]:
        with self.lock:
            return list(self.events)


def drill(role: str, stream: Stream, server_pid: int, settle_s: float = 2.0) -> dict:
    victim = _children(server_pid, role)[0]
    start = len(stream.snapshot())
    killed = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    deadline = killed + 60
    while time.monotonic() < deadline:
        ev = stream.snapshot()[start:]
        if sum(1 for s, _, ok in ev if ok and s > killed) >= 20:
            break
        time.sleep(0.01)
    time.sleep(settle_s)
    ev = stream.snapshot()[start:]
    first = min((a for s, a, ok in ev if ok and s > killed), default=None)
    oks = sorted(a for _, a, ok in ev if ok)
    before = [a for _, a, ok in stream.snapshot()[:start] if ok]
    gaps = [b - a for a, b in zip(([before[-1]] if before else []) + oks, oks, strict=False)]
    return {
        "role": role,
        "recovery_s": None if first is None else first - killed,
        "outage_s": max(gaps) if gaps else None,
        "failed": sum(1 for *_, ok in ev if not ok),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fault_drill", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=4, help="closed-loop clients (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="kills per role (default 3)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="schooner-drill-") as tmp:
        cfg = os.path.join(tmp, "drill.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        proc = subprocess.Popen(
            [sys.executable, "-m", "schooner.engine.cli", "serve", "--port", "0", "--admin-port", "0", "--config", cfg, "--data-dir", tmp],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        try:
            m = None
            while m is None:
                line = proc.stdout.readline().decode()
                if not line:
                    raise SystemExit("the server did not start")
                m = re.search(r"at http://([^ ]+):(\d+) ", line)
            stream = Stream(m.group(1), int(m.group(2)), args.clients)
            for t in stream.threads:
                t.start()
            time.sleep(2.0)
            results = []
            for role in ("model", "scheduler", "frontend"):
                for _ in range(args.rounds):
                    r = drill(role, stream, proc.pid)
                    results.append(r)
                    print(f"{role:9s} recovery {r['recovery_s'] or float('nan'):.3f} s  outage {r['outage_s'] or float('nan'):.3f} s  failed {r['failed']}", flush=True)
            stream.stop.set()
            for t in stream.threads:
                t.join(60)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    print("\nrole       recovery median (min-max) s   outage median s   failed per kill (max)")
    for role in ("model", "scheduler", "frontend"):
        rs = [r for r in results if r["role"] == role]
        rec = [r["recovery_s"] for r in rs if r["recovery_s"] is not None]
        out = [r["outage_s"] for r in rs if r["outage_s"] is not None]
        print(f"{role:9s}  {statistics.median(rec):.3f} ({min(rec):.3f}-{max(rec):.3f})"
              f"          {statistics.median(out):.3f}             {max(r['failed'] for r in rs)}")
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps({"clients": args.clients, "results": results}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
