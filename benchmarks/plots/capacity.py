"""Plots of a latency-study result JSON (``benchmarks.study``), as PNG files beside it.

``python -m benchmarks.study_plots benchmarks/results/study-<UTC>.json`` redraws them from the
JSON alone; ``benchmarks.study`` calls ``plot_all`` after each run. Owns only drawing: every
figure is read from the document, nothing is measured here.

  -cdf.png         latency CDF per system, per workload, at a common rate (the highest sweep
                   rate at which every system kept ≥ 99% SLO attainment; else the lowest rate
                   they all measured).
  -throughput.png  achieved rate vs p50 and p99 latency with the SLO line (top); SLO attainment
                   vs offered rate (bottom).
  -aimd.png        Schooner's AIMD batch limit (``schooner_batch_limit``, sampled every 100 ms)
                   over the sweep's session, with the offered rate of each point (the last,
                   red, is the recovery probe after the collapse).
  -cache.png       W4: Schooner's cache hit rate vs achieved rate, and the hit rate a cache that
                   never evicts would reach on the same requests.
  -stages.png      Schooner's mean per-request latency by stage at each rate: queue, model,
                   frontend + back (IPC hops, parse, encode), client + network; in ms (top)
                   and as shares of the mean (bottom).
  -bursty.png      the on/off run (fresh server): offered rate and p99 latency per 100 ms, per
                   system.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import orjson  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

SUSTAINED = 0.99
COLORS = {
    "inline": "tab:gray",
    "schooner": "tab:blue",
    "litserve": "tab:green",
    "rayserve": "tab:orange",
}
STAGES = (
    ("queue", "queue", "tab:orange"),
    ("model", "model", "tab:green"),
    ("frontend_back", "frontend + back", "tab:blue"),
    ("client_network", "client + network", "tab:gray"),
)


def _plain_log(axis) -> None:
    """Log scale with plain numbers (1,000 rather than 10^3) and no crowded minor labels."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _color(system: str) -> str | None:
    return COLORS.get(system)


def _ok(point: dict) -> bool:
    return point.get("error") is None and bool(point.get("summary"))


def _runs(doc: dict, workload: str) -> list[dict]:
    return [r for r in doc["runs"] if r["workload"] == workload]


def _workloads(doc: dict) -> list[str]:
    return list(dict.fromkeys(r["workload"] for r in doc["runs"]))


def _axes(n: int, rows: int = 1, width: float = 4.2, height: float = 3.4):
    fig, axes = plt.subplots(rows, n, figsize=(width * n, height * rows), squeeze=False)
    return fig, axes


def common_rate(runs: Sequence[dict]) -> float | None:
    """Highest sweep rate every run measured with ≥ 99% SLO attainment; else the lowest rate
    they all measured; None when they share none."""
    by_run = [{round(p["rate_per_s"], 3): p for p in r["points"] if _ok(p)} for r in runs]
    if not by_run:
        return None
    shared = sorted(set.intersection(*(set(b) for b in by_run)))
    if not shared:
        return None
    good = [
        rate
        for rate in shared
        if all((b[rate]["summary"]["slo_attainment"] or 0) >= SUSTAINED for b in by_run)
    ]
    return max(good) if good else shared[0]


