"""Offline linear evaluation next to the online monitors of the same pretraining run: reads both runs'
TensorBoard logs and appends the table to RESULTS.md.

    ssl-lightning fit --config examples/quickstart.yaml
    ssl-lightning fit --config examples/linear_eval.yaml \\
        --model.init_args.checkpoint=logs/quickstart/version_0/checkpoints/epoch=0-step=200.ckpt
    python benchmarks/offline_eval.py --pretraining logs/quickstart/version_0 --linear-eval logs/linear_eval/version_0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from report import header_lines, markdown_table, publish
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# (log directory argument, TensorBoard tag, what it measures)
READINGS = [
    ("pretraining", "probe/val_acc", "online linear probe during pretraining (OnlineLinearProbe)"),
    ("pretraining", "knn/val_acc", "online kNN during pretraining (OnlineKNN, k=20)"),
    ("linear_eval", "val/top1", "offline linear evaluation (LinearEval), top-1"),
    ("linear_eval", "val/top5", "offline linear evaluation (LinearEval), top-5"),
]


def last_values(logdir: Path) -> tuple[dict[str, float], float]:
    """The last value of every scalar a run logged, and the run's wall time in minutes."""
    events = EventAccumulator(str(logdir))
    events.Reload()
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    times = [point.wall_time for points in scalars.values() for point in points]
    return {tag: points[-1].value for tag, points in scalars.items()}, (max(times) - min(times)) / 60


def linear_eval_recipe(logdir: Path) -> str:
    """Optimizer, learning rate, crops and steps of a linear-evaluation run, from its saved config."""
    config = yaml.safe_load((logdir / "config.yaml").read_text())
    optimizer = config["model"]["init_args"]["optimizer"]
    views = config["data"]["init_args"].get("views") or {}
    crop = (views.get("init_args") or {}).get("crop_scale") or "default"
    trainer = config["trainer"]
    return (
        f"{optimizer['class_path'].rsplit('.', 1)[-1]} lr {optimizer['init_args'].get('lr')}, "
        f"crop scale {crop}, {trainer['max_epochs']} epoch(s) × limit_train_batches {trainer.get('limit_train_batches')}, "
        f"batch {config['data']['init_args']['batch_size']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretraining", type=Path, required=True, help="log directory of the pretraining run")
    parser.add_argument("--linear-eval", type=Path, required=True, help="log directory of the linear evaluation")
    parser.add_argument("--note", action="append", default=[], help="a line to add to the section (repeatable)")
    args = parser.parse_args()
    logdirs = {"pretraining": args.pretraining, "linear_eval": args.linear_eval}
    runs = {name: last_values(logdir) for name, logdir in logdirs.items()}
    rows = [[what, tag, f"{100 * runs[run][0][tag]:.2f}"] for run, tag, what in READINGS if tag in runs[run][0]]
    recipe = linear_eval_recipe(args.linear_eval)
    notes = [
        f"pretraining: {args.pretraining} ({runs['pretraining'][1]:.0f} min wall)",
        f"linear evaluation: {args.linear_eval} ({runs['linear_eval'][1]:.0f} min wall): {recipe}",
        "accuracies on the full test set (Fashion-MNIST: 10k images), %",
        *args.note,
    ]
    title = "Offline linear evaluation vs online monitors (benchmarks/offline_eval.py)"
    publish(
        header_lines(title, torch.device("cpu"), *notes) + markdown_table(["evaluation", "tag", "accuracy %"], rows)
    )


if __name__ == "__main__":
    main()
