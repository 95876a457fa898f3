"""The `--plot` timeline: time to first audio per turn, with the false interruptions marked."""

from __future__ import annotations

from handler.logs.accumulate import Report

BLUE = "#1f5ac8"
"""Time to first audio: points and the line joining them."""
RED = "#d21e1e"
"""False interruptions: a vertical line each."""
SIZE = (7.2, 3.6)
"""Inches; at DPI 100 the PNG is 720 x 360 pixels."""
DPI = 100


def plot(report: Report, png_path: str) -> None:
    """A PNG timeline: x = minutes from the first plotted event, y = time to first audio (ms) of
    each turn; false interruptions as red vertical lines, from the same source as the rate."""
    # the object-oriented API with the Agg canvas: no pyplot global state, no display needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = sorted(report.ttfa_points.items)
    falses = sorted(
        (report.false_turn_times if report.turns_with_false_field else report.false_livekit_times).items
    )
    times = [t for t, _ in points] + falses
    t0 = min(times, default=0.0)

    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, t in enumerate(falses):
        ax.axvline((t - t0) / 60, color=RED, linewidth=1.5, label="false interruption" if i == 0 else None)
    if points:
        xs = [(t - t0) / 60 for t, _ in points]
        ys = [v for _, v in points]
        ax.plot(xs, ys, color=BLUE, linewidth=1, alpha=0.5)
        ax.plot(xs, ys, "o", color=BLUE, markersize=5, label="time to first audio")
    ax.set_xlim(0, max(1.0, max(((t - t0) / 60 for t in times), default=0.0)))  # at least a minute
    ax.set_ylim(bottom=0, top=max((v for _, v in points), default=1000.0) * 1.1)
    ax.set_xlabel("minutes")
    ax.set_ylabel("time to first audio (ms)")
    ax.grid(True, color="#e1e1e1")
    if points or falses:
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(png_path, format="png")
