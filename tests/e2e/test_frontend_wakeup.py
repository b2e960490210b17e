"""The frontend's side of the ring wake-up protocol, end to end: while a tick is pending the
frontend tells the scheduler not to post its doorbell (the tick will look at the response
ring), and the tick's end says "post me" and looks once more. An answer written just as a tick
ends must still be delivered: a lost wake-up shows as a request that waits for traffic that
never comes. One client alone (nothing else ever ticks the frontend), with pauses of every
length between requests, then several clients in bursts; every request bounded by a socket
timeout so that a lost answer fails the test instead of hanging it."""

import random

from tests.serving import ClientThread, SchoonerServer, finish, start

CONFIG = """
[[models]]
name = "sum"
entry_point = "tests.models:SumModel"
input_type = "floats"
input_shape = [4]

[[apps]]
name = "sum"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 30000000
default_output = "-1"
cache = false
models = ["sum"]
"""

TIMEOUT_S = 10.0  # an answer this late is a lost wake-up (the model answers in microseconds)


def _client(srv: SchoonerServer, seed: int, count: int, out: list) -> None:
    import time

    rng = random.Random(seed)
    conn = srv.connect(timeout=TIMEOUT_S)
    for i in range(count):
        x = [float(i % 7), 1.0, 2.0, float(seed)]
        try:
            status, body = srv.predict("sum", {"input": x}, conn=conn)
        except TimeoutError as e:
            out.append(("timeout", i, str(e)))
            return
        out.append((status, body.get("output"), body.get("default"), sum(x)))
        r = rng.random()
        if r < 0.4:
            time.sleep(rng.random() * 100e-6)  # about the time an answer takes: the race
        elif r < 0.45:
            time.sleep(rng.random() * 2e-3)  # long enough for every process to sleep
    conn.close()


def test_every_answer_is_delivered_with_no_other_traffic_to_wake_the_frontend(tmp_path):
    with SchoonerServer(tmp_path, CONFIG) as srv:
        alone: list = []
        _client(srv, 0, 1500, alone)
        assert len(alone) == 1500 and all(r[0] != "timeout" for r in alone), alone[-1]
        assert all(r[0] == 200 and r[2] is False and r[1] == r[3] for r in alone)
        results = [[] for _ in range(4)]
        threads = start([ClientThread(_client, srv, k + 1, 400, results[k]) for k in range(4)])
        finish(threads, 120)
        for res in results:
            assert len(res) == 400 and all(r[0] == 200 and r[2] is False and r[1] == r[3] for r in res), res[-1]
    srv.assert_clean()
