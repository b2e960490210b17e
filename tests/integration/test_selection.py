"""Selection policies behind a real server: feedback over HTTP changes later selections, and a
restart keeps what was learned (state snapshotted under the data directory)."""

import re
import time

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
