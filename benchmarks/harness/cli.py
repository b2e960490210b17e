"""The flags every suite takes, and the frozen run settings built from them.

Owns ``add_common_flags`` (``--quick``, ``--repeats``, ``--client-cpus``, ``--server-cpus``,
``--schooner-set``, ``--max-wait-idle``, ``--idle-threshold``, ``--publish``) and ``CommonConfig``,
handed to a suite once at start, and ``variant_arg``: the parser of one ``--variant
NAME:KEY=VALUE[;KEY=VALUE...]`` (a suite that compares Schooner configurations adds that flag).
Children never read these from the environment: a suite passes what they need.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import dataclass

from benchmarks.harness.machine import DEFAULT_THRESHOLD_PERCENT, default_client_cpus

MIN_REPEATS = 3
VARIANT_FORM = "NAME:KEY=VALUE[;KEY=VALUE...]"
VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
SERVER_KEY = re.compile(r"[a-z_]+")


@dataclass(frozen=True, slots=True)
class CommonConfig:
    quick: bool
    repeats: int
    client_cpus: str | None  # taskset list for the load generator
    server_cpus: str | None  # taskset list for every server under test; None: unpinned
    schooner_server: tuple[str, ...]  # extra `[server]` lines (TOML "key = value") for Schooner
    max_wait_idle_s: float
    idle_threshold_percent: float
    publish: bool


def add_common_flags(parser: argparse.ArgumentParser, repeats: int = MIN_REPEATS) -> None:
    g = parser.add_argument_group("common to every suite")
    g.add_argument("--quick", action="store_true", help="short points, for a smoke run")
    g.add_argument("--repeats", type=int, default=repeats, help=f"runs of every point (default {repeats}); figures are medians with min-max")
    g.add_argument("--client-cpus", default="auto", help="taskset CPU list of the load generator (default: the first CPU; 'none': unpinned)")
    g.add_argument("--server-cpus", default=None, help="taskset CPU list of every server under test (default: unpinned)")
    g.add_argument("--schooner-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a [server] setting for Schooner's generated config, VALUE in TOML (e.g. spin_us=50, "
                        "scheduler_cpus=[1]); repeatable")
    g.add_argument("--max-wait-idle", type=float, default=60.0, metavar="S", help="before each point, wait up to S s for other processes to go idle (default 60), then go on and flag it")
    g.add_argument("--idle-threshold", type=float, default=DEFAULT_THRESHOLD_PERCENT, metavar="PCT", help=f"other processes' CPU (%% of one CPU) that counts as busy (default {DEFAULT_THRESHOLD_PERCENT:g})")
    g.add_argument("--publish", action="store_true", help="also write benchmarks/published/<suite>.json (the README's figures)")


def common_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> CommonConfig:
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    for item in args.schooner_set:
        if not re.fullmatch(r"[a-z_]+=\S.*", item):
            parser.error(f"--schooner-set takes KEY=VALUE (a [server] key and a TOML value), got {item!r}")
    client = args.client_cpus
    client = default_client_cpus() if client == "auto" else (None if client == "none" else client)
    return CommonConfig(
        quick=args.quick,
        repeats=args.repeats,
        client_cpus=client,
        server_cpus=args.server_cpus,
        schooner_server=tuple(" = ".join(i.split("=", 1)) for i in args.schooner_set),
        max_wait_idle_s=args.max_wait_idle,
        idle_threshold_percent=args.idle_threshold,
        publish=args.publish,
    )


def csv_ints(text: str, parser: argparse.ArgumentParser, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        parser.error(f"{flag} takes comma-separated integers")
    if not values or any(v < 1 for v in values):
        parser.error(f"{flag} values must be at least 1")
    return values


def csv_names(text: str, known, parser: argparse.ArgumentParser, flag: str) -> tuple[str, ...]:
    names = tuple(x for x in text.split(",") if x)
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        parser.error(f"{flag} takes a subset of {','.join(known)} (unknown: {','.join(unknown)})")
    return names


def variant_arg(text: str) -> tuple[str, tuple[str, ...]]:
    """argparse ``type`` of ``--variant``: ``NAME:KEY=VALUE[;KEY=VALUE...]`` → (NAME, ("KEY = VALUE", ...)).

    NAME: lowercase letters, digits, ``-`` or ``_`` (at most 32); KEY: a ``[server]`` key; VALUE: one
    TOML value (``300``, ``[1, 2]``, ``"x"``). A ``;`` only separates settings when a ``KEY=`` follows
    it, so a TOML string may hold one. Each key at most once.
    """
    def bad(reason: str) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(
            f"takes {VARIANT_FORM} (e.g. 'spin300:spin_us=300' or 'onecore:frontend_cpus=[1];scheduler_cpus=[1]'; "
            f"VALUE in TOML), got {text!r}: {reason}")

    name, sep, rest = text.partition(":")
    if not sep:
        raise bad("no ':' after NAME")
    if not VARIANT_NAME.fullmatch(name):
        raise bad(f"NAME {name!r} is not 1-32 of a-z, 0-9, '-', '_' (starting with a letter or digit)")
    if not rest.strip():
        raise bad("no KEY=VALUE after ':'")
    lines: dict[str, str] = {}
    for item in re.split(r";(?=\s*[a-z_]+\s*=)", rest):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not SERVER_KEY.fullmatch(key):
            raise bad(f"{item.strip()!r} is not KEY=VALUE with KEY of a-z and '_'")
        if key in lines:
            raise bad(f"{key} set twice")
        if not value:
            raise bad(f"{key}: no value")
        if "\n" in value or "\r" in value:
            raise bad(f"{key}: a line break in the value")
        try:
            parsed = tomllib.loads(f"value = {value}")
        except tomllib.TOMLDecodeError as exc:
            raise bad(f"{key}: {value!r} is not a TOML value ({exc})") from None
        if list(parsed) != ["value"]:
            raise bad(f"{key}: {value!r} is not one TOML value")
        lines[key] = f"{key} = {value}"
    return name, tuple(lines.values())
