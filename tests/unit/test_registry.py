"""The registry: a round trip through SQLite, and the start-up merge of the stored registry
with the --config file (the registry wins; the file only adds)."""

import dataclasses

from schooner.engine.config import parse_config
from schooner.engine.registry import RegistryStore, merge, registry_path

SEED = {
    "models": [
        {"name": "m", "version": "1", "entry_point": "a.b:C", "input_type": "floats", "input_shape": [4]},
    ],
    "apps": [{"name": "app", "input_type": "floats", "input_shape": [4], "models": ["m"]}],
}


def seed():
    return parse_config(SEED, source="seed.toml")


def test_round_trip_keeps_versions_tombstones_and_links(tmp_path):
    cfg = seed()
    v2 = dataclasses.replace(cfg.models[0], version="2", replicas=3)
    cfg = dataclasses.replace(cfg, models=(dataclasses.replace(cfg.models[0], current=False), v2),
                              apps=(*cfg.apps, dataclasses.replace(cfg.apps[0], name="gone", deleted=True)))
    store = RegistryStore(registry_path(str(tmp_path), "seed.toml"))
    store.save(cfg)
    store.close()
    models, apps = RegistryStore(registry_path(str(tmp_path), "seed.toml")).load()
    assert models == cfg.models and apps == cfg.apps
    assert RegistryStore(registry_path(str(tmp_path), "other.toml")).load() is None  # one registry per file


def test_the_file_adds_what_the_registry_lacks_and_never_undoes_a_runtime_change():
    stored_cfg = seed()
    runtime = dataclasses.replace(
        stored_cfg,
        models=(dataclasses.replace(stored_cfg.models[0], current=False),
                dataclasses.replace(stored_cfg.models[0], version="2", replicas=2)),
        apps=(dataclasses.replace(stored_cfg.apps[0], latency_slo_micros=5),
              dataclasses.replace(stored_cfg.apps[0], name="deleted", deleted=True)),
    )
    file = dict(SEED)
    file["apps"] = [*SEED["apps"], {"name": "deleted", "input_type": "floats", "input_shape": [4]},
                    {"name": "fresh", "input_type": "floats", "input_shape": [4]}]
    merged, warnings = merge(parse_config(file, source="seed.toml"), (runtime.models, runtime.apps))
    assert [(m.version, m.current, m.replicas) for m in merged.models] == [("1", False, 1), ("2", True, 2)]
    by_name = {a.name: a for a in merged.apps}
    assert by_name["app"].latency_slo_micros == 5  # changed at runtime: kept
    assert by_name["deleted"].deleted  # deleted at runtime: the file does not bring it back
    assert "fresh" in by_name  # new in the file: added
    assert warnings == []


def test_a_true_conflict_keeps_the_registry_and_says_so():
    stored = seed()
    file = {**SEED, "models": [{**SEED["models"][0], "entry_point": "x.y:Z"}]}
    merged, warnings = merge(parse_config(file, source="seed.toml"), (stored.models, stored.apps))
    assert merged.models[0].entry_point == "a.b:C"
    assert len(warnings) == 1 and "m:1" in warnings[0] and "entry_point" in warnings[0] and "kept" in warnings[0]


def test_an_edit_of_the_file_applies_to_entries_nobody_changed_at_runtime():
    first = seed()
    file2 = {**SEED, "models": [{**SEED["models"][0], "batch_wait_timeout_micros": 2000}]}
    merged, warnings = merge(parse_config(file2, source="seed.toml"), (first.models, first.apps), (first.models, first.apps))
    assert merged.models[0].batch_wait_timeout_micros == 2000 and warnings == []


def test_an_entry_dropped_from_the_file_goes_unless_changed_at_runtime():
    first = parse_config({**SEED, "apps": [*SEED["apps"], {"name": "b", "input_type": "floats", "input_shape": [4]}]},
                         source="seed.toml")
    runtime_apps = (first.apps[0], dataclasses.replace(first.apps[1], latency_slo_micros=7))
    merged, _ = merge(seed(), (first.models, first.apps), (first.models, first.apps))
    assert [a.name for a in merged.apps] == ["app"]
    merged, _ = merge(seed(), (first.models, runtime_apps), (first.models, first.apps))
    assert [a.name for a in merged.apps] == ["app", "b"]  # changed at runtime: kept


def test_changed_at_runtime_and_edited_in_the_file_keeps_the_registry_and_warns():
    first = seed()
    runtime = (dataclasses.replace(first.models[0], replicas=4),)
    file2 = {**SEED, "models": [{**SEED["models"][0], "max_batch_size": 8}]}
    merged, warnings = merge(parse_config(file2, source="seed.toml"), (runtime, first.apps), (first.models, first.apps))
    assert merged.models[0].replicas == 4 and merged.models[0].max_batch_size == 64
    assert len(warnings) == 1 and "changed at runtime and edited" in warnings[0]
