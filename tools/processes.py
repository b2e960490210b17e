"""A running Schooner server's processes and their roles, from their command lines.

Owns ``role_of`` (supervisor, frontend[i], scheduler, model[m:r], other: from the spawn summary
``schooner.engine.spawn`` puts on every child's command line) and ``server_processes`` (the
supervisor and every descendant, labelled). Shared by ``python -m tools.profile`` and the
benchmarks (CPU per role of a server under test); a library, not a command.
"""

from __future__ import annotations

import re

import psutil

_ROLE = re.compile(r'"role":\s*"(\w+)"')
_INDEX = re.compile(r'"index":\s*(\d+)')
_MODEL = re.compile(r'"model":\s*(\d+),\s*"replica":\s*(\d+)')


def role_of(cmdline: list[str], is_root: bool) -> str:
    """A process's role from the spawn arguments Schooner passes its children."""
    if is_root:
        return "supervisor"
    text = " ".join(cmdline)
    m = _ROLE.search(text)
    if m is None:
        return "other"
    role = m.group(1)
    if role == "frontend":
        i = _INDEX.search(text)
        return f"frontend[{i.group(1) if i else '?'}]"
    if role == "model":
        m = _MODEL.search(text)
        return f"model[{m.group(1)}:{m.group(2)}]" if m else "model[?]"
    return role


def role_group(role: str) -> str:
    """The role without its instance: ``frontend[1]`` -> ``frontend``, ``model[0:2]`` -> ``model``."""
    return role.split("[", 1)[0]


def server_processes(pid: int) -> list[tuple[str, int]]:
    """(role, pid) of the supervisor ``pid`` and every descendant; a repeated role gets ``#n``."""
    root = psutil.Process(pid)
    out = [("supervisor", pid)]
    seen: dict[str, int] = {}
    for child in root.children(recursive=True):
        try:
            role = role_of(child.cmdline(), False)
        except psutil.Error:
            continue
        seen[role] = seen.get(role, 0) + 1
        out.append((role if seen[role] == 1 else f"{role}#{seen[role]}", child.pid))
    return out
