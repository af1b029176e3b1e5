"""PNG plots of benchmark results (matplotlib, headless)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from phalanx.bench.results import LATENCY_KEYS
from phalanx.bench.setup import ensure_plotting

#: One colour per system, the same in every plot.
COLOURS = {"phalanx": "#1f77b4", "pysyncobj": "#ff7f0e", "etcd": "#2ca02c"}


def _pyplot() -> Any:
    ensure_plotting()
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _ticker() -> Any:
    return importlib.import_module("matplotlib.ticker")


def _in_flight(levels: list[dict[str, Any]]) -> list[int]:
    return [int(level["in_flight"]) for level in levels]


def _legend_below(axes: Any, entries: int) -> None:
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1 if entries > 2 else 2,
                fontsize=8, frameon=False)  # fmt: skip


def _colour(name: str) -> str:
    return COLOURS.get(name.split(" ", 1)[0], "#7f7f7f")


def throughput_plot(path: Path, series: dict[str, list[dict[str, Any]]], title: str) -> Path:
    """Committed puts/s against requests in flight, one line per system."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 6), dpi=110)
    for name, levels in series.items():
        xs = [level["in_flight"] for level in levels]
        ys = [level["ops_per_second"] for level in levels]
        axes.plot(xs, ys, marker="o", label=name, color=_colour(name))
        for x, y in zip(xs, ys, strict=True):
            axes.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6),
                          ha="center", fontsize=7)  # fmt: skip
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted({x for levels in series.values() for x in _in_flight(levels)}))
    axes.xaxis.set_major_formatter(_ticker().FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axes.xaxis.set_minor_locator(_ticker().NullLocator())
    axes.yaxis.set_major_formatter(_ticker().FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axes.set_xlabel("requests in flight (all clients)")
    axes.set_ylabel("committed puts / s")
    axes.set_ylim(bottom=0)
    axes.grid(True, which="both", alpha=0.3)
    axes.set_title(title)
    _legend_below(axes, len(series))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def latency_plot(path: Path, series: dict[str, dict[str, float]], title: str) -> Path:
    """Latency percentiles (ms, log scale), one group of bars per percentile."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 6), dpi=110)
    names = list(series)
    width = 0.8 / max(1, len(names))
    for offset, name in enumerate(names):
        values = [series[name][key] / 1000 for key in LATENCY_KEYS]
        xs = [i + (offset - (len(names) - 1) / 2) * width for i in range(len(LATENCY_KEYS))]
        bars = axes.bar(xs, values, width, label=name, color=_colour(name))
        axes.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
    axes.set_xticks(range(len(LATENCY_KEYS)), list(LATENCY_KEYS))
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(_ticker().FuncFormatter(lambda v, _: f"{v:g}"))
    axes.set_ylabel("latency (ms, log scale)")
    axes.set_xlabel("percentile")
    axes.grid(True, axis="y", which="both", alpha=0.3)
    axes.set_title(title)
    _legend_below(axes, len(series))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def series_plot(
    path: Path, series: dict[str, tuple[list[float], list[float]]], title: str,
    xlabel: str, ylabel: str, *, marker: str = "", integer_x: bool = False,
) -> Path:  # fmt: skip
    """Lines of (x, y) points, e.g. RSS over time per node or failover per kill."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 6), dpi=110)
    for name, (xs, ys) in series.items():
        axes.plot(xs, ys, label=name, marker=marker or None)
    if integer_x:
        axes.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    _legend_below(axes, len(series))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
