"""Plots of a ``selection`` result file: cumulative accuracy, regret, the broken model's share."""

from __future__ import annotations

from pathlib import Path

import orjson


def plot_selection(json_path: Path) -> str:
    """Writes ``<json stem>.png``; returns a line saying what was drawn (or why not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot: matplotlib is not importable, so no PNG was drawn"
    doc = orjson.loads(Path(json_path).read_bytes())
    curves = doc["curves"]
    x = [i + 1 for i in curves["query_index"]]
    degrade_at = doc["config"]["degrade_at"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, cum in curves["models_cum_correct"].items():
        axes[0].plot(x, [c / n for c, n in zip(cum, x, strict=True)], color="0.75", lw=0.8, label=f"model {name}")
    for label, cum in curves["policies_mean_cum_correct"].items():
        axes[0].plot(x, [c / n for c, n in zip(cum, x, strict=True)], lw=1.5, label=label)
        axes[1].plot(x, curves["policies_mean_regret"][label], lw=1.5, label=label)
        axes[2].plot(x, curves["policies_mean_broken_share"][label], lw=1.5, label=label)
    titles = ("cumulative accuracy", "regret vs best single model (mean over seeds)", "probability / weight of the broken model")
    for ax, title in zip(axes, titles, strict=True):
        ax.axvline(degrade_at, color="red", ls=":", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("query")
    axes[0].set_ylim(0.4, 1.0)
    axes[0].legend(fontsize=7)
    out = Path(json_path).with_suffix(".png")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return f"plot: {out}"
