"""``bmsbank simulate --plot FILE.svg``: cells, CVL and CCL over time as a plain SVG.

Written by hand (no plotting library): three panels sharing the time axis, each with its axes,
ticks, labels and one ``<polyline>`` per series. Every polyline carries ``data-series`` (its
name) and its panel ``data-v0``/``data-v1`` (the values at the bottom and top edges), and the
plot ``data-t0``/``data-t1`` (the times at the left and right edges), so a reader (or a test)
can map points back to values (``data-top``/``data-height``: the panel's edges [px]). SVG 1.1: https://www.w3.org/TR/SVG11/shapes.html#PolylineElement
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

WIDTH, LEFT, RIGHT = 900, 70, 20  # px
PANEL, GAP, TOP = 180, 40, 30  # px
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def _range(values: Sequence[float]) -> tuple[float, float]:
    """A padded (low, high) around ``values`` (never empty, never zero-wide)."""
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.05, 1e-3 if hi < 10 else 0.5)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    step = 10 ** math.floor(math.log10((hi - lo) / count))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= count:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def _panel(
    top: float, title: str, unit: str, series: Mapping[str, Sequence[float]], ts: Sequence[float]
) -> list[str]:
    """One panel: frame, y ticks and labels, title, a polyline per series."""
    lo, hi = _range([v for vs in series.values() for v in vs])
    t0, t1 = ts[0], ts[-1] if ts[-1] > ts[0] else ts[0] + 1
    width = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * width

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * PANEL

    out = [f'<rect x="{LEFT}" y="{top}" width="{width}" height="{PANEL}" fill="none" '
           'stroke="#444"/>',
           f'<text x="{LEFT}" y="{top - 6}" font-size="13">{title} [{unit}]</text>']  # fmt: skip
    for v in _ticks(lo, hi):
        out.append(f'<line x1="{LEFT - 4}" y1="{y(v):.2f}" x2="{LEFT}" y2="{y(v):.2f}" '
                   f'stroke="#444"/><text x="{LEFT - 6}" y="{y(v) + 4:.2f}" font-size="11" '
                   f'text-anchor="end">{v:g}</text>')  # fmt: skip
    for k, (name, values) in enumerate(series.items()):
        points = " ".join(f"{x(t):.2f},{y(v):.3f}" for t, v in zip(ts, values, strict=True))
        out.append(f'<polyline data-series={quoteattr(name)} data-v0="{lo!r}" data-v1="{hi!r}" '
                   f'data-top="{top}" data-height="{PANEL}" '
                   f'fill="none" stroke="{COLOURS[k % len(COLOURS)]}" stroke-width="1.5" '
                   f'points="{points}"><title>{name}</title></polyline>')  # fmt: skip
    return out


def svg(trace: Sequence[Mapping[str, Any]], title: str) -> str:
    """The SVG of a ``--trace`` (rows every minute: t [s], cvl [V], ccl [A], cell_min/max [V])."""
    rows = [r for r in trace if r.get("cvl") is not None]
    if len(rows) < 2:
        raise ValueError("nothing to plot: fewer than two minutes with a CVL")
    ts = [r["t"] / 60.0 for r in rows]
    cells: dict[str, list[float]] = {}
    for k in range(len(rows[0]["cell_min"])):
        cells[f"pack {k + 1} min cell"] = [r["cell_min"][k] for r in rows]
        cells[f"pack {k + 1} max cell"] = [r["cell_max"][k] for r in rows]
    panels = [("cells", "V", cells), ("CVL", "V", {"CVL": [r["cvl"] for r in rows]}),
              ("CCL", "A", {"CCL": [r["ccl"] for r in rows]})]  # fmt: skip
    height = TOP + len(panels) * (PANEL + GAP) + 20
    body = []
    for n, (name, unit, series) in enumerate(panels):
        body += _panel(TOP + 20 + n * (PANEL + GAP), name, unit, series, ts)
    t0, t1 = ts[0], ts[-1]
    bottom = TOP + 20 + len(panels) * (PANEL + GAP) - GAP
    for t in _ticks(t0, t1, 8):
        px = LEFT + (t - t0) / (t1 - t0) * (WIDTH - LEFT - RIGHT)
        body.append(f'<text x="{px:.2f}" y="{bottom + 14}" font-size="11" '
                    f'text-anchor="middle">{t:g}</text>')  # fmt: skip
    body.append(f'<text x="{WIDTH / 2}" y="{bottom + 30}" font-size="12" '
                'text-anchor="middle">time [min]</text>')  # fmt: skip
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height + 20}" '
            f'data-t0="{t0!r}" data-t1="{t1!r}" data-left="{LEFT}" data-right="{WIDTH - RIGHT}">\n'
            f'<text x="{LEFT}" y="18" font-size="15">{escape(title)}</text>\n'
            + "\n".join(body) + "\n</svg>\n")  # fmt: skip


def progress_line(name: str, out: Any) -> Any:
    """A ``progress`` callback redrawing one line on ``out`` (a terminal): percent, minutes."""

    def show(done: int, total: int) -> None:
        line = f"simulate {name}: {100 * done // total} % ({done // 60} of {total // 60} min)"
        print(f"\r\033[K{line}", end="", file=out, flush=True)

    return show


def write(path: str, trace: Sequence[Mapping[str, Any]], title: str) -> None:
    """Write :func:`svg` to ``path`` (raises OSError, ValueError)."""
    text = svg(trace, title)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
