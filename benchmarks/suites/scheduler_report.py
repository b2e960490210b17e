"""The scheduler suite's tables: one per section, every figure a median (min–max) over repeats.

Owns how ``Run``s of ``benchmarks.suites.scheduler_runs`` become the printed report and the
result document. Runs of one setting at one concurrency (and repeat fraction) across
``--repeats`` form one row; a ratio (AIMD vs best fixed, wait vs 0, cache on vs off) is the
median of the ratios of repeat i to repeat i, with their min–max (``benchmarks.harness.stats``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from benchmarks.harness.results import markdown_table
from benchmarks.harness.stats import paired_ratio_by, ratio_text, spread, spread_text
from benchmarks.suites.scheduler_runs import Run, SchedulerBenchConfig, ServerOutcome

Value = Callable[[Run], float | None]


def req_per_s(r: Run) -> float | None:
    return r.result.req_per_s if r.result else None


def p50_ms(r: Run) -> float | None:
    return r.result.p50_ms if r.result else None


def p99_ms(r: Run) -> float | None:
    return r.result.p99_ms if r.result else None


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def all_runs(outcomes: Iterable[ServerOutcome], section: str) -> list[Run]:
    return [r for o in outcomes for r in o.runs if r.section == section]


def rows_of(runs: Sequence[Run]) -> dict[tuple, list[Run]]:
    """Runs of one setting at one concurrency and repeat fraction, across repeats, in run order."""
    rows: dict[tuple, list[Run]] = {}
    for r in runs:
        rows.setdefault((r.setting, r.concurrency, r.repeat_fraction), []).append(r)
    return rows


def cell(runs: Sequence[Run], value: Value, spec: str) -> str:
    return spread_text([value(r) for r in runs], spec)


def ratio_cell(runs: Sequence[Run], base: Sequence[Run] | None, value: Value) -> str:
    if not base:
        return "-"
    return ratio_text(paired_ratio_by({r.repeat: value(r) for r in runs}, {r.repeat: value(r) for r in base}))


def median(runs: Sequence[Run], value: Value) -> float | None:
    s = spread([value(r) for r in runs])
    return s.median if s else None


def flags_of(runs: Sequence[Run]) -> str:
    many = len(runs) > 1
    return "; ".join(f"#{r.repeat + 1} {f}" if many else f for r in runs for f in r.flags)


def best_fixed(rows: dict[tuple, list[Run]]) -> list[Run] | None:
    """The fixed batch size with the most answers per second (median) that were not defaults."""
    fixed = [g for g in rows.values() if g[0].label != "AIMD" and median(g, answered) is not None]
    return max(fixed, key=lambda g: median(g, answered) or 0.0, default=None)


def answered(r: Run) -> float | None:
    return r.answered_per_s


def defaults_percent(r: Run) -> float | None:
    return percent(r.default_fraction)


def batching_report(outcomes: Sequence[ServerOutcome], config: SchedulerBenchConfig) -> list[str]:
    runs = all_runs(outcomes, "batching")
    if not runs:
        return []
    concurrencies = ",".join(map(str, config.batching_concurrencies))
    lines = [
        f"1. AIMD vs fixed batch sizes, closed loop c={concurrencies}, "
        f"max_batch_size {config.max_batch_size}, cache off",
        f"   synthetic: sleeps a + b·n, a = {1e3 * config.synthetic_a_s:g} ms, "
        f"b = {1e3 * config.synthetic_b_s:g} ms, SLO {config.synthetic_slo_micros / 1e3:g} ms: "
        f"n* = floor((0.9·SLO − a)/b) = {config.synthetic_n_star}; "
        f"w2: torch MLP, SLO {config.w2_slo_micros / 1e3:g} ms",
        "   answered/s = req/s × (1 − default%): answers computed by the model within the SLO;",
        "   model q/s: queries the model computed per second (late ones included); batch: mean "
        "queries per batch; batch ms: mean batch round trip; limit: AIMD limit, time-averaged "
        "over the measured run",
    ]
    head = ["model", "conc", "setting", "req/s", "answered/s", "default%", "p50 ms", "p99 ms",
            "model q/s", "batch", "batch ms", "limit", "answered/s vs best fixed", "flags"]
    table = []
    for subject, c in dict.fromkeys((r.subject, r.concurrency) for r in runs):
        rows = rows_of([r for r in runs if (r.subject, r.concurrency) == (subject, c)])
        best = best_fixed(rows)
        for g in rows.values():
            table.append([subject, c, g[0].label, cell(g, req_per_s, ",.0f"), cell(g, answered, ",.0f"),
                          cell(g, defaults_percent, ".1f"), cell(g, p50_ms, ".2f"), cell(g, p99_ms, ".2f"),
                          cell(g, lambda r: r.model_queries_per_s, ",.0f"), cell(g, lambda r: r.mean_batch, ".1f"),
                          cell(g, lambda r: r.mean_batch_ms, ".2f"), cell(g, lambda r: r.limit_mean, ".1f"),
                          ratio_cell(g, best, answered), flags_of(g)])
    lines.append(markdown_table(head, table))
    for subject, c in dict.fromkeys((r.subject, r.concurrency) for r in runs):
        rows = rows_of([r for r in runs if (r.subject, r.concurrency) == (subject, c)])
        best = best_fixed(rows)
        aimd = next((g for g in rows.values() if g[0].label == "AIMD"), None)
        if aimd and best:
            lines.append(
                f"  {subject} c={c}: AIMD vs best fixed ({best[0].label}): answered/s "
                f"{ratio_cell(aimd, best, answered)}, req/s {ratio_cell(aimd, best, req_per_s)}, p50 "
                f"{ratio_cell(aimd, best, p50_ms)}, p99 {ratio_cell(aimd, best, p99_ms)}; default% "
                f"{cell(aimd, defaults_percent, '.1f')} vs {cell(best, defaults_percent, '.1f')}"
            )
        if subject == "synthetic" and aimd:
            lines.append(
                f"  synthetic c={c}: AIMD limit {cell(aimd, lambda r: r.limit_mean, '.1f')} (time-average), "
                f"mean batch sent {cell(aimd, lambda r: r.mean_batch, '.1f')}, analytic n* "
                f"{config.synthetic_n_star}"
            )
    return lines


def delay_report(outcomes: Sequence[ServerOutcome], config: SchedulerBenchConfig) -> list[str]:
    runs = all_runs(outcomes, "delay")
    if not runs:
        return []
    head = ["conc", "wait µs", "req/s", "p50 ms", "p99 ms", "mean batch", "limit end", "default%",
            "req/s vs 0", "p50 vs 0", "p99 vs 0", "flags"]
    table = []
    for c in config.delay_concurrencies:
        rows = rows_of([r for r in runs if r.concurrency == c])
        base = next((g for g in rows.values() if g[0].setting == "wait-0"), None)
        for g in rows.values():
            table.append([c, g[0].setting.removeprefix("wait-"), cell(g, req_per_s, ",.0f"), cell(g, p50_ms, ".2f"),
                          cell(g, p99_ms, ".2f"), cell(g, lambda r: r.mean_batch, ".1f"),
                          cell(g, lambda r: r.limit_end, ".0f"), cell(g, defaults_percent, ".1f"),
                          ratio_cell(g, base, req_per_s), ratio_cell(g, base, p50_ms), ratio_cell(g, base, p99_ms),
                          flags_of(g)])
    return [
        f"2. Delayed batching: model sleeps a + b·n, a = {1e3 * config.delay_a_s:g} ms, "
        f"b = {1e6 * config.delay_b_s:g} µs; AIMD on, SLO {config.delay_slo_micros / 1e3:g} ms, "
        "cache off; closed loop",
        markdown_table(head, table),
    ]


def cache_report(outcomes: Sequence[ServerOutcome], config: SchedulerBenchConfig) -> list[str]:
    runs = all_runs(outcomes, "cache")
    if not runs:
        return []
    head = ["repeats", "cache", "req/s", "p50 ms", "p99 ms", "hit rate", "ideal hits", "model q/s",
            "req/s on/off", "p50 on/off", "p99 on/off", "flags"]
    table = []
    for fraction in config.repeat_fractions:
        rows = rows_of([r for r in runs if r.repeat_fraction == fraction])
        off = next((g for g in rows.values() if g[0].label == "cache off"), None)
        for g in rows.values():
            on = g[0].label == "cache on"
            base = off if on else None
            table.append([f"{round(100 * fraction)}%", g[0].label.removeprefix("cache "), cell(g, req_per_s, ",.0f"),
                          cell(g, p50_ms, ".2f"), cell(g, p99_ms, ".2f"),
                          cell(g, lambda r: percent(r.hit_rate), ".1f") if on else "-",
                          cell(g, lambda r: percent(r.ideal_hit_rate), ".1f"),
                          cell(g, lambda r: r.model_queries_per_s, ",.0f"),
                          ratio_cell(g, base, req_per_s), ratio_cell(g, base, p50_ms), ratio_cell(g, base, p99_ms),
                          flags_of(g)])
    return [
        f"3. Prediction cache: W2 (torch MLP), AIMD, SLO {config.cache_slo_micros / 1e3:g} ms, "
        f"closed loop c={config.cache_concurrency}; repeats drawn Zipf(s={config.zipf_exponent:g}) "
        f"from {config.hot_inputs:,} hot inputs, the rest sent once; same bodies for on and off",
        "   hit rate and ideal hits in %; ideal hits: repeats among the bodies wrk sent (a cache that "
        "never evicts); model q/s: queries that reached the model per second",
        markdown_table(head, table),
    ]


def format_report(outcomes: Sequence[ServerOutcome], config: SchedulerBenchConfig, repeats: int) -> str:
    lines = [f"median (min–max) of {repeats} repeats, each on a fresh server; ratios paired by repeat", ""]
    for block in (batching_report(outcomes, config), delay_report(outcomes, config), cache_report(outcomes, config)):
        if block:
            lines += [*block, ""]
    for o in outcomes:
        lines += [f"server {o.name} #{o.repeat + 1}: {flag}" for flag in o.flags]
    busy = ", ".join(f"{o.name} #{o.repeat + 1} {o.cpu_busy_percent_before:.0f}%" for o in outcomes)
    lines.append(f"other processes' CPU (% of one CPU) just before each server started: {busy}")
    return "\n".join(lines).rstrip()


def results_document(outcomes: Sequence[ServerOutcome], report: str) -> dict[str, object]:
    return {
        "servers": [
            {"name": o.name, "repeat": o.repeat, "config_toml": o.config_toml,
             "others_cpu_percent_before": o.cpu_busy_percent_before, "error": o.error, "flags": o.flags,
             "wall_s": o.wall_s}
            for o in outcomes
        ],
        "runs": [r.to_json() for o in outcomes for r in o.runs],
        "report": report,
    }
