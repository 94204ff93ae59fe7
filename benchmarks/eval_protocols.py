"""Every method's Fashion-MNIST quickstart checkpoint through its papers' evaluation protocols on the
CPU (the presets of examples/protocols/ with the Fashion-MNIST CPU overlay, and the low-shot protocol),
with a table appended to RESULTS.md.

    python benchmarks/eval_protocols.py                        # pretrains the missing quickstarts first
    python benchmarks/eval_protocols.py --quickstarts logs/bench_quickstarts --train-batches 10

The linear protocols keep their head, optimiser, schedule, epochs and augmentation and see
``--train-batches`` batches of 256 per epoch; validation runs on the whole test set (10k images) every
``--val-every`` epochs (VISSL: every 4 of its 28), and the best validation is reported, as the papers do.
The low-shot protocol labels 1% of the training set (600 images, 60 per class).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
from report import header_lines, markdown_table, publish

from ssl_lightning.cli import run

ROOT = Path(__file__).resolve().parents[1]
CPU_OVERLAY = "examples/protocols/overlays/fashion_mnist_cpu.yaml"
# method: (quickstart config, its image size, its papers' linear protocol, validation every N epochs)
METHODS = {
    "VICReg": ("quickstart", None, "linear_vicreg_imagenet", 10),
    "BarlowTwins": ("barlow_quickstart", None, "linear_barlow_imagenet", 10),
    "BlockwiseBarlowTwins": ("blockwise_quickstart", None, "linear_blockwise_imagenet", 10),
    "IJEPA": ("ijepa_quickstart", 32, "linear_vissl_imagenet", 4),
    "FlexPredict": ("flexpredict_quickstart", 32, "linear_vissl_imagenet", 4),
}


def quickstart_checkpoint(quickstarts: Path, name: str) -> Path:
    """The last checkpoint of ``name``'s quickstart run, pretraining it first when there is none."""
    found = sorted((quickstarts / name).glob("version_*/checkpoints/*.ckpt"))
    if not found:
        command = ["ssl-lightning", "fit", "--config", f"examples/{name}.yaml"]
        command += [f"--trainer.logger.init_args.save_dir={quickstarts}", "--trainer.enable_progress_bar=false"]
        subprocess.run(command, cwd=ROOT, check=True)
        found = sorted((quickstarts / name).glob("version_*/checkpoints/*.ckpt"))
    return found[-1]


def display(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def image_size_arguments(image_size: int | None) -> list[str]:
    return [] if image_size is None else [f"--data.init_args.image_size={image_size}"]


def linear_protocol(checkpoint: Path, preset: str, image_size, val_every: int, train_batches: int, logs: Path):
    """The preset's best validation accuracy of every head, and the run's minutes."""
    arguments = ["fit", "--config", f"examples/protocols/{preset}.yaml", "--config", CPU_OVERLAY]
    arguments += [f"--model.init_args.checkpoint={checkpoint}", *image_size_arguments(image_size)]
    arguments += [f"--trainer.limit_train_batches={train_batches}", "--trainer.limit_val_batches=1.0"]
    arguments += [f"--trainer.check_val_every_n_epoch={val_every}", "--trainer.enable_progress_bar=false"]
    arguments += [f"--trainer.logger.init_args.save_dir={logs}"]
    start = time.perf_counter()
    metrics = run(arguments).trainer.callback_metrics
    best = {name.removeprefix("val/"): float(value) for name, value in metrics.items() if name.endswith("top1_best")}
    return best, (time.perf_counter() - start) / 60


def low_shot_protocol(checkpoint: Path, image_size, logs: Path) -> tuple[dict[str, float], float]:
    arguments = ["validate", "--config", "examples/low_shot_eval.yaml", f"--model.init_args.checkpoint={checkpoint}"]
    arguments += [*image_size_arguments(image_size), "--trainer.enable_progress_bar=false"]
    arguments += [f"--trainer.default_root_dir={logs / 'low_shot'}"]  # where the CLI saves its config.yaml
    start = time.perf_counter()
    metrics = run(arguments).trainer.callback_metrics
    return {"lowshot/top1": float(metrics["lowshot/top1"])}, (time.perf_counter() - start) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quickstarts", type=Path, default=ROOT / "logs" / "bench_quickstarts")
    parser.add_argument("--logs", type=Path, default=ROOT / "logs" / "bench_protocols")
    parser.add_argument("--train-batches", type=int, default=10, help="training batches of 256 per epoch")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--note", action="append", default=[], help="a line to add to the section (repeatable)")
    args = parser.parse_args()
    rows = []
    for method in args.methods:
        quickstart, image_size, preset, val_every = METHODS[method]
        checkpoint = quickstart_checkpoint(args.quickstarts, quickstart)
        evaluations = [
            (preset, linear_protocol(checkpoint, preset, image_size, val_every, args.train_batches, args.logs)),
            ("low-shot 1%", low_shot_protocol(checkpoint, image_size, args.logs)),
        ]
        for protocol, (accuracies, minutes) in evaluations:
            for head, accuracy in sorted(accuracies.items()):
                row = [method, checkpoint.name, protocol, head, f"{100 * accuracy:.2f}", f"{minutes:.1f}"]
                rows.append(row)
                print(" | ".join(row), flush=True)
    notes = [
        (
            "checkpoints: the quickstarts (`examples/*quickstart.yaml`, batch 64 on Fashion-MNIST, their steps in "
            f"the checkpoint's name) in {display(args.quickstarts)}"
        ),
        (
            f"linear protocols: the presets of examples/protocols/ + {CPU_OVERLAY}, {args.train_batches} training "
            "batches of 256 per epoch, all their epochs; validation on the 10k test images every 10 epochs "
            "(VISSL: 4); best validation reported"
        ),
        "low-shot: examples/low_shot_eval.yaml (600 labelled training images, L-BFGS logistic regression)",
        "accuracies on the Fashion-MNIST test set (10k images), %; raw pixels with logistic regression: 83.3% (DATA.md)",
        f"command: python benchmarks/eval_protocols.py {' '.join(sys.argv[1:])}".rstrip(),
        *args.note,
    ]
    title = "Evaluation protocols on the quickstart checkpoints (benchmarks/eval_protocols.py)"
    columns = ["method", "checkpoint", "protocol", "head", "top-1 %", "minutes"]
    publish(header_lines(title, torch.device("cpu"), *notes) + markdown_table(columns, rows))


if __name__ == "__main__":
    main()
