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
    # which style (colour, marker): a data series' one per language, say; a reference's one
    # per kind of reference (the dense model, random masks), the same in every figure
    style: int | None = None


def _new(width: float = WIDTH, height: float = HEIGHT) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _data_style(index: int, variant: int = 0) -> dict:
    """Data style ``index``: colour, marker and line style, so that any two styles differ in
    marker (and in line style unless there are more than four), and grey prints keep them
    apart. A series' ``style`` picks its index: the same language looks the same in every
    figure. ``variant`` keeps the colour and changes marker and line style, for the second
    series of one language (its NER and its NLI ticket, say)."""
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    return {
        "color": colours[index % len(colours)],
        # a step coprime with the number of markers: a language's variants all differ
        "marker": MARKERS[(index + 5 * variant) % len(MARKERS)],
        "linestyle": LINESTYLES[(index + variant) % len(LINESTYLES)],
        "linewidth": 2,
        "markersize": 7,
    }


# Reference lines: grey or black, thin, dotted or dashed, with thin markers: never mistaken
# for a data series (those are coloured, thicker and have filled markers).
REFERENCE_STYLES = (
    ("dimgrey", "x", (0, (4, 2))),
    ("black", "+", (0, (1, 1.5))),
    ("grey", "1", (0, (4, 1, 1, 1))),
    ("darkgrey", "2", (0, (2, 2))),
    ("dimgrey", "3", (0, (6, 2))),
    ("black", "4", (0, (3, 1, 1, 1, 1, 1))),
    ("grey", "|", (0, (1, 3))),
    ("darkgrey", "_", (0, (5, 1))),
    ("dimgrey", "1", (0, (2, 1, 2, 3))),
    ("black", "2", (0, (8, 2, 1, 2))),
)


def _styles(panels: Sequence[Sequence[Series]]) -> dict[str, dict]:
    """Each label's style, the same in every panel: a series its ``style`` (else the next
    free one), from the data styles or, for a reference, the reference styles. Data series
    asking for one style share its colour and differ in marker and line style."""
    every = list({s.label: s for series in panels for s in series}.values())
    data = [s for s in every if not s.reference]
    taken = {s.style for s in data}
    free = (i for i in itertools.count() if i not in taken)
    variants: dict[int, int] = {}
    styles = {}
    for s in data:
        index = next(free) if s.style is None else s.style
        styles[s.label] = _data_style(index, variants.get(index, 0))
        variants[index] = variants.get(index, 0) + 1
    references = [s for s in every if s.reference]
    taken = {s.style for s in references}
    free = (i for i in itertools.count() if i not in taken)
    for s in references:
        index = next(free) if s.style is None else s.style
        c, m, ls = REFERENCE_STYLES[index % len(REFERENCE_STYLES)]
        styles[s.label] = dict(color=c, marker=m, linestyle=ls, linewidth=1.3, markersize=8)
    return styles


def _has_bars(series: Series) -> bool:
    return series.err is not None and any(e > 0 for e in series.err if not math.isnan(e))


def _draw(ax, series: Sequence[Series], styles: dict[str, dict]) -> list:
    """Data series first (for the legend), then the references; returns the handles."""
    ordered = [s for s in series if not s.reference] + [s for s in series if s.reference]
    return [
        ax.errorbar(s.x, s.y, yerr=s.err, label=s.label, capsize=3, **styles[s.label])
        for s in ordered
    ]


def lines(
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[Series],
    xticks: Sequence[str] | None = None,
    log: bool = False,
    integer_x: bool = False,
    zero_line: bool = False,
) -> Figure:
    """Series against x; with ``xticks`` the x values are positions 0..n-1 named by them.
    ``log``: a log y axis; ``integer_x``: ticks on whole x values only (layers);
    ``zero_line``: a rule at y = 0 (a signed quantity)."""
    return line_panels(title, xlabel, ylabel, [("", series)], xticks, log, integer_x, zero_line)


