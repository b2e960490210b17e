"""Selection policies behind a real server: feedback over HTTP changes later selections, and a
restart keeps what was learned (state snapshotted under the data directory)."""

import re
import sqlite3
import time
from contextlib import closing

import orjson
import psutil
from sklearn.datasets import load_digits

from tests.serving import SchoonerServer

CONFIG = """
[server]
snapshot_interval_s = 0.2

[[models]]
name = "good"
entry_point = "tests.models:DigitsProba"
input_type = "floats"
input_shape = [64]

[[models]]
name = "zero"
entry_point = "tests.models:AlwaysZero"
input_type = "floats"
input_shape = [64]

[[apps]]
name = "digits"
input_type = "floats"
input_shape = [64]
latency_slo_micros = 5000000
default_output = "-1"
models = ["good", "zero"]
policy = "{policy}"
policy_params = {params}
"""


def counter(srv, series: str) -> int:
    status, text, _ = srv.request("GET", "/metrics")
    text = text.decode() if isinstance(text, bytes) else text
    m = re.search(re.escape(series) + r" (\d+)", text)
    return int(m.group(1)) if m else 0


def sent(srv, model):
    return counter(srv, f'schooner_model_queries_total{{model="{model}",version="1"}}')


def settle(srv, queries: int):
    """Wait until the metrics snapshot has seen `queries` app queries (it trails by <= 20 ms)."""
    deadline = time.monotonic() + 10
    while counter(srv, 'schooner_app_queries_total{app="digits"}') < queries:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_feedback_moves_exp3_to_the_good_model(tmp_path):
    d = load_digits()
    rows, labels = d.data[1000:1300].tolist(), d.target[1000:1300].tolist()
    with SchoonerServer(tmp_path, CONFIG.format(policy="exp3", params="{ eta = 0.5, gamma = 0.1 }")) as srv:
        conn = srv.connect()
        for x, y in zip(rows[:200], labels[:200], strict=True):
            status, body, _ = srv.request("POST", "/digits/update", {"uid": 1, "input": x, "label": y}, conn)
            assert status == 200 and body == {"ok": True}, body
        settle(srv, 200)
        before = {m: sent(srv, m) for m in ("good", "zero")}
        for x in rows[200:300]:
            status, body = srv.predict("digits", {"input": x}, conn)
            assert status == 200 and body["models_used"] == 1
        settle(srv, 300)
        after = {m: sent(srv, m) for m in ("good", "zero")}
        good, zero = after["good"] - before["good"], after["zero"] - before["zero"]
        assert good + zero == 100 and good >= 80, (good, zero)  # gamma keeps ~5% exploration


def test_a_restart_keeps_the_learned_weights(tmp_path):
    d = load_digits()
    config = CONFIG.format(policy="exp4", params="{ eta = 0.5 }")
    probe = {"input": d.data[1500].tolist()}
    data_dir = tmp_path / "state"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with SchoonerServer(tmp_path / "a", config, "--data-dir", str(data_dir)) as srv:
        fresh = srv.predict("digits", probe)[1]["confidence"]
        conn = srv.connect()
        for x, y in zip(d.data[1000:1060].tolist(), d.target[1000:1060].tolist(), strict=True):
            assert srv.request("POST", "/digits/update", {"uid": 3, "input": x, "label": y}, conn)[0] == 200
        learned = srv.predict("digits", probe)[1]
        assert learned["confidence"] > fresh  # the zero model lost its weight
        assert srv.stop() == 0  # drains and snapshots
    assert (data_dir / "policy-state.sqlite").exists()
    with SchoonerServer(tmp_path / "b", config, "--data-dir", str(data_dir)) as srv:
        again = srv.predict("digits", probe)[1]
        assert again["confidence"] == learned["confidence"]
        assert again["output"] == learned["output"]


