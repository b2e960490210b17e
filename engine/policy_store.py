"""Selection-policy state on disk: an SQLite database under the server's data directory.

The scheduler snapshots every policy app's state (`SelectionCore.snapshot`) at most every
`snapshot_interval_s` while feedback arrives, and once more when it stops; at start it restores
what fits the configured apps. Each snapshot is one transaction in WAL mode, so a crash at any
moment loses at most the feedback since the last snapshot and never corrupts the file.
"""

from __future__ import annotations

import os
import sqlite3
import time

import orjson

FILENAME = "policy-state.sqlite"


class PolicyStore:
    def __init__(self, data_dir: str) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, FILENAME)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS policy_state (app TEXT PRIMARY KEY, state TEXT NOT NULL, saved_at REAL NOT NULL)")

    def load(self) -> dict[str, dict]:
        rows = self.db.execute("SELECT app, state FROM policy_state").fetchall()
        out = {}
        for app, state in rows:
            try:
                out[app] = orjson.loads(state)
            except orjson.JSONDecodeError:
                continue
        return out

    def save(self, states: dict[str, dict]) -> None:
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            for app, state in states.items():
                self.db.execute(
                    "INSERT OR REPLACE INTO policy_state (app, state, saved_at) VALUES (?, ?, ?)",
                    (app, orjson.dumps(state).decode(), now),
                )

    def close(self) -> None:
        self.db.close()
