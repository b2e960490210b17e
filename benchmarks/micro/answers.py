"""A V2 answer's way from the model's scores to the output tensor, JSON rows against typed rows:
``python -m benchmarks answers``.

Owns the in-process comparison behind the README's "Answers travel typed" figures. For each
case (rows per batch x output width, float32 scores) it times, per row, what the scheduler
and the frontend do with one batch's answers for V2 requests:

* ``json``: the scheduler renders the batch to JSON text (`rows.render_scores`, as it did for
  every answer before typed rows, and still does for Clipper's), the frontend parses it back
  into the tensor (`v2.rows_to_tensor`);
* ``typed``: the scheduler packs typed rows (`rows.pack_rows`), the frontend copies them into the
  tensor (`v2.answer_tensor`).

Both are checked to give the same tensor before timing. Rounds alternate the two; each
figure is the median over rounds, and the ratio json / typed is paired by round. It also
reports the bytes per row each puts on the response ring. Clipper (JSON) answers take the
``json`` scheduler side in both and are not compared here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.harness.cli import add_common_flags, common_config
from benchmarks.harness.machine import wait_until_idle
from benchmarks.harness.results import ResultWriter, markdown_table
from benchmarks.harness.stats import spread
from schooner.frontend.v2 import answer_tensor, rows_to_tensor
from schooner.ipc import rows

CASES = [(1, 1), (12, 1), (64, 1), (12, 10), (64, 10), (8, 1000)]  # (rows, width); width 1: scalars
ROUNDS, QUICK_ROUNDS = 15, 5
TARGET_S = 0.02  # each timed block runs about this long


def _scores(n: int, width: int) -> np.ndarray:
    shape = (n,) if width == 1 else (n, width)
    return np.random.default_rng(n * 1000 + width).standard_normal(shape).astype(np.float32)


def _json_path(scores: np.ndarray):
    return rows_to_tensor(rows.render_scores(scores), "FP32")


def _typed_path(scores: np.ndarray):
    return answer_tensor(rows.pack_rows(scores), "FP32")


def _loops(fn, scores) -> int:
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < TARGET_S / 4:
        fn(scores)
        k += 1
    return max(k * 4, 1)


def _time(fn, scores, loops: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(loops):
        fn(scores)
    return (time.perf_counter_ns() - t0) / loops


def measure(n: int, width: int, rounds: int) -> dict:
    scores = _scores(n, width)
    a, b = _json_path(scores), _typed_path(scores)
    if a[1] != b[1] or a[0].tobytes() != b[0].tobytes():
        raise AssertionError(f"the typed path gives another tensor for {n} x {width}")
    loops = _loops(_json_path, scores)
    json_ns, typed_ns, ratios = [], [], []
    for r in range(rounds):
        order = [(_json_path, json_ns), (_typed_path, typed_ns)]
        for fn, out in order if r % 2 == 0 else order[::-1]:
            out.append(_time(fn, scores, loops) / n)
        ratios.append(json_ns[-1] / typed_ns[-1])
    return {
        "rows": n, "width": width,
        "json_ns_per_row": statistics.median(json_ns), "typed_ns_per_row": statistics.median(typed_ns),
        "ratio": statistics.median(ratios),
        "json_bytes_per_row": sum(map(len, rows.render_scores(scores))) / n,
        "typed_bytes_per_row": sum(map(len, rows.pack_rows(scores))) / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks answers", description=__doc__.split("\n")[0])
    add_common_flags(parser)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    rounds = QUICK_ROUNDS if common.quick else ROUNDS
    writer = ResultWriter("answers", {"cases": CASES, "rounds": rounds, "repeats": common.repeats})
    runs: dict[tuple[int, int], list[dict]] = {c: [] for c in CASES}
    for repeat in range(common.repeats):
        writer.check(f"repeat {repeat + 1}", wait_until_idle(common.max_wait_idle_s, common.idle_threshold_percent))
        for n, width in CASES:
            runs[n, width].append(measure(n, width, rounds))
        print(f"[{repeat + 1}/{common.repeats}] done", flush=True)
    table_rows = []
    for (n, width), rs in runs.items():
        j = spread([r["json_ns_per_row"] / 1e3 for r in rs])
        t = spread([r["typed_ns_per_row"] / 1e3 for r in rs])
        ratio = spread([r["ratio"] for r in rs])
        table_rows.append([
            n, "scalar" if width == 1 else f"{width}", j.text(".2f"), t.text(".2f"), ratio.text(".1f") + "×",
            f"{rs[0]['json_bytes_per_row']:.0f} / {rs[0]['typed_bytes_per_row']:.0f}",
        ])
    table = markdown_table(
        ["rows", "float32 width", "JSON rows µs/row", "typed rows µs/row", "JSON / typed (paired)", "ring bytes/row JSON / typed"],
        table_rows,
    )
    print("median (min–max) over repeats of the median over rounds; scheduler + frontend, per row of a V2 answer")
    print(table)
    paths = writer.write({"table": table, "runs": {f"{n}x{w}": rs for (n, w), rs in runs.items()}}, publish=common.publish)
    print("results: " + ", ".join(str(p) for p in paths))
    return 0