def line_panels(
    title: str,
    xlabel: str,
    ylabel: str,
    panels: Sequence[tuple[str, Sequence[Series]]],
    xticks: Sequence[str] | None = None,
    log: bool = False,
    integer_x: bool = False,
    zero_line: bool = False,
) -> Figure:
    """``lines`` in panels side by side (each titled, one y axis): comparisons that would
    crowd one axes. Each panel has its own legend."""
    most = max(len(series) for _, series in panels)
    # Legends below when many series would hide the lines, or when there are error bars:
    # matplotlib's "best" place avoids the lines' points but not their bars.
    below = most > LEGEND_INSIDE or any(_has_bars(s) for _, series in panels for s in series)
    fig = _new(
        width=WIDTH if len(panels) == 1 else WIDTH * 0.8 * len(panels),
        height=HEIGHT + (0.2 * math.ceil(most / 2) + 0.3 if below else 0),
    )
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    fig.suptitle(title, fontsize="medium")
    styles = _styles([series for _, series in panels])
    for ax, (subtitle, series) in zip(axes, panels, strict=True):
        handles = _draw(ax, series, styles)
        if xticks is not None:
            ax.set_xticks(range(len(xticks)), xticks, rotation=45 if len(xticks) > 12 else 0)
        elif integer_x:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if zero_line:
            ax.axhline(0, color="black", linewidth=0.8)
        if log:
            from matplotlib.ticker import FuncFormatter, LogLocator

            ax.set_yscale("log")
            # 0.1, 0.2, 0.5, 1, 2, 5, ...: a value between decades can be read off
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_title(subtitle, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        if below:
            ax.legend(
                handles=handles,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.15),
                ncols=2,
                fontsize="small",
            )
        elif len(series) > 1:
            ax.legend(handles=handles, fontsize="small")
    axes[0].set_ylabel(ylabel)
    return fig


def bars(
    title: str, xlabel: str, labels: Sequence[str], values: Sequence[float], references: set
) -> Figure:
    """Horizontal bars, largest on top, with a rule at 0; bars named in ``references`` grey."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    fig = _new(height=max(2.5, 1.0 + 0.4 * len(values)))
    ax = fig.add_subplot()
    ax.barh(
        range(len(order)),
        [values[i] for i in order],
        color=["lightgrey" if labels[i] in references else _data_style(0)["color"] for i in order],
        edgecolor="black",
        linewidth=0.6,
    )
    ax.set_yticks(range(len(order)), [labels[i] for i in order])
    ax.axvline(0, color="black", linewidth=0.8)
    for position, i in enumerate(order):
        ax.annotate(
            f"{values[i]:.1f}",
            (values[i], position),
            xytext=(3 if values[i] >= 0 else -3, 0),
            textcoords="offset points",
            ha="left" if values[i] >= 0 else "right",
            va="center",
            fontsize="small",
        )
    ax.margins(x=0.15)
    _label(ax, title, xlabel, "")
    ax.grid(True, axis="x", alpha=0.3)
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
    scale_rows: int | None = None,
) -> Figure:
    """A matrix in cividis with a colour bar; each cell says its value (``text``, else the
    value to 3 decimals) when the cells are large enough to read. NaN cells are white.
    ``separators``: row indices above which a horizontal rule is drawn (e.g. between the
    sources and the reference rows of a transfer matrix). ``scale_rows``: the colours span
    the first this many rows only (the data, not the references below them, whose cells
    take the end colours and still say their values)."""
    height = max(HEIGHT, 1.2 + 0.45 * len(rows))
    width = max(WIDTH, 2.5 + 0.7 * len(columns))
    fig = _new(width, height)
    ax = fig.add_subplot()
    data = np.ma.masked_invalid(np.asarray(values, dtype=float))
    scaled = data[:scale_rows].compressed()
    low, high = (float(scaled.min()), float(scaled.max())) if scaled.size else (None, None)
    image = ax.imshow(data, cmap=CMAP, aspect="auto", vmin=low, vmax=high)
    slanted = len(columns) > 4 and max(len(c) for c in columns) > 3  # long names would collide
    ax.set_xticks(
        range(len(columns)),
        columns,
        rotation=30 if slanted else 0,
        ha="right" if slanted else "center",
    )
    ax.set_yticks(range(len(rows)), rows)
    fig.colorbar(image, ax=ax, label=colorbar)
    if len(rows) * len(columns) <= 150:
        _annotate(ax, data, text, image.norm)
    for row in separators:
        ax.axhline(row - 0.5, color="white", linewidth=3)
    _label(ax, title, xlabel, ylabel)
    return fig


def _annotate(ax, data: np.ma.MaskedArray, text: Sequence[Sequence[str]] | None, norm) -> None:
    """Each cell's text in black on light cells and white on dark ones (cividis is dark
    at the low end of ``norm``, the colour scale)."""
    for (i, j), value in np.ndenumerate(data.filled(np.nan)):
        label = text[i][j] if text is not None else ("" if math.isnan(value) else f"{value:.3f}")
        if not label:
            continue
        dark = not math.isnan(value) and (norm.vmax <= norm.vmin or norm(value) < 0.5)
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
    # merges close together (0.78, 0.79, 0.80) must not look alike: the axis starts below
    # the first merge rather than at 0
    heights = tree[:, 2]
    spread = max(heights.max() - heights.min(), 0.05 * heights.max(), 1e-3)
    ax.set_ylim(max(0.0, heights.min() - 0.5 * spread), heights.max() + 0.2 * spread)
    _label(ax, title, "language", ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    return fig
