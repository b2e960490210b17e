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


def test_sigkill_of_the_scheduler_answers_in_flight_requests_and_the_server_heals(tmp_path):
    marker = tmp_path / "batches"
    with SchoonerServer(tmp_path, SLOW.format(marker=marker)) as srv:
        results = [None] * 6

        def call(i):
            results[i] = srv.predict("slow", {"input": [float(i)] * 16})

        threads = start([ClientThread(call, i) for i in range(6)])
        wait_for(lambda: marker.exists() and marker.read_text().strip())
        srv.remember_children()
        (scheduler,) = srv.children("scheduler")
        (model,) = srv.children("model")
        os.kill(scheduler.pid, signal.SIGKILL)
        finish(threads, 60)
        assert all(r is not None for r in results), "a request was left unanswered"
        assert {status for status, _ in results} == {503}
        assert all("scheduler process exited" in body["cause"] for _, body in results)
        # a new scheduler serves; the model process was kept (it moved to new rings)
        wait_for(lambda: srv.predict("slow", {"input": [1.0] * 16})[0] == 200)
        (new,) = srv.children("scheduler")
        assert new.pid != scheduler.pid
        assert [m.pid for m in srv.children("model")] == [model.pid]
        status, text, _ = srv.request("GET", "/metrics")
        assert b'schooner_process_restarts_total{role="scheduler"} 1' in text
        assert srv.proc.poll() is None
        assert srv.stop() == 0
