"""`bench --plot DIR`: ttfa.png (the TTFA distribution per variant) and tradeoff.png (false
interruptions per minute against TTFA p50, one point per variant)."""

from __future__ import annotations

from pathlib import Path

from handler.bench.score import VariantScore

SIZE = (7.2, 3.6)
DPI = 100


def plot(scores: list[VariantScore], out_dir: Path) -> list[Path]:
    # the object-oriented API with the Agg canvas: no pyplot global state, no display needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ttfa_png, tradeoff_png = out_dir / "ttfa.png", out_dir / "tradeoff.png"

    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.boxplot([[t * 1000 for t in v.ttfas] or [0.0] for v in scores], whis=(5, 95), showfliers=True)
    ax.set_xticks(range(1, len(scores) + 1), [v.name for v in scores])
    ax.set_ylabel("time to first audio (ms)")
    ax.set_title("TTFA per variant (box: p25-p75, line: p50, whiskers: p5-p95)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(ttfa_png)

    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for v in scores:
        s = v.summary()
        if s["ttfa_p50"] is None or s["false_interruptions_per_min"] is None:
            continue
        x, y = s["ttfa_p50"] * 1000, s["false_interruptions_per_min"]
        ax.scatter([x], [y])
        ax.annotate(v.name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_xlabel("time to first audio p50 (ms)")
    ax.set_ylabel("false interruptions per minute of agent speech")
    ax.set_title("faster answers against false interruptions, one point per variant", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(tradeoff_png)
    return [ttfa_png, tradeoff_png]
