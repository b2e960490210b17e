"""PNG plots of a ``capacity`` result: capacity with its spread, and every probe of the searches.

``<stem>-capacity.png``: per workload, each system's capacity at the SLO (median, bar; min-max,
whisker) and, beside it, every probe of every search (offered rate vs SLO attainment, passes
filled, failures hollow), so a reader sees how the bisection closed in.
"""

from __future__ import annotations

from pathlib import Path

COLORS = ("tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def plot_capacity(document: dict, stem: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["plot: matplotlib is not importable, so no PNG was drawn"]
    runs = document["runs"]
    workloads = list(dict.fromkeys(r["workload"] for r in runs))
    systems = list(dict.fromkeys(r["system"] for r in runs))
    if not workloads:
        return []
    fig, axes = plt.subplots(len(workloads), 2, figsize=(11, 3.2 * len(workloads)), squeeze=False)
    for row, w in enumerate(workloads):
        bars, probes = axes[row]
        for k, name in enumerate(systems):
            caps = sorted(r["capacity_per_s"] for r in runs if r["workload"] == w and r["system"] == name and r["capacity_per_s"])
            color = COLORS[k % len(COLORS)]
            if caps:
                mid = caps[len(caps) // 2] if len(caps) % 2 else (caps[len(caps) // 2 - 1] + caps[len(caps) // 2]) / 2
                bars.bar(k, mid, color=color, yerr=[[mid - caps[0]], [caps[-1] - mid]], capsize=6)
            for r in runs:
                if r["workload"] != w or r["system"] != name:
                    continue
                for p in r["probes"]:
                    if p["kind"] != "search" or p.get("error"):
                        continue
                    att = p["summary"].get("slo_attainment") or 0.0
                    probes.scatter(p["rate_per_s"], 100 * att, s=18, color=color,
                                   facecolors=color if p["passed"] else "none", label=name)
        bars.set_xticks(range(len(systems)), systems)
        bars.set_ylabel("capacity at SLO (req/s)")
        bars.set_title(f"{w}: median, min-max", fontsize=10)
        probes.set_xscale("log")
        probes.axhline(99, color="red", ls=":", lw=1)
        probes.set_xlabel("offered rate (req/s)")
        probes.set_ylabel("SLO attainment %")
        handles, labels = probes.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        probes.legend(uniq.values(), uniq.keys(), fontsize=7)
    out = stem.with_name(stem.name + "-capacity.png")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [f"plot: {out}"]
