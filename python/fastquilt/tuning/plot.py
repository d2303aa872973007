"""The tuning plot as a PNG drawn with Pillow: throughput and peak memory against batch size,
time per output voxel against overlap, and the out-of-core runs."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

PANEL = (440, 300)
MARGIN = (64, 36, 18, 44)  # left, top, right, bottom
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44))


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.2e}"
    return f"{v:.3g}"


def line_chart(draw, box: tuple[int, int, int, int], title: str, xlabel: str,
               series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
               log2_x: bool = False) -> None:
    """A line chart of ``series`` (``(name, xs, ys)``) in ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(200, 200, 200))
    draw.text((x0 + 8, y0 + 8), title, fill=(0, 0, 0))
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys)]
    if not pts:
        draw.text((x0 + 8, y0 + 40), "not measured", fill=(120, 120, 120))
        return
    tx = (lambda v: math.log2(v)) if log2_x else (lambda v: v)
    xs = [tx(p[0]) for p in pts]
    lo_x, hi_x = min(xs), max(xs)
    lo_y, hi_y = 0.0, max(p[1] for p in pts) or 1.0
    hi_x = hi_x if hi_x > lo_x else lo_x + 1
    l, t = x0 + MARGIN[0], y0 + MARGIN[1]
    r, b = x1 - MARGIN[2], y1 - MARGIN[3]
    draw.line([(l, t), (l, b), (r, b)], fill=(0, 0, 0))

    def at(x: float, y: float) -> tuple[float, float]:
        return (l + (tx(x) - lo_x) / (hi_x - lo_x) * (r - l), b - (y - lo_y) / (hi_y - lo_y) *
                (b - t))

    for v in (lo_y, hi_y / 2, hi_y):
        _, py = at(pts[0][0], v)
        draw.line([(l - 4, py), (l, py)], fill=(0, 0, 0))
        draw.text((x0 + 4, py - 6), _fmt(v), fill=(0, 0, 0))
    for x in sorted({p[0] for p in pts}):
        px, _ = at(x, lo_y)
        draw.line([(px, b), (px, b + 4)], fill=(0, 0, 0))
        draw.text((px - 8, b + 6), _fmt(x), fill=(0, 0, 0))
    draw.text(((l + r) // 2 - 30, b + 22), xlabel, fill=(0, 0, 0))
    for k, (name, sx, sy) in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        line = [at(x, y) for x, y in zip(sx, sy)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for px, py in line:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        draw.text((r - 150, t + 4 + 12 * k), name, fill=colour)


def draw_plot(result: dict, path: str | os.PathLike) -> None:
    """Write the four panels of a tuning result to ``path`` (PNG)."""
    from PIL import Image, ImageDraw

    w, h = PANEL
    img = Image.new("RGB", (2 * w, 2 * h), "white")
    d = ImageDraw.Draw(img)
    rows = [r for r in result["batch"]["rows"] if not r.get("out_of_memory")]
    bs = [r["batch_size"] for r in rows]
    oom = [r["batch_size"] for r in result["batch"]["rows"] if r.get("out_of_memory")]
    line_chart(d, (0, 0, w - 1, h - 1), "throughput (windows/s)" +
               (f"; out of memory at {oom[0]}" if oom else ""), "batch size",
               [("windows/s", bs, [r["windows_per_s"] for r in rows])], log2_x=True)
    line_chart(d, (w, 0, 2 * w - 1, h - 1), "peak memory (MB)", "batch size",
               [("MB", bs, [r["peak_bytes"] / 1e6 for r in rows])], log2_x=True)
    steps = result["step"]["rows"]
    line_chart(d, (0, h, w - 1, 2 * h - 1), "time per output voxel (ns)", "overlap",
               [("ns/voxel", [r["overlap"] for r in steps],
                 [r["seconds_per_output_voxel"] * 1e9 for r in steps])])
    ooc = result.get("out_of_core", {}).get("rows", [])
    series = []
    for unit in sorted({r["unit"] for r in ooc}):
        rs = [r for r in ooc if r["unit"] == unit]
        series.append((f"unit {unit}", [r["reader_threads"] for r in rs],
                       [r["seconds"] for r in rs]))
    line_chart(d, (w, h, 2 * w - 1, 2 * h - 1), "out of core: seconds of a crop",
               "reader threads", series)
    img.save(path)
