"""Open-loop HTTP/1.1 load generation: requests leave at scheduled times, whatever the server does.

A closed-loop client (wrk) sends its next request only when an answer comes back, so a slow
server slows the client down and the queueing it caused never shows up in the latencies
("coordinated omission"). Here every request has a scheduled send time fixed before the run
(Poisson, on/off bursts, or a trace file), and its latency is measured from that scheduled time,
so a request that waited in the client because the server was slow is charged for the wait.

Pieces (pure cores first, then the process shells):
  schedule.py   arrival schedules (seeded): Poisson, on/off bursts, trace files; split per worker.
  histogram.py  ``LatencyHistogram``: log-linear buckets (HDR-style, 3 significant digits), numpy.
  http1.py      request encoding and a minimal response parser (sans-IO).
  timerfd.py    Linux timerfd through ctypes: µs-precise wake-ups for the event loop.
  worker.py     one load process: uvloop, a keep-alive connection pool, sends on the schedule.
  driver.py     ``run_open_loop``: spawns workers, starts them together, merges their records.
  ceiling.py    the generator's own ceiling against the inline server.
  __main__.py   ``python -m benchmarks.drivers.loadgen``: one open-loop run against any URL.
"""
