"""Deterministic inline SVG charts (histograms, line charts) and the report's colour palette.

Hand-written SVG rather than matplotlib: the same data gives the same bytes (no dates, no ids),
the charts are a few hundred bytes each, and every chart has its data table beside it in the page.
Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies);
lines also differ by dash pattern so colour is never the only cue.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

#: Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
DASHES = ("", "6 3", "2 2", "8 3 2 3")


def _fmt(x: float) -> str:
    if abs(x) >= 100 or float(x).is_integer():
        return f"{x:.0f}"
    return f"{x:.3g}"


def histogram(values: np.ndarray, *, bins: int = 30, threshold: float | None = None,
              title: str = "") -> tuple[str, list[dict[str, float]]]:
    """An SVG histogram with an optional dashed threshold line, and its rows (bin start, end, count).

    Example:
        >>> svg, rows = histogram(np.array([0.1, 0.2, 0.2, 0.9]), bins=4, threshold=0.5)
        >>> [r["count"] for r in rows]
        [3, 0, 0, 1]
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return "", []
    lo, hi = float(values.min()), float(values.max())
    if threshold is not None and np.isfinite(threshold):
        lo, hi = min(lo, float(threshold)), max(hi, float(threshold))
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    w, h, pad_l, pad_b, pad_t = 480, 150, 40, 22, 18
    pw, ph = w - pad_l - 8, h - pad_b - pad_t
    top = max(int(counts.max()), 1)
    bw = pw / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" stroke="#555"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" font-size="10">{top}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + ph}" text-anchor="end" font-size="10">0</text>',
             f'<text x="{pad_l}" y="{h - 6}" font-size="10">{_fmt(lo)}</text>',
             f'<text x="{pad_l + pw}" y="{h - 6}" text-anchor="end" font-size="10">{_fmt(hi)}</text>']
    for i, c in enumerate(counts):
        if c:
            bh = ph * c / top
            parts.append(f'<rect x="{pad_l + i * bw:.1f}" y="{pad_t + ph - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{bh:.1f}" fill="{PALETTE[0]}"><title>{_fmt(edges[i])}-{_fmt(edges[i + 1])}: {c}'
                         f'</title></rect>')
    if threshold is not None and np.isfinite(threshold):
        x = pad_l + pw * (float(threshold) - lo) / (hi - lo)
        parts.append(f'<line x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{pad_t + ph}" stroke="{PALETTE[1]}" '
                     f'stroke-width="2" stroke-dasharray="5 3"/>')
        anchor = "start" if x < pad_l + pw * 0.7 else "end"
        dx = 4 if anchor == "start" else -4
        parts.append(f'<text x="{x + dx:.1f}" y="{pad_t - 5}" text-anchor="{anchor}" font-size="10" '
                     f'fill="{PALETTE[1]}">threshold {_fmt(float(threshold))}</text>')
    parts.append("</svg>")
    rows = [{"start": float(edges[i]), "end": float(edges[i + 1]), "count": int(c)} for i, c in enumerate(counts)]
    return "".join(parts), rows


def line_chart(series: dict[str, Sequence[float]], *, title: str = "", x_label: str = "epoch") -> str:
    """An SVG line chart of named series over a shared 1-based x axis (legend with dash patterns)."""
    clean = {k: [float(v) for v in vs] for k, vs in series.items() if len(vs)}
    if not clean:
        return ""
    allv = np.array([v for vs in clean.values() for v in vs if np.isfinite(v)], dtype=np.float64)
    if not len(allv):
        return ""
    n = max(len(vs) for vs in clean.values())
    lo, hi = float(allv.min()), float(allv.max())
    if hi <= lo:
        hi = lo + 1.0
    w, h, pad_l, pad_b, pad_t, pad_r = 480, 170, 44, 34, 10, 10
    pw, ph = w - pad_l - pad_r, h - pad_b - pad_t

    def xy(i: int, v: float) -> str:
        x = pad_l + (pw * i / (n - 1) if n > 1 else pw / 2)
        return f"{x:.1f},{pad_t + ph - ph * (v - lo) / (hi - lo):.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" font-size="10">{_fmt(hi)}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + ph}" text-anchor="end" font-size="10">{_fmt(lo)}</text>',
             f'<text x="{pad_l}" y="{pad_t + ph + 12}" font-size="10">1</text>',
             f'<text x="{pad_l + pw}" y="{pad_t + ph + 12}" text-anchor="end" font-size="10">{n}</text>',
             f'<text x="{pad_l + pw / 2}" y="{pad_t + ph + 12}" text-anchor="middle" font-size="10">'
             f'{escape(x_label)}</text>']
    for k, (name, vs) in enumerate(clean.items()):
        colour, dash = PALETTE[k % len(PALETTE)], DASHES[k % len(DASHES)]
        pts = " ".join(xy(i, v) for i, v in enumerate(vs) if np.isfinite(v))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        lx = pad_l + 8 + k * 110
        parts.append(f'<line x1="{lx}" y1="{h - 6}" x2="{lx + 22}" y2="{h - 6}" stroke="{colour}" stroke-width="2"'
                     f'{dash_attr}/><text x="{lx + 26}" y="{h - 3}" font-size="10">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
