"""The learning-curve plot of ``reproduce.py``: linear-probe test accuracy against pretraining time and
against steps, one line per method, with the raw pixels and each method's random-init encoder as references."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt


def plot_curves(scores, path: Path, title: str) -> Path:
    """Write the PNG to ``path``: the curves against pretraining minutes (left) and against optimizer steps
    (right; runs from machines of different speeds compare there). ``scores`` are ``reproduce.Score`` rows
    (any objects with ``method``, ``kind``, ``step``, ``train_seconds`` and ``linear``). A method's ablations
    (``"ijepa [trainer.max_steps=1200]"``) share its colour as thin dashed lines, without reference lines."""
    figure, (by_minutes, by_steps) = plt.subplots(1, 2, figsize=(15, 5), sharey=True)
    draw_curves(by_minutes, scores, lambda s: s.train_seconds / 60)
    draw_curves(by_steps, scores, lambda s: s.step)
    by_minutes.set_xlabel("pretraining time (minutes, each run's own machine)")
    by_steps.set_xlabel("pretraining steps (optimizer updates)")
    by_minutes.set_ylabel("linear probe, test top-1 (%)")
    figure.suptitle(
        title + "\n(dotted: each method's random-init encoder; dash-dot: supervised, same steps; "
        "thin dashed: a method's ablations)",
        fontsize=10,
    )
    by_steps.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)  # beside the curves, never over them
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")  # the legend beside the axes
    plt.close(figure)
    return path


def draw_curves(axes, scores, x_of) -> None:
    """One panel: every method's linear-probe curve over ``x_of(score)``, with the reference lines."""
    methods = list(dict.fromkeys(s.method for s in scores if s.kind in ("pretrained", "random init")))
    family = {method: method.split(" [")[0] for method in methods}  # "ijepa [x=1]" -> "ijepa"
    families = list(dict.fromkeys(family.values()))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for method in methods:
        colour = colours[families.index(family[method]) % len(colours)]
        ablation = method != family[method]
        curve = sorted((s for s in scores if s.method == method and s.kind in ("pretrained", "random init")),
                       key=x_of)  # fmt: skip
        axes.plot(
            [x_of(s) for s in curve],
            [100 * s.linear for s in curve],
            "o--" if ablation else "o-",
            color=colour,
            linewidth=0.8 if ablation else 1.8,
            markersize=3 if ablation else 5,
            label=method,
        )
        if ablation:
            continue
        init = next((s for s in curve if s.kind == "random init"), None)
        if init is not None:
            axes.axhline(100 * init.linear, color=colour, linestyle=":", linewidth=1)
        supervised = next((s for s in scores if s.method == method and s.kind == "supervised"), None)
        if supervised is not None:
            axes.axhline(100 * supervised.linear, color=colour, linestyle="-.", linewidth=1)
    pixels = next((s for s in scores if s.kind == "pixels"), None)
    if pixels is not None:
        axes.axhline(
            100 * pixels.linear, color="black", linestyle="--", label=f"raw pixels ({100 * pixels.linear:.1f}%)"
        )
    axes.grid(alpha=0.3)
