"""PNG plots of a ``scheduler`` result, drawn from its JSON document only.

Owns the figures: ``<stem>-aimd-limit.png`` (the AIMD batch limit of each batching subject over
its warm-up and measured run, sampled from ``/metrics``, with the analytic n* of the synthetic
model) and ``<stem>-summary.png`` (one panel per section: req/s per setting, answered/s and p99
annotated), both from the first repeat. Because it reads the JSON only, a result can be re-plotted later:

    .venv/bin/python -m benchmarks.plots benchmarks/results/scheduler-<UTC>.json

matplotlib is optional: without it, ``plot_results`` says so and draws nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_results(document: dict, stem: Path) -> list[str]:
    """Writes the PNGs beside ``stem`` (a path without suffix); returns lines to print."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [
            "plots: matplotlib is not importable, so no PNG was drawn "
            "(.venv/bin/python -m pip install matplotlib)"
        ]
    lines = []
    runs = [r for r in document["runs"] if r.get("repeat", 0) == 0]  # the first repeat
    aimd = [r for r in runs if r["section"] == "batching" and r["label"] == "AIMD" and r["samples"]]
    if aimd:
        path = stem.with_name(stem.name + "-aimd-limit.png")
        plot_aimd_limits(plt, aimd, document["config"], path)
        lines.append(f"plot: {path}")
    if any(r["result"] for r in runs):
        path = stem.with_name(stem.name + "-summary.png")
        plot_summary(plt, runs, document["config"], path)
        lines.append(f"plot: {path}")
    return lines


def interval_mean_batches(samples: Sequence[dict]) -> tuple[list[float], list[float]]:
    """(time, mean batch size of the batches finished since the previous sample that moved)."""
    times, means = [], []
    prev = samples[0] if samples else None
    for s in samples[1:]:
        batches = s["batches"] - prev["batches"]
        if batches > 0:
            times.append(s["t_s"])
            means.append((s["batch_size_sum"] - prev["batch_size_sum"]) / batches)
            prev = s
    return times, means


def plot_aimd_limits(plt, runs: Sequence[dict], config: dict, path: Path) -> None:
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 3.2 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        samples = run["samples"]
        t = [s["t_s"] for s in samples]
        ax.step(t, [s["limit"] for s in samples], where="post", label="batch limit (AIMD)")
        mt, mb = interval_mean_batches(samples)
        ax.plot(mt, mb, ".", markersize=4, alpha=0.6, label="mean batch sent, per interval")
        if run["subject"] == "synthetic":
            n_star = config["synthetic_n_star"]
            ax.axhline(n_star, color="k", linestyle="--", linewidth=1, label=f"n* = {n_star}")
        if run["measured_from_s"] is not None and run["measured_to_s"] is not None:
            ax.axvspan(
                run["measured_from_s"], run["measured_to_s"], color="0.9", label="measured run"
            )
        ax.set_ylim(0, config["max_batch_size"] * 1.08)
        ax.set_xlabel("seconds since the warm-up started")
        ax.set_ylabel("queries per batch")
        ax.set_title(
            f"{run['subject']}: AIMD batch limit, closed loop c={run['concurrency']}, "
            f"/metrics every {1e3 * config['sample_interval_s']:.0f} ms"
        )
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bar_panel(ax, labels: Sequence[str], runs: Sequence[dict | None], title: str) -> None:
    """req/s bars, answered/s (not defaults) drawn over them, p99 written above each."""
    x = range(len(labels))
    req = [r["result"]["req_per_s"] if r and r["result"] else 0.0 for r in runs]
    answered = [(r["answered_per_s"] or 0.0) if r else 0.0 for r in runs]
    ax.bar(x, req, color="0.75", label="req/s")
    ax.bar(x, answered, width=0.5, color="tab:blue", label="answered/s (not default)")
    for i, r in enumerate(runs):
        if r and r["result"]:
            ax.annotate(
                f"p99 {r['result']['p99_ms']:.1f} ms",
                (i, req[i]),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, max(req + [1.0]) * 1.18)
    ax.legend(fontsize=7, loc="upper left")


def plot_summary(plt, runs: Sequence[dict], config: dict, path: Path) -> None:
    panels = []
    batching = [r for r in runs if r["section"] == "batching"]
    for subject, c in dict.fromkeys((r["subject"], r["concurrency"]) for r in batching):
        rs = [r for r in batching if (r["subject"], r["concurrency"]) == (subject, c)]
        panels.append(([r["label"] for r in rs], rs, f"batching, {subject}, c={c}"))
    delay = sorted(
        (r for r in runs if r["section"] == "delay"),
        key=lambda r: (r["concurrency"], int(r["setting"].removeprefix("wait-"))),
    )
    if delay:
        panels.append(
            (
                [f"c={r['concurrency']}\n{r['label']}" for r in delay],
                delay,
                "delayed batching (AIMD on)",
            )
        )
    cache = [r for r in runs if r["section"] == "cache"]
    if cache:
        panels.append(
            (
                [f"{round(100 * r['repeat_fraction'])}% rep.\n{r['label']}" for r in cache],
                cache,
                f"prediction cache, W2, c={config['cache_concurrency']}",
            )
        )
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.8 * rows), squeeze=False)
    for ax, (labels, rs, title) in zip(axes.flat, panels, strict=False):
        bar_panel(ax, labels, rs, title)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
