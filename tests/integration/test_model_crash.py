"""Real processes over real shared memory: a model process killed mid-batch, and a whole
process tree killed at once."""

import os
import signal
import time

import psutil

from schooner.ipc.shm import list_segments
from tests.serving import ClientThread, SchoonerServer, finish, start

SLOW = """
[[models]]
name = "slow"
entry_point = "tests.models:SlowTorchMLP"
input_type = "floats"
input_shape = [16]
max_batch_size = 8
init_args = {{ hold_s = 1.0, marker_path = "{marker}" }}

[[apps]]
name = "slow"
input_type = "floats"
input_shape = [16]
latency_slo_micros = 60000000
default_output = "-1"
models = ["slow"]
"""


def wait_for(predicate, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_sigkill_of_a_model_mid_batch_answers_every_query_and_respawns(tmp_path):
    marker = tmp_path / "batches"
    with SchoonerServer(tmp_path, SLOW.format(marker=marker)) as srv:
        (model,) = srv.children("model")
        results = [None] * 12

        def call(i):
            results[i] = srv.predict("slow", {"input": [float(i)] * 16})

        threads = start([ClientThread(call, i) for i in range(12)])
        wait_for(lambda: marker.exists() and marker.read_text().strip())  # a batch is in predict
        os.kill(model.pid, signal.SIGKILL)
        finish(threads, 120)
        assert all(r is not None for r in results), "a request was left unanswered"
        for status, body in results:
            assert status == 200, body
            assert body["default"] is False and len(body["output"]) == 4
        new = srv.children("model")
        assert len(new) == 1 and new[0].pid != model.pid
        status, body = srv.predict("slow", {"input": [1.0] * 16})
        assert status == 200 and body["default"] is False
        assert srv.stop() == 0


def test_sigkill_of_the_whole_tree_leaves_nothing_the_next_start_does_not_clean(tmp_path):
    config = SLOW.format(marker=tmp_path / "m")
    first = SchoonerServer(tmp_path, config)
    procs = [psutil.Process(first.proc.pid), *first.children()]
    for p in procs:
        p.kill()
    psutil.wait_procs(procs, timeout=30)
    first.proc.wait()
    stale = first.segments()
    assert stale, "expected the killed instance to leave its segments behind"
    (tmp_path / "second").mkdir()
    with SchoonerServer(tmp_path / "second", config) as second:
        assert not (set(stale) & set(list_segments())), "stale segments survived a new start"
        assert second.predict("slow", {"input": [0.0] * 16})[0] == 200


def test_sigkill_of_the_scheduler_answers_in_flight_requests_and_exits_cleanly(tmp_path):
    marker = tmp_path / "batches"
    srv = SchoonerServer(tmp_path, SLOW.format(marker=marker))
    results = [None] * 6

    def call(i):
        results[i] = srv.predict("slow", {"input": [float(i)] * 16})

    threads = start([ClientThread(call, i) for i in range(6)])
    wait_for(lambda: marker.exists() and marker.read_text().strip())
    srv.remember_children()
    (scheduler,) = srv.children("scheduler")
    os.kill(scheduler.pid, signal.SIGKILL)
    finish(threads, 60)
    assert all(r is not None for r in results), "a request was left unanswered"
    assert {status for status, _ in results} == {503}
    assert all("scheduler process exited" in body["cause"] for _, body in results)
    assert srv.proc.wait(60) == 1  # a fatal exit, reported as such
    srv.__exit__(None, None, None)  # no child and no segment left behind
