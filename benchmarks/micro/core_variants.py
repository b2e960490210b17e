"""The scheduler core with its counting taken out, two ways, for ``python -m benchmarks scheduler-core``.

Owns ``null_out_metrics`` (every ``Counter``/``Gauge``/``Histogram`` reachable from a core swapped
for a ``NullMetric`` that does nothing: the "noop" variant) and ``CountingStripper`` with
``compile_stripped_core`` (``SchedulerCore`` recompiled from its own source with every statement
that touches a metric, or also ``ModelStats``, removed: the "stripped" and "nostats" variants).
Pure code transformation: no clock, no I/O beyond reading the scheduler module's source.
"""

from __future__ import annotations

import ast
import inspect
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import schooner.engine.core.scheduler as scheduler_module
from schooner.engine.core.counters import AppCounters, CacheCounters, ModelCounters
from schooner.engine.core.scheduler import SchedulerCore

COUNTING_ATTRS_METRICS = ("counters", "app_counters")  # plus every attribute named m_*
COUNTING_ATTRS_STATS = ("stats",)
PURE_CALLS = ("len",)  # calls a dead store may contain and still be removed


# ---------------------------------------------------------------------------------------------
# Variants of the core


class NullMetric:
    """Stands in for a Counter, Gauge or Histogram: every update does nothing."""

    __slots__ = ()

    @property
    def value(self) -> int:
        return 0

    @value.setter
    def value(self, v: float) -> None:
        pass

    def inc(self, n: float = 1) -> None:
        pass

    def set(self, v: float) -> None:
        pass

    def observe(self, v: float, n: int = 1) -> None:
        pass


NULL_METRIC = NullMetric()
COUNTER_TYPES = (ModelCounters, AppCounters, CacheCounters)


class NullContainer:
    """Stands in for a record's bucket list or dict: reads give 0, writes do nothing."""

    __slots__ = ()

    def __getitem__(self, key: object) -> int:
        return 0

    def __setitem__(self, key: object, value: object) -> None:
        pass


NULL_CONTAINER = NullContainer()


class NullCounters:
    """Stands in for a counters record: every field reads as 0 (a bucket list or dict as a
    `NullContainer`), every write does nothing."""

    def __init__(self, like: object) -> None:
        containers = {n for n in type(like).__slots__ if isinstance(getattr(like, n), list | dict)}
        object.__setattr__(self, "_containers", containers)

    def __getattr__(self, name: str) -> object:
        return NULL_CONTAINER if name in self._containers else 0

    def __setattr__(self, name: str, value: object) -> None:
        pass


def null_out_metrics(core: SchedulerCore) -> int:
    """Replaces every counters record reachable from ``core``'s attributes; returns how many."""
    replaced = 0
    seen: set[int] = set()

    def swap(value: object) -> object:
        nonlocal replaced
        if isinstance(value, COUNTER_TYPES):
            replaced += 1
            return NullCounters(value)
        if isinstance(value, list):
            value[:] = [swap(v) for v in value]
        elif isinstance(value, dict):
            for k in list(value):
                value[k] = swap(value[k])
        elif hasattr(value, "__slots__") and id(value) not in seen:
            seen.add(id(value))
            visit(value)
        return value

    def visit(obj: object) -> None:
        names = list(getattr(obj, "__dict__", {}))
        for cls in type(obj).__mro__:
            names += [s for s in getattr(cls, "__slots__", ()) if s not in names]
        for name in names:
            if not hasattr(obj, name):
                continue
            value = getattr(obj, name)
            new = swap(value)
            if new is not value:
                setattr(obj, name, new)

    visit(core)  # reaches the models, the per-app list and the core's SchedulerCounters
    return replaced


@dataclass(frozen=True, slots=True)
class Removed:
    method: str
    line: int
    source: str


