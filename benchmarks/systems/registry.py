"""Every system a suite can name: ``SYSTEMS[name]`` is a ``benchmarks.systems.System``."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from benchmarks.systems import System
from benchmarks.systems.inline import InlineSystem
from benchmarks.systems.peers import LitServeSystem, RayServeSystem
from benchmarks.systems.schooner import DemoSystem, SchoonerSystem

SYSTEMS: Mapping[str, System] = MappingProxyType({
    "inline": InlineSystem(),
    "schooner": SchoonerSystem(),
    "demo": DemoSystem(),
    "litserve": LitServeSystem(fast_queue=False),
    "litserve-fq": LitServeSystem(fast_queue=True),
    "rayserve": RayServeSystem(),
})
