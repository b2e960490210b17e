"""Spawn arguments of each child role on their way in, and the child entry point.

The supervisor starts every child as ``python -m schooner.engine.spawn '<summary json>'`` with
the file descriptors it needs passed by number (`subprocess.Popen(pass_fds=...)`). The full
arguments -- one of the `*Args` dataclasses of `schooner.ipc.wire`, holding the whole `ServerConfig` -- are
read from a memfd named in the summary (`args_fd`): a command line is limited to 128 KiB, a
config with hundreds of model versions is not. The summary names the role (and the frontend
index or model/replica) so `ps` and the tools can tell the processes apart. Children never
read the environment or config files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys

import orjson

from schooner.engine.config import ServerConfig
from schooner.ipc.wire import ROLES, FrontendArgs, ModelArgs, SchedulerArgs  # noqa: F401 (re-exported)


def encode_args(args) -> str:
    d = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)}
    d["config"] = orjson.loads(args.config.to_json())
    role = next(k for k, v in ROLES.items() if isinstance(args, v))
    return orjson.dumps({"role": role, "args": d}).decode()


def argv_summary(args, args_fd: int) -> str:
    """What goes on the child's command line: its role, who it is, and where its arguments are."""
    role = next(k for k, v in ROLES.items() if isinstance(args, v))
    d: dict = {"role": role}
    if role == "frontend":
        d["index"] = args.index
    elif role == "model":
        d["model"], d["replica"] = args.model, args.replica
    d["args_fd"] = args_fd
    return orjson.dumps(d).decode()


def read_args_fd(fd: int) -> str:
    chunks = []
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def decode_args(text: str):
    d = orjson.loads(text)
    cls = ROLES[d["role"]]
    a = d["args"]
    a["config"] = ServerConfig.from_json(orjson.dumps(a["config"]))
    for f in dataclasses.fields(cls):
        if isinstance(a.get(f.name), list):
            a[f.name] = tuple(tuple(x) if isinstance(x, list) else x for x in a[f.name])
    return d["role"], cls(**a)


def setup_logging(role_name: str, level: int = logging.INFO) -> None:
    """Every line names the process role: `frontend[0]`, `scheduler`, `model[mlp:1:0]`."""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s {role_name} %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    summary = orjson.loads(argv[0])
    text = read_args_fd(summary["args_fd"]) if "args_fd" in summary else argv[0]
    role, args = decode_args(text)
    if role == "frontend":
        from schooner.frontend.server import run_frontend

        return run_frontend(args)
    if role == "scheduler":
        from schooner.engine.scheduler_proc import run_scheduler

        return run_scheduler(args)
    from schooner.model_procs.worker import run_model

    return run_model(args)


if __name__ == "__main__":
    sys.exit(main())
