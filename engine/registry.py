"""The registry: every app and model version of a server, kept across restarts.

Owns one SQLite database (WAL) under the data directory, one per config file (a server
started from another file, or from the built-in demo, keeps its own), holding the models
(every version, which is current, replica counts) and apps (links, settings) as the JSON of
their config objects, tombstones included. Written by the supervisor after each admin change
that took effect; read once at start.

Start-up merge (`merge`): the stored registry is the truth; the `--config` file seeds it. A
model version or an app the registry lacks is added (with the file's settings); one it has is
kept as stored, so a restart with the same file never undoes a change made at runtime (the
version set current, a replica count, an app added or deleted). When the file and the
registry truly disagree about the same entry (another entry point or input for a stored
version, other settings for a stored app), the registry wins and the start logs a warning
naming each difference; `schooner serve --reset-registry` starts from the file alone.
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

    def load(self) -> tuple[tuple[ModelConfig, ...], tuple[AppConfig, ...]] | None:
        row = self.db.execute("SELECT value FROM registry WHERE key = 'state'").fetchone()
        if row is None:
            return None
        d = orjson.loads(row[0])
        shell = ServerConfig.from_json(orjson.dumps({**orjson.loads(ServerConfig((), ()).to_json()), **d}))
        return shell.models, shell.apps

    def save(self, cfg: ServerConfig) -> None:
        d = orjson.loads(cfg.to_json())
        state = orjson.dumps({"models": d["models"], "apps": d["apps"]}).decode()
        self.db.execute("INSERT OR REPLACE INTO registry (key, value) VALUES ('state', ?)", (state,))

    def close(self) -> None:
        self.db.close()


def merge(seed: ServerConfig, stored) -> tuple[ServerConfig, list[str]]:
    """The config to start with: `stored` (models, apps) plus what `seed` adds; the warnings
    name every entry where the two disagree (the stored one is kept)."""
    if stored is None:
        return seed, []
    models, apps = list(stored[0]), list(stored[1])
    warnings = []
    for m in seed.models:
        old = next((o for o in models if (o.name, o.version) == (m.name, m.version)), None)
        if old is None:
            has_current = any(o.name == m.name and o.current and not o.deleted for o in models)
            models.append(dataclasses.replace(m, current=m.current and not has_current))
            continue
        diff = [k for k in _MODEL_IDENTITY if getattr(old, k) != getattr(m, k)]
        if diff:
            warnings.append(f"model {m.name}:{m.version}: the registry's {', '.join(diff)} differ from "
                            f"{seed.source}; the registry's are kept")
    for a in seed.apps:
        old = next((o for o in apps if o.name == a.name), None)
        if old is None:
            apps.append(a)
            continue
        if old.deleted:
            continue  # deleted at runtime: the file does not bring it back
        diff = [k for k in _APP_IDENTITY if getattr(old, k) != getattr(a, k)]
        if diff:  # links, SLO and policy may have been changed at runtime: those are kept silently
            warnings.append(f"app {a.name}: the registry's {', '.join(diff)} differ from {seed.source}; the registry's are kept")
    for name in {m.name for m in models}:  # exactly one current version per live model name
        live = [i for i, m in enumerate(models) if m.name == name and not m.deleted]
        if live and not any(models[i].current for i in live):
            models[live[-1]] = dataclasses.replace(models[live[-1]], current=True)
    return dataclasses.replace(seed, models=tuple(models), apps=tuple(apps)), warnings