def plot_cdf(doc: dict, out: Path) -> Path:
    workloads = _workloads(doc)
    fig, axes = _axes(len(workloads))
    slo = doc["config"]["slo_ms"]
    for ax, w in zip(axes[0], workloads, strict=True):
        runs = [r for r in _runs(doc, w) if r["points"]]
        rate = common_rate(runs)
        for r in runs:
            p = next((p for p in r["points"] if _ok(p) and round(p["rate_per_s"], 3) == rate), None)
            if p is None:
                continue
            xs = [max(x, 1e-3) for x, _ in p["cdf_ms"]]
            ys = [y for _, y in p["cdf_ms"]]
            p99 = p["summary"]["latency"]["p99_ms"]
            label = f"{r['system']} (p99 {p99:.2f} ms)"
            ax.step(xs, ys, where="post", label=label, color=_color(r["system"]))
        ax.axvline(slo, color="red", ls=":", lw=1, label=f"SLO {slo:g} ms")
        ax.set_xscale("log")
        ax.set_title(f"{w}: latency CDF" + (f" at {rate:,.0f}/s Poisson" if rate else ""))
        ax.set_xlabel("latency from scheduled send (ms)")
        ax.set_ylabel("fraction of answered requests")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out.with_name(out.stem + "-cdf.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_throughput(doc: dict, out: Path) -> Path:
    workloads = _workloads(doc)
    fig, axes = _axes(len(workloads), rows=2)
    slo = doc["config"]["slo_ms"]
    for col, w in enumerate(workloads):
        top, bottom = axes[0][col], axes[1][col]
        marked = False
        for r in _runs(doc, w):
            pts = [p for p in r["points"] if _ok(p)]
            if not pts:
                continue
            x = [p["summary"]["achieved_per_s"] for p in pts]
            c = _color(r["system"])
            top.plot(
                x,
                [p["summary"]["latency"]["p50_ms"] for p in pts],
                "o--",
                color=c,
                ms=3,
                label=f"{r['system']} p50",
            )
            top.plot(
                x,
                [p["summary"]["latency"]["p99_ms"] for p in pts],
                "s-",
                color=c,
                ms=3,
                label=f"{r['system']} p99",
            )
            gen = [p for p in pts if p["summary"]["generator_limited"]]
            if gen:
                top.plot(
                    [p["summary"]["achieved_per_s"] for p in gen],
                    [p["summary"]["latency"]["p99_ms"] for p in gen],
                    "x",
                    color="red",
                    ms=8,
                    label=None if marked else "generator-limited point",
                )
                marked = True
            bottom.plot(
                [p["summary"]["offered_per_s"] for p in pts],
                [100 * (p["summary"]["slo_attainment"] or 0) for p in pts],
                "o-",
                color=c,
                ms=3,
                label=r["system"],
            )
        top.axhline(slo, color="red", ls=":", lw=1, label=f"SLO {slo:g} ms")
        top.set_yscale("log")
        top.set_xscale("log")
        _plain_log(top.xaxis)
        top.set_title(f"{w}: latency vs achieved rate")
        top.set_xlabel("achieved (2xx answers/s)")
        top.set_ylabel("latency (ms)")
        top.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=7)
        bottom.axhline(99, color="gray", ls=":", lw=1)
        bottom.axhline(50, color="red", ls=":", lw=1)
        bottom.set_xscale("log")
        _plain_log(bottom.xaxis)
        bottom.set_ylim(-2, 102)
        bottom.set_title(f"{w}: SLO attainment vs offered rate")
        bottom.set_xlabel("offered (arrivals/s)")
        bottom.set_ylabel(f"% within {slo:g} ms, non-default")
        bottom.grid(True, which="both", alpha=0.3)
        bottom.legend(fontsize=7)
    fig.tight_layout()
    path = out.with_name(out.stem + "-throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sampled_runs(doc: dict) -> list[dict]:
    return [r for r in doc["runs"] if r.get("limit_samples")]


def plot_aimd(doc: dict, out: Path) -> Path | None:
    runs = _sampled_runs(doc)
    if not runs:
        return None
    fig, axes = _axes(len(runs), width=4.8)
    for ax, r in zip(axes[0], runs, strict=True):
        samples = r["limit_samples"]
        ax.plot(
            [s["t_s"] for s in samples],
            [s["limit"] for s in samples],
            color="tab:blue",
            lw=1,
            label="batch limit",
        )
        ax.set_xlabel("time since server ready (s)")
        ax.set_ylabel("AIMD batch limit", color="tab:blue")
        ax.set_title(f"{r['workload']} {r['system']}: AIMD limit over time")
        ax.grid(True, alpha=0.3)
        twin = ax.twinx()
        for p in [*r["points"], *([r["recovery"]] if r.get("recovery") else [])]:
            if p.get("t_start_s") is None or p.get("t_end_s") is None:
                continue
            color = "tab:red" if p["kind"] == "recovery" else "tab:gray"
            twin.hlines(p["rate_per_s"], p["t_start_s"], p["t_end_s"], color=color, lw=2)
        twin.set_yscale("log")
        _plain_log(twin.yaxis)
        twin.set_ylabel("offered rate per point (/s; red: recovery probe)", color="tab:gray")
    fig.tight_layout()
    path = out.with_name(out.stem + "-aimd.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cache(doc: dict, out: Path) -> Path | None:
    runs = [
        r for r in doc["runs"] if any(_ok(p) and p.get("hit_rate") is not None for p in r["points"])
    ]
    if not runs:
        return None
    fig, axes = _axes(1, width=5.5)
    ax = axes[0][0]
    for r in runs:
        pts = [p for p in r["points"] if _ok(p) and p.get("hit_rate") is not None]
        x = [p["summary"]["achieved_per_s"] for p in pts]
        ax.plot(
            x,
            [100 * p["hit_rate"] for p in pts],
            "o-",
            color=_color(r["system"]),
            label=f"{r['workload']} {r['system']}: measured",
        )
        ax.plot(
            x,
            [100 * (p.get("ideal_hit_rate") or 0) for p in pts],
            "--",
            color="gray",
            label="never-evicting cache, same requests",
        )
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    ax.set_ylim(0, 100)
    ax.set_xlabel("achieved (2xx answers/s)")
    ax.set_ylabel("cache hit rate (%)")
    ax.set_title("prediction cache: hit rate vs throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out.with_name(out.stem + "-cache.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_stages(doc: dict, out: Path) -> Path | None:
    runs = [r for r in doc["runs"] if any(_ok(p) and p.get("stages_ms") for p in r["points"])]
    if not runs:
        return None
    fig, axes = _axes(len(runs), rows=2, width=4.8, height=3.0)
    for col, r in enumerate(runs):
        top, bottom = axes[0][col], axes[1][col]
        pts = [p for p in r["points"] if _ok(p) and p.get("stages_ms")]
        labels = [f"{p['rate_per_s']:,.0f}" for p in pts]
        # a stage below 0 (client + network when the server's mean exceeds the client's, e.g. a
        # sample taken over a slightly different span) is drawn as 0
        values = {k: [max(0.0, p["stages_ms"].get(k) or 0.0) for p in pts] for k, _, _ in STAGES}
        totals = [sum(v[i] for v in values.values()) or 1.0 for i in range(len(pts))]
        low_abs, low_pct = [0.0] * len(pts), [0.0] * len(pts)
        for key, label, color in STAGES:
            pct = [100 * v / t for v, t in zip(values[key], totals, strict=True)]
            top.bar(labels, values[key], bottom=low_abs, color=color, label=label)
            bottom.bar(labels, pct, bottom=low_pct, color=color, label=label)
            low_abs = [a + v for a, v in zip(low_abs, values[key], strict=True)]
            low_pct = [a + v for a, v in zip(low_pct, pct, strict=True)]
        top.set_title(f"{r['workload']} {r['system']}: mean latency by stage")
        top.set_ylabel("mean ms per request")
        bottom.set_title("share of the mean")
        bottom.set_ylabel("%")
        bottom.set_ylim(0, 100)
        for ax in (top, bottom):
            ax.set_xlabel("offered rate (/s)")
            ax.tick_params(axis="x", rotation=45, labelsize=7)
            ax.grid(True, axis="y", alpha=0.3)
        top.legend(fontsize=7)
    fig.tight_layout()
    path = out.with_name(out.stem + "-stages.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bursty(doc: dict, out: Path) -> Path | None:
    workloads = [
        w
        for w in _workloads(doc)
        if any(r.get("bursty") and r["bursty"].get("timeline") for r in _runs(doc, w))
    ]
    if not workloads:
        return None
    fig, axes = _axes(len(workloads), width=4.8)
    slo = doc["config"]["slo_ms"]
    for ax, w in zip(axes[0], workloads, strict=True):
        twin = ax.twinx()
        drew_rate = False
        for r in _runs(doc, w):
            b = r.get("bursty")
            if not b or not b.get("timeline"):
                continue
            tl = b["timeline"]
            if not drew_rate:
                ax.fill_between(
                    tl["t_s"],
                    tl["offered_per_s"],
                    step="post",
                    color="lightgray",
                    label="offered /s",
                )
                drew_rate = True
            pts = [(t, v) for t, v in zip(tl["t_s"], tl["p99_ms"], strict=True) if v is not None]
            twin.plot(
                [t for t, _ in pts],
                [v for _, v in pts],
                color=_color(r["system"]),
                lw=1.2,
                label=f"{r['system']} p99",
            )
        twin.axhline(slo, color="red", ls=":", lw=1)
        twin.set_yscale("log")
        twin.set_ylabel("p99 latency per 100 ms (ms)")
        ax.set_ylabel("offered (arrivals/s per 100 ms)")
        ax.set_xlabel("time (s; first part is warm-up)")
        ax.set_title(f"{w}: on/off bursts")
        lines = ax.get_legend_handles_labels()
        tl2 = twin.get_legend_handles_labels()
        twin.legend(lines[0] + tl2[0], lines[1] + tl2[1], fontsize=7, loc="upper right")
    fig.tight_layout()
    path = out.with_name(out.stem + "-bursty.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(doc: dict, json_path: Path) -> list[Path]:
    out = json_path.with_suffix("")
    made = [plot_cdf(doc, out), plot_throughput(doc, out)]
    made += [
        p
        for p in (
            plot_aimd(doc, out),
            plot_cache(doc, out),
            plot_stages(doc, out),
            plot_bursty(doc, out),
        )
        if p
    ]
    return made


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(
            "usage: python -m benchmarks.study_plots benchmarks/results/study-<UTC>.json"
        )
    path = Path(args[0])
    for png in plot_all(orjson.loads(path.read_bytes()), path):
        print(png)


if __name__ == "__main__":
    main()