def test_update_validates_its_body(tmp_path):
    with SchoonerServer(tmp_path, CONFIG.format(policy="exp4", params="{}")) as srv:
        for body, fragment in [
            ({"input": [0] * 64, "label": 1}, "uid"),
            ({"uid": 1, "input": [0] * 64, "label": "one"}, "label"),
            ({"uid": 1, "input": [0] * 3, "label": 1}, "shape [64]"),
        ]:
            status, parsed, _ = srv.request("POST", "/digits/update", body)
            assert status == 400 and fragment in parsed["cause"], parsed
        assert srv.request("POST", "/nope/update", {"uid": 1, "input": [0], "label": 1})[0] == 404


BANDIT = """
[server]
snapshot_interval_s = 0.2
data_dir = "{data_dir}"

[[models]]
name = "right"
entry_point = "tests.models:ConstantClass"
input_type = "floats"
input_shape = [4]
init_args = {{ label = 1 }}

[[models]]
name = "wrong"
entry_point = "tests.models:ConstantClass"
input_type = "floats"
input_shape = [4]
init_args = {{ label = 0 }}

[[apps]]
name = "bandit"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 5000000
default_output = "-1"
models = ["right", "wrong"]
policy = "exp3"
policy_params = {{ eta = 0.5, gamma = 0.1 }}
"""


def stored_state(path, app: str) -> dict | None:
    """The app's state as the server last saved it in its SQLite file (None: nothing yet)."""
    if not path.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT state FROM policy_state WHERE app = ?", (app,)).fetchone()
    except sqlite3.OperationalError:  # the table is not created yet
        return None
    return orjson.loads(row[0]) if row else None


def test_periodic_snapshot_survives_a_sigkill_of_the_whole_server(tmp_path):
    """The state is snapshotted while the server runs (not only at shutdown): after feedback
    the SQLite file holds it; a SIGKILL of every process then loses nothing, and a new server
    on the same data directory starts from it."""
    data_dir = tmp_path / "state"
    db = data_dir / "policy-state.sqlite"
    config = BANDIT.format(data_dir=data_dir)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = SchoonerServer(tmp_path / "a", config, "--data-dir", str(data_dir))
    try:
        conn = first.connect()
        for i in range(60):
            status, body, _ = first.request("POST", "/bandit/update", {"uid": 1, "input": [i, 0, 0, 0], "label": 1}, conn)
            assert (status, body) == (200, {"ok": True}), body
        deadline = time.monotonic() + 30
        while (saved := stored_state(db, "bandit")) is None or saved["app_state"]["updates"] < 60:
            assert time.monotonic() < deadline, f"no snapshot with the 60 updates while serving: {saved}"
            assert first.proc.poll() is None
            time.sleep(0.05)
        assert first.proc.poll() is None  # saved by the periodic snapshot, the server still running
        assert saved["policy"] == "Exp3Policy" and saved["app_state"]["updates"] == 60
        weights = saved["app_state"]["log_weights"]
        assert weights[0] > weights[1], weights  # "right" (index 0) leads
    finally:
        first.remember_children()
        procs = [psutil.Process(first.proc.pid), *first.children()]
        for p in procs:
            try:
                p.kill()  # every process at once: no drain, no last snapshot
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        first.proc.wait(30)
        first._log.close()
    assert stored_state(db, "bandit") == saved

    with SchoonerServer(tmp_path / "b", config, "--data-dir", str(data_dir)) as second:
        first.assert_clean()  # the new start removed what the killed one left in /dev/shm
        picked = {"right": 0, "wrong": 0}
        conn = second.connect()
        for i in range(100):
            status, body = second.predict("bandit", {"uid": 1, "input": [1000 + i, 0, 0, 0]}, conn)
            assert status == 200 and body["default"] is False, body
            picked["right" if body["output"] == [0, 1, 0, 0] else "wrong"] += 1
        assert picked["right"] >= 80, picked  # a fresh Exp3 state would pick each about half the time
        assert second.stop() == 0  # snapshots once more on the way out: the restored state
    restored = stored_state(db, "bandit")
    assert restored == saved, (restored, saved)  # app-wide and per-user state, as saved
