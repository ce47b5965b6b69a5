"""The benchmark report's figures (matplotlib, Agg backend: no display needed).

Each function takes plain data the report has prepared (analysis.py), writes one PNG, and returns its path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from picospec.bench.analysis import Lane  # noqa: E402

DPI = 120
MARKERS = "os^Dvpx*"
LANE_COLOURS = {"edge": "tab:green", "uplink": "tab:blue", "cloud": "tab:red", "downlink": "tab:purple"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def grouped_bars(
    path: Path,
    title: str,
    ylabel: str,
    groups: Sequence[str],
    series: dict[str, Sequence[float | None]],
    log: bool = False,
    reference: float | None = None,
) -> Path:
    """One bar per series in each group (None: no bar); an optional horizontal reference line."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * max(1, len(series)) ** 0.5), 4.0))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        present = [(x, v) for x, v in zip(xs, values) if v is not None]
        if present:
            ax.bar(*zip(*present), width=width, label=name)
    if reference is not None:
        ax.axhline(reference, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


@dataclass(frozen=True)
class Sweep:
    """Simulated curves and measured points of one panel: speedup over ar against x."""

    title: str
    xlabel: str
    xs: Sequence[float]
    curves: dict[str, Sequence[float]]  # variant -> simulated speedup at each x
    points: dict[str, Sequence[tuple[float, float, str]]]  # variant -> measured (x, speedup, profile name)
    log_x: bool = False


def sweeps(path: Path, panels: Sequence[Sequence[Sweep]]) -> Path:
    """A grid of sweep panels (rows of columns); lines simulated, markers measured."""
    rows, cols = len(panels), max(len(row) for row in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(7.0 * cols, 3.8 * rows), squeeze=False)
    for r, row in enumerate(panels):
        for c, sweep in enumerate(row):
            ax = axes[r][c]
            for i, (variant, ys) in enumerate(sweep.curves.items()):
                colour = f"C{i}"
                ax.plot(sweep.xs, ys, color=colour, label=variant)
                for x, y, name in sweep.points.get(variant, ()):
                    ax.plot([x], [y], "o", color=colour)
                    ax.annotate(name, (x, y), fontsize=6, textcoords="offset points", xytext=(3, 3))
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
            ax.set_xscale("log" if sweep.log_x else "linear")
            ax.set_title(sweep.title, fontsize="medium")
            ax.set_xlabel(sweep.xlabel)
            ax.set_ylabel("speedup over ar")
            ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def gantt(path: Path, panels: dict[str, Sequence[Lane]], note: str) -> Path:
    """One Gantt panel per title, sharing the time axis; white space is idle time."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.0 + 1.5 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, lanes) in zip(axes[:, 0], panels.items()):
        for y, lane in enumerate(lanes):
            spans = [(start, max(end - start, 1e-4)) for start, end in lane.intervals]
            ax.broken_barh(spans, (y - 0.35, 0.7), color=LANE_COLOURS.get(lane.name, "grey"))
            if lane.instants:
                ax.plot(lane.instants, [y] * len(lane.instants), "|", color="black", markersize=10)
        ax.set_yticks(range(len(lanes)), [lane.name for lane in lanes])
        ax.set_ylim(-0.6, len(lanes) - 0.4)
        ax.invert_yaxis()
        ax.set_title(title, fontsize="medium", loc="left")
    axes[-1, 0].set_xlabel(f"seconds since the generation started ({note})")
    return _save(fig, path)


def predicted_vs_measured(path: Path, points: dict[str, Sequence[tuple[float, float]]]) -> Path:
    """Simulated against measured tokens/s per variant, with the y = x line and a +-10% band."""
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    values = [v for pairs in points.values() for pair in pairs for v in pair]
    top = 1.1 * max(values, default=1.0)
    ax.plot([0, top], [0, top], color="black", linewidth=0.8)
    ax.fill_between([0, top], [0, 0.9 * top], [0, 1.1 * top], color="grey", alpha=0.2, label="within 10%")
    for i, (variant, pairs) in enumerate(points.items()):
        if pairs:  # distinct markers: cells of different methods often coincide
            ax.plot(*zip(*pairs), MARKERS[i % len(MARKERS)], label=variant, alpha=0.7)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("measured tokens/s")
    ax.set_ylabel("simulated tokens/s")
    ax.set_title("simulator against measurement, per cell")
    ax.legend(fontsize="small")
    return _save(fig, path)
