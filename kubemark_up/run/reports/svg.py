"""Plots as inline SVG, made here from the numbers (no script, no CDN): a report
opens offline in any browser and stays one file."""

from __future__ import annotations

import math
from html import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
Series = dict[str, list[tuple[float, float]]]


def _nice(value: float) -> float:
    """A round axis end at or above value (1, 2, 2.5, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _tick(value: float) -> str:
    return f"{value:.4g}"


def line_chart(plot_id: str, title: str, series: Series, *, x_label: str, y_label: str,
               width: int = 660, height: int = 300, step: bool = False, y_top: float | None = None) -> str:
    """One chart of lines; plot_id marks it (data-plot) for readers and tests."""
    left, right, top, bottom = 64, 150, 30, 44
    inner_w, inner_h = width - left - right, height - top - bottom
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-plot="{escape(plot_id)}" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f"<title>{escape(title)}</title>",
             f'<text x="{left}" y="18" class="plot-title">{escape(title)}</text>']
    if not points:
        parts.append(f'<text x="{left + inner_w / 2}" y="{top + inner_h / 2}" text-anchor="middle" '
                     f'class="no-data">no data</text></svg>')
        return "".join(parts)
    x_min = min(0.0, min(p[0] for p in points))  # time and latency axes start at 0
    x_max = max(p[0] for p in points)
    if x_max <= x_min:
        x_max = x_min + 1
    y_max = y_top or _nice(max(p[1] for p in points) * 1.05)

    def sx(x: float) -> float:
        return left + (x - x_min) / (x_max - x_min) * inner_w

    def sy(y: float) -> float:
        return top + inner_h - y / y_max * inner_h

    parts.append(f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" fill="none" stroke="#bbb"/>')
    for i in range(6):
        y = y_max * i / 5
        parts.append(f'<line x1="{left}" x2="{left + inner_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" class="tick">{_tick(y)}</text>')
        x = x_min + (x_max - x_min) * i / 5
        parts.append(f'<text x="{sx(x):.1f}" y="{top + inner_h + 16}" text-anchor="middle" class="tick">{_tick(x)}</text>')
    parts.append(f'<text x="{left + inner_w / 2}" y="{height - 6}" text-anchor="middle" class="axis">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {top + inner_h / 2}) rotate(-90)" text-anchor="middle" '
                 f'class="axis">{escape(y_label)}</text>')
    for index, (label, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        values = sorted(v for v in values if math.isfinite(v[1]))
        if not values:
            continue
        coords: list[str] = []
        for i, (x, y) in enumerate(values):
            if step and i:
                coords.append(f"{sx(x):.1f},{sy(values[i - 1][1]):.1f}")
            coords.append(f"{sx(x):.1f},{sy(y):.1f}")
        if len(coords) == 1:
            x, y = values[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}" class="series"/>')
        else:
            parts.append(f'<polyline points="{" ".join(coords)}" fill="none" stroke="{color}" stroke-width="1.6" '
                         f'class="series"/>')
        ly = top + 12 + index * 16
        parts.append(f'<rect x="{left + inner_w + 10}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + inner_w + 24}" y="{ly}" class="legend">{escape(label[:22])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def cdf(values: list[float]) -> list[tuple[float, float]]:
    """The empirical distribution of values, as (value, fraction at or below it)."""
    ordered = sorted(values)
    n = len(ordered)
    return [(v, (i + 1) / n) for i, v in enumerate(ordered)]
