"""A bad config is refused with a message naming the file, the key and the expectation."""

import pytest

from schooner.engine.config import ConfigError, ServerConfig, load_config, parse_config

GOOD = {
    "models": [{"name": "mlp", "version": "1", "entry_point": "pkg.mod:MLP", "input_type": "floats",
                "input_shape": [16], "max_batch_size": 64, "replicas": 1, "device": "cpu"}],
    "apps": [{"name": "demo", "input_type": "f", "input_shape": [16], "latency_slo_micros": 20000,
              "default_output": "-1", "models": ["mlp"]}],
}


def with_(section, **kv):
    d = {k: [dict(x) for x in v] for k, v in GOOD.items()}
    d[section][0].update(kv)
    return d


def test_good_config_parses_and_round_trips_through_json():
    cfg = parse_config(GOOD, "x.toml", port=0)
    assert cfg.apps[0].input_type == "floats" and cfg.models[0].input_shape == (16,)
    assert cfg.port == 0 and cfg.host == "127.0.0.1"
    assert ServerConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "section, kv, fragment",
    [
        ("models", {"name": "MLP_1"}, "models[0].name: expected a DNS-1123 label"),
        ("models", {"entry_point": "nocolon"}, "models[0].entry_point: expected 'package.module:attr'"),
        ("models", {"input_type": "tensor"}, "models[0].input_type: expected one of doubles"),
        ("models", {"input_shape": [0]}, "models[0].input_shape: expected a list of positive integers"),
        ("models", {"max_batch_size": 0}, "models[0].max_batch_size: expected an integer >= 1"),
        ("models", {"max_batch_size": "8"}, "models[0].max_batch_size: expected an integer >= 1, got '8'"),
        ("models", {"device": "tpu"}, "models[0].device"),
        ("models", {"version": "a:b"}, "models[0].version"),
        ("models", {"colour": "red"}, "models[0]: unknown key(s) colour"),
        ("apps", {"models": ["nope"]}, "apps[0].models: expected names of [[models]] (mlp), got 'nope'"),
        ("apps", {"input_shape": [8]}, "apps[0].input_type/input_shape: expected the linked model's floats[16]"),
        ("apps", {"latency_slo_micros": -5}, "apps[0].latency_slo_micros"),
    ],
)
def test_bad_values_are_named(section, kv, fragment):
    with pytest.raises(ConfigError) as e:
        parse_config(with_(section, **kv), "cfg.toml")
    assert str(e.value).startswith("cfg.toml: ")
    assert fragment in str(e.value)


def test_missing_required_key():
    d = with_("models")
    del d["models"][0]["entry_point"]
    with pytest.raises(ConfigError, match=r"models\[0\].entry_point: expected .* \(required\)"):
        parse_config(d, "c.toml")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[[models]\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid TOML"):
        load_config(str(bad))


def _versions_config(extra: str = "") -> dict:
    import tomllib

    return tomllib.loads(
        """
[[models]]
name = "m"
version = "1"
entry_point = "a.b:C"
input_type = "floats"
input_shape = [4]
[[models]]
name = "m"
version = "2"
entry_point = "a.b:C"
input_type = "floats"
input_shape = [4]
""" + extra + """
[[apps]]
name = "app"
input_type = "floats"
input_shape = [4]
models = ["m"]
"""
    )


def test_several_versions_of_a_model_the_last_is_current_unless_marked():
    from schooner.engine.config import app_route, model_route, parse_config, routes

    cfg = parse_config(_versions_config())
    assert [(m.version, m.current) for m in cfg.models] == [("1", False), ("2", True)]
    table = routes(cfg)
    assert table[app_route(0)].model == 1
    assert table[model_route(0)].name == "m" and table[model_route(0)].model == 0
    d = _versions_config()
    d["models"][0]["current"] = True
    cfg = parse_config(d)
    assert cfg.model_index("m") == 0 and cfg.model_index("m", "2") == 1


def test_versions_must_differ_and_share_their_input():
    import pytest

    from schooner.engine.config import ConfigError, parse_config

    d = _versions_config()
    d["models"][1]["version"] = "1"
    with pytest.raises(ConfigError, match="version of model m not declared before"):
        parse_config(d)
    d = _versions_config()
    d["models"][1]["input_shape"] = [5]
    with pytest.raises(ConfigError, match="every version takes the same input"):
        parse_config(d)
    d = _versions_config()
    d["models"][0]["current"] = d["models"][1]["current"] = True
    with pytest.raises(ConfigError, match="one current version"):
        parse_config(d)


@pytest.mark.parametrize(
    "server, fragment",
    [
        ({"spin_us": 1001}, "server.spin_us: expected an integer from 0 to 1000, got 1001"),
        ({"spin_us": -1}, "server.spin_us: expected an integer from 0 to 1000"),
        ({"scheduler_cpus": [1, "2"]}, "server.scheduler_cpus: expected a list of CPU numbers"),
        ({"model_cpus": 1}, "server.model_cpus: expected a list of CPU numbers"),
        ({"frontend_cpus": [-1]}, "server.frontend_cpus: expected a list of CPU numbers"),
    ],
)
def test_hot_path_settings_are_checked(server, fragment):
    with pytest.raises(ConfigError) as e:
        parse_config({**GOOD, "server": server}, "cfg.toml")
    assert fragment in str(e.value)


def test_hot_path_settings_round_trip():
    cfg = parse_config({**GOOD, "server": {"spin_us": 300, "scheduler_cpus": [1, 0, 1], "model_cpus": [0]}}, "c.toml")
    assert (cfg.spin_us, cfg.scheduler_cpus, cfg.model_cpus, cfg.frontend_cpus) == (300, (0, 1), (0,), ())
    assert ServerConfig.from_json(cfg.to_json()) == cfg