class CountingStripper:
    """Removes the statements of SchedulerCore's methods that touch counting objects.

    A statement goes when it mentions a counting attribute (``m_*``/``counters``/``app_counters`` for metrics,
    ``stats`` for statistics) or a local name bound from one; a compound statement whose
    header does, goes whole; a loop or ``if`` left with an empty body goes; then assignments to
    locals nobody reads (and whose right side calls nothing but ``len``) go, until nothing
    changes. ``__init__`` is kept whole, so every object still exists, untouched.
    """

    def __init__(self, counting_attrs: Sequence[str], strip_m_prefix: bool) -> None:
        self.counting_attrs = set(counting_attrs)
        self.strip_m_prefix = strip_m_prefix
        self.removed: list[Removed] = []

    def is_counting_attr(self, name: str) -> bool:
        return name in self.counting_attrs or (self.strip_m_prefix and name.startswith("m_"))

    def mentions(self, node: ast.AST, tainted: set[str]) -> bool:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and self.is_counting_attr(sub.attr):
                return True
            if isinstance(sub, ast.Name) and sub.id in tainted:
                return True
        return False

    def strip_body(self, body: list[ast.stmt], method: str, tainted: set[str]) -> list[ast.stmt]:
        kept: list[ast.stmt] = []
        for stmt in body:
            if isinstance(stmt, ast.If | ast.For | ast.While | ast.With | ast.Try):
                header = [getattr(stmt, a) for a in ("test", "iter", "target") if hasattr(stmt, a)]
                header += [item.context_expr for item in getattr(stmt, "items", [])]
                if any(self.mentions(h, tainted) for h in header):
                    self.note(stmt, method)
                    continue
                for attr in ("body", "orelse", "finalbody"):
                    if hasattr(stmt, attr):
                        setattr(stmt, attr, self.strip_body(getattr(stmt, attr), method, tainted))
                for handler in getattr(stmt, "handlers", []):
                    handler.body = self.strip_body(handler.body, method, tainted) or [ast.Pass()]
                if not stmt.body and not getattr(stmt, "orelse", None):
                    if isinstance(stmt, ast.If | ast.For):
                        self.note(stmt, method)
                        continue
                if not stmt.body:
                    stmt.body = [ast.Pass()]
                kept.append(stmt)
            elif self.mentions(stmt, tainted):
                if isinstance(stmt, ast.Assign | ast.AugAssign | ast.AnnAssign):
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                    for t in targets:  # a local bound from a counting object is one too
                        elts = t.elts if isinstance(t, ast.Tuple) else [t]
                        tainted |= {n.id for n in elts if isinstance(n, ast.Name)}
                self.note(stmt, method)
            else:
                kept.append(stmt)
        return kept

    def remove_dead_stores(self, fn: ast.FunctionDef, originally_loaded: set[str]) -> bool:
        """Removes stores to locals that stripping left unread (never ones unread before)."""
        loaded = loaded_names(fn)
        changed = False

        def pure(expr: ast.AST | None) -> bool:
            return expr is None or all(
                not isinstance(n, ast.Call)
                or (isinstance(n.func, ast.Name) and n.func.id in PURE_CALLS)
                for n in ast.walk(expr)
            )

        def dead(stmt: ast.stmt) -> bool:
            if isinstance(stmt, ast.Assign):
                targets = stmt.targets
            elif isinstance(stmt, ast.AugAssign | ast.AnnAssign):
                targets = [stmt.target]
            else:
                return False
            names = [t for t in targets if isinstance(t, ast.Name)]
            return (
                len(names) == len(targets)
                and all(t.id not in loaded and t.id in originally_loaded for t in names)
                and pure(stmt.value)
            )

        def sweep(body: list[ast.stmt]) -> list[ast.stmt]:
            nonlocal changed
            kept = []
            for stmt in body:
                if dead(stmt):
                    self.note(stmt, fn.name)
                    changed = True
                    continue
                for attr in ("body", "orelse", "finalbody"):
                    if hasattr(stmt, attr) and isinstance(getattr(stmt, attr), list):
                        setattr(stmt, attr, sweep(getattr(stmt, attr)))
                if isinstance(stmt, ast.If | ast.For) and not stmt.body and not stmt.orelse:
                    self.note(stmt, fn.name)
                    changed = True
                    continue
                if hasattr(stmt, "body") and isinstance(stmt.body, list) and not stmt.body:
                    stmt.body = [ast.Pass()]
                kept.append(stmt)
            return kept

        fn.body = sweep(fn.body) or [ast.Pass()]
        return changed

    def note(self, stmt: ast.stmt, method: str) -> None:
        text = ast.unparse(stmt).splitlines()
        source = text[0] + (" ..." if len(text) > 1 else "")
        self.removed.append(Removed(method, stmt.lineno, source))

    def transform(self, tree: ast.Module) -> ast.Module:
        core_class = next(
            n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SchedulerCore"
        )
        for fn in core_class.body:
            if not isinstance(fn, ast.FunctionDef) or fn.name == "__init__":
                continue
            originally_loaded = loaded_names(fn)
            fn.body = self.strip_body(fn.body, fn.name, set()) or [ast.Pass()]
            while self.remove_dead_stores(fn, originally_loaded):
                pass
        return ast.fix_missing_locations(tree)


def loaded_names(fn: ast.FunctionDef) -> set[str]:
    return {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def compile_stripped_core(name: str, stripper: CountingStripper) -> type[SchedulerCore]:
    """SchedulerCore from the scheduler module's own source, with ``stripper`` applied."""
    path = inspect.getsourcefile(scheduler_module)
    assert path is not None
    tree = stripper.transform(ast.parse(Path(path).read_text(), filename=path))
    module = types.ModuleType(f"benchmarks._{name}_scheduler")
    module.__file__ = path
    sys.modules[module.__name__] = module  # dataclasses look their module up while processing
    exec(compile(tree, f"{path} ({name})", "exec"), module.__dict__)
    return module.SchedulerCore
