"""The report's figures: plain numbers in, a matplotlib ``Figure`` out, nothing read or written.

Every figure has a title, axis labels with units and, with several series, a legend. They
stay readable printed in grey: heat maps use ``cividis`` (its lightness rises monotonically,
so grey levels keep the order of the values) and line series differ in marker and line
style, not in colour alone. Reference lines (random expectation, θ0, dense) are grey.

Figures are made with ``matplotlib.figure.Figure`` rather than ``pyplot``: no global state,
no GUI backend, safe in a process that also trains.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

CMAP = "cividis"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")
LINESTYLES = ("-", "--", "-.", ":")
WIDTH, HEIGHT = 6.4, 4.2  # inches; at DPI, two figures side by side on a 1280-pixel page
DPI = 100
LEGEND_INSIDE = 5  # at most this many series get a legend inside the axes


@dataclass(frozen=True)
class Series:
    """One line of a line plot. ``reference`` lines (chance, bounds, baselines) are grey."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    err: Sequence[float] | None = None
    reference: bool = False


def _new(width: float = WIDTH, height: float = HEIGHT) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _line_styles(count: int):
    """Colour, marker and line style of each data series: any two differ in marker, and in
    line style unless there are more series than styles, so grey prints keep them apart."""
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    return zip(
        itertools.cycle(colours),
        itertools.cycle(MARKERS),
        itertools.cycle(LINESTYLES),
        range(count),
        strict=False,
    )


# Reference lines: grey or black, thin, dotted or dashed, with thin markers: never mistaken
# for a data series (those are coloured, thicker and have filled markers).
REFERENCE_STYLES = (
    ("dimgrey", "x", (0, (4, 2))),
    ("black", "+", (0, (1, 1.5))),
    ("grey", "1", (0, (4, 1, 1, 1))),
)


def lines(
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[Series],
    xticks: Sequence[str] | None = None,
    log: bool = False,
) -> Figure:
    """Series against x; with ``xticks`` the x values are positions 0..n-1 named by them.
    Data series first in the legend, then the references. ``log``: a log y axis."""
    below = len(series) > LEGEND_INSIDE  # many series would hide the lines: legend below
    fig = _new(height=HEIGHT + (0.2 * math.ceil(len(series) / 2) if below else 0))
    ax = fig.add_subplot()
    data = [s for s in series if not s.reference]
    references = [s for s in series if s.reference]
    styles = [
        {"color": c, "marker": m, "linestyle": ls, "linewidth": 2, "markersize": 7}
        for c, m, ls, _ in _line_styles(len(data))
    ] + [
        {"color": c, "marker": m, "linestyle": ls, "linewidth": 1.3, "markersize": 8}
        for (c, m, ls), _ in zip(itertools.cycle(REFERENCE_STYLES), references, strict=False)
    ]
    handles = [
        ax.errorbar(s.x, s.y, yerr=s.err, label=s.label, capsize=3, **style)
        for s, style in zip([*data, *references], styles, strict=True)
    ]
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), xticks, rotation=45 if len(xticks) > 12 else 0)
    elif all(float(x).is_integer() for s in series for x in s.x):  # layers: no 0.25 ticks
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log:
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())  # 1, 10, 100 rather than 10^k
    _label(ax, title, xlabel, ylabel)
    ax.grid(True, alpha=0.3)
    if below:
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    elif len(series) > 1:
        ax.legend(handles=handles, fontsize="small")
    return fig


def _label(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def heatmap(
    title: str,
    values: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    xlabel: str,
    ylabel: str,
    colorbar: str,
    text: Sequence[Sequence[str]] | None = None,
    separators: Sequence[int] = (),
) -> Figure:
    """A matrix in cividis with a colour bar; each cell says its value (``text``, else the
    value to 3 decimals) when the cells are large enough to read. NaN cells are white.
    ``separators``: row indices above which a horizontal rule is drawn (e.g. between the
    sources and the reference rows of a transfer matrix)."""
    height = max(HEIGHT, 1.2 + 0.45 * len(rows))
    width = max(WIDTH, 2.5 + 0.7 * len(columns))
    fig = _new(width, height)
    ax = fig.add_subplot()
    data = np.ma.masked_invalid(np.asarray(values, dtype=float))
    image = ax.imshow(data, cmap=CMAP, aspect="auto")
    ax.set_xticks(
        range(len(columns)),
        columns,
        rotation=30 if len(columns) > 4 else 0,
        ha="right" if len(columns) > 4 else "center",
    )
    ax.set_yticks(range(len(rows)), rows)
    fig.colorbar(image, ax=ax, label=colorbar)
    if len(rows) * len(columns) <= 150:
        _annotate(ax, data, text)
    for row in separators:
        ax.axhline(row - 0.5, color="white", linewidth=3)
    _label(ax, title, xlabel, ylabel)
    return fig


def _annotate(ax, data: np.ma.MaskedArray, text: Sequence[Sequence[str]] | None) -> None:
    """Each cell's text in black on light cells and white on dark ones (cividis is dark
    at the low end)."""
    finite = data.compressed()
    if finite.size == 0:
        return
    low, high = float(finite.min()), float(finite.max())
    middle = (low + high) / 2
    for (i, j), value in np.ndenumerate(data.filled(np.nan)):
        label = text[i][j] if text is not None else ("" if math.isnan(value) else f"{value:.3f}")
        if not label:
            continue
        dark = not math.isnan(value) and (value < middle if high > low else True)
        ax.text(
            j,
            i,
            label,
            ha="center",
            va="center",
            fontsize="small",
            color="white" if dark else "black",
        )


def dendrogram(title: str, merges: Sequence[dict], languages: Sequence[str], ylabel: str) -> Figure:
    """A tree from ``cluster.cluster``'s merges (scipy's linkage rows over ``languages``)."""
    from scipy.cluster.hierarchy import dendrogram as draw

    tree = np.array([[m["left"], m["right"], m["distance"], m["size"]] for m in merges], float)
    fig = _new()
    ax = fig.add_subplot()
    draw(tree, labels=list(languages), ax=ax, link_color_func=lambda _: "black")
    _label(ax, title, "language", ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    return fig
