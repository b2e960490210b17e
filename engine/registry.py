"""The registry: every app and model version of a server, kept across restarts.

Owns one SQLite database (WAL) under the data directory, one per config file (a server
started from another file, or from the built-in demo, keeps its own), holding the models
(every version, which is current, replica counts) and apps (links, settings) as the JSON of
their config objects, tombstones included. Written by the supervisor after each admin change
that took effect; read once at start.

Start-up merge (`merge`): the registry also keeps the file's entries as they were at the last
start (the seed), so it can tell a change made at runtime from an edit of the file:

* an entry the registry lacks is added from the file;
* an entry nobody changed at runtime takes the file's settings (an edited `batch_wait`, say);
* an entry changed at runtime (the version set current, a replica count, links, an app added or
  deleted) is kept as stored: a restart with the same file never undoes it;
* an entry changed at runtime *and* edited in the file is a true conflict: the registry wins and
  the start logs a warning naming each difference; `schooner serve --reset-registry` starts
  from the file alone;
* an entry the file dropped that nobody changed at runtime goes too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sqlite3

import orjson

from schooner.engine.config import AppConfig, ModelConfig, ServerConfig

log = logging.getLogger(__name__)

_MODEL_IDENTITY = ("entry_point", "input_type", "input_shape", "init_args", "device")
_APP_IDENTITY = ("input_type", "input_shape")


def registry_path(data_dir: str, source: str) -> str:
    tag = "demo" if source.startswith("<") else hashlib.blake2b(os.path.abspath(source).encode(), digest_size=6).hexdigest()
    return os.path.join(data_dir, f"registry-{tag}.sqlite")


class RegistryStore:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS registry (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

        self.seed: ServerConfig | None = None  # the file's config at this start (saved beside the state)

    def _read(self, key: str) -> tuple[tuple[ModelConfig, ...], tuple[AppConfig, ...]] | None:
        row = self.db.execute("SELECT value FROM registry WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        d = orjson.loads(row[0])
        shell = ServerConfig.from_json(orjson.dumps({**orjson.loads(ServerConfig((), ()).to_json()), **d}))
        return shell.models, shell.apps

    def load(self) -> tuple[tuple[ModelConfig, ...], tuple[AppConfig, ...]] | None:
        """The state as last saved: (models, apps), or None."""
        return self._read("state")

    def load_seed(self) -> tuple[tuple[ModelConfig, ...], tuple[AppConfig, ...]] | None:
        """The file's entries as they were when that state was saved."""
        return self._read("seed")

    @staticmethod
    def _json(cfg: ServerConfig) -> str:
        d = orjson.loads(cfg.to_json())
        return orjson.dumps({"models": d["models"], "apps": d["apps"]}).decode()

    def save(self, cfg: ServerConfig) -> None:
        self.db.execute("INSERT OR REPLACE INTO registry (key, value) VALUES ('state', ?)", (self._json(cfg),))
        if self.seed is not None:
            self.db.execute("INSERT OR REPLACE INTO registry (key, value) VALUES ('seed', ?)", (self._json(self.seed),))

    def close(self) -> None:
        self.db.close()


def _same(a, b) -> bool:
    """Equal as configured (the supervisor's own annotations aside)."""
    if isinstance(a, ModelConfig):
        a, b = dataclasses.replace(a, gpus=()), dataclasses.replace(b, gpus=())
    return a == b


def merge(seed: ServerConfig, stored, stored_seed=None) -> tuple[ServerConfig, list[str]]:
    """The config to start with from the file (`seed`), the stored state (models, apps) and the
    file as it was when that state was saved (`stored_seed`); the warnings name every true
    conflict (the stored entry is kept). See the module docstring."""
    if stored is None:
        return seed, []
    prev_models = {(m.name, m.version): m for m in (stored_seed[0] if stored_seed else ())}
    prev_apps = {a.name: a for a in (stored_seed[1] if stored_seed else ())}
    file_models = {(m.name, m.version): m for m in seed.models}
    file_apps = {a.name: a for a in seed.apps}
    models, apps = [], []
    kept: set[tuple[str, str]] = set()  # entries kept as stored (changed at runtime)
    warnings = []
    for o in stored[0]:
        key = (o.name, o.version)
        before, now = prev_models.get(key), file_models.get(key)
        untouched = before is not None and _same(o, before)  # as the file had it: no runtime change
        if untouched and now is None:
            continue  # dropped from the file, never changed at runtime: it goes
        if untouched and now is not None:
            models.append(now)  # the file's settings, edited or not
            continue
        if now is not None and before is not None and not _same(now, before):
            diff = [k for k in _MODEL_IDENTITY + ("batch_size", "batch_wait_timeout_micros", "max_batch_size", "replicas")
                    if getattr(o, k) != getattr(now, k)] or ["settings"]
            warnings.append(f"model {o.name}:{o.version}: changed at runtime and edited in {seed.source} "
                            f"({', '.join(diff)}); the registry's are kept")
        elif now is not None and before is None and not _same(o, now):
            diff = [k for k in _MODEL_IDENTITY if getattr(o, k) != getattr(now, k)]
            if diff:
                warnings.append(f"model {o.name}:{o.version}: the registry's {', '.join(diff)} differ from "
                                f"{seed.source}; the registry's are kept")
        models.append(o)
        kept.add(key)
    for m in seed.models:
        if not any((o.name, o.version) == (m.name, m.version) for o in models):
            has_current = any(o.name == m.name and o.current and not o.deleted for o in models)
            models.append(dataclasses.replace(m, current=m.current and not has_current))
    for o in stored[1]:
        before, now = prev_apps.get(o.name), file_apps.get(o.name)
        untouched = before is not None and _same(o, before)
        if untouched and now is None:
            continue
        if untouched and now is not None:
            apps.append(now)
            continue
        if o.deleted:
            apps.append(o)  # deleted at runtime: the file does not bring it back
            continue
        if now is not None and before is not None and not _same(now, before):
            warnings.append(f"app {o.name}: changed at runtime and edited in {seed.source}; the registry's is kept")
        elif now is not None and before is None:
            diff = [k for k in _APP_IDENTITY if getattr(o, k) != getattr(now, k)]
            if diff:
                warnings.append(f"app {o.name}: the registry's {', '.join(diff)} differ from {seed.source}; "
                                "the registry's are kept")
        apps.append(o)
    for a in seed.apps:
        if not any(o.name == a.name for o in apps):
            apps.append(a)
    for name in {m.name for m in models}:  # exactly one current version per live model name
        live = [i for i, m in enumerate(models) if m.name == name and not m.deleted]
        currents = [i for i in live if models[i].current]
        runtime = [i for i in currents if (models[i].name, models[i].version) in kept]
        keep = (runtime or currents or live)[-1:] if live else []
        for i in live:
            if models[i].current != (i in keep):
                models[i] = dataclasses.replace(models[i], current=i in keep)
    return dataclasses.replace(seed, models=tuple(models), apps=tuple(apps)), warnings
