"""Training throughput (images/s) of each method, eager and with ``torch.compile``.

Runs the full Lightning training step (forward, loss, backward, optimizer, schedulers, EMA) on
random in-memory images, so data loading is not measured. With ``--compile`` every child module
of the method (backbone, projector, predictor, loss) is compiled in place with
``nn.Module.compile()`` and measured in the same run as eager. When the ``lightly`` package is
installed, lightly's loss replaces ours in the same module for a side-by-side ratio (for I-JEPA,
which has no loss module in lightly, lightly's predictor replaces ours).

    python benchmarks/throughput.py                       # every method, CPU-sized defaults
    python benchmarks/throughput.py --methods vicreg --compile --batch-size 256 --image-size 32
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import time

import torch
from lightly_ijepa import LightlyIJEPAPredictor
from lightning.pytorch import Callback, LightningModule, Trainer
from methods import METHODS
from report import header_lines, markdown_table, publish
from torch import nn
from torch.utils.data import DataLoader, Dataset


class RandomViews(Dataset):
    """``length`` random images as ``(views, label)`` samples, generated once."""

    def __init__(self, length: int, num_views: int, in_chans: int, image_size: int) -> None:
        self.images = torch.randn(length, in_chans, image_size, image_size)
        self.num_views = num_views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        return [image] * self.num_views, 0


class StepTimer(Callback):
    """Wall time of the training batches after ``warmup`` untimed ones."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.end = time.perf_counter()

    @staticmethod
    def _sync(pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)


def images_per_second(module: LightningModule, num_views: int, args: argparse.Namespace) -> float:
    """Images (each in ``num_views`` views) per second over ``args.steps`` timed training steps."""
    timer = StepTimer(args.warmup)
    data = RandomViews(args.batch_size * (args.warmup + args.steps), num_views, args.in_chans, args.image_size)
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, DataLoader(data, batch_size=args.batch_size, drop_last=True))
    return args.batch_size * args.steps / (timer.end - timer.start)


def fresh_module(name: str, args: argparse.Namespace) -> tuple[LightningModule, int]:
    """The method built with the same seed every time, so variants start from the same weights."""
    torch.manual_seed(0)
    case = METHODS[name](args.image_size, args.in_chans, args.backbone)
    return case.module, case.num_views


def compile_children(module: LightningModule) -> LightningModule:
    for child in module.children():
        child.compile()
    return module


class WithoutTerms(nn.Module):
    """A loss returning only its value, shaped like ours: ``(loss, {})``."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.loss(z1, z2), {}


def lightly_variant(name: str, module: LightningModule) -> LightningModule | None:
    """The same module with lightly's loss (I-JEPA: predictor) for ``name``, or None when lightly or a match is absent."""
    if importlib.util.find_spec("lightly") is None:
        return None
    if name == "ijepa":
        module.predictor = LightlyIJEPAPredictor(module.predictor)
        return module
    from lightly import loss as lightly_loss

    lightly_losses = {
        "vicreg": lightly_loss.VICRegLoss,
        "barlow_twins": functools.partial(lightly_loss.BarlowTwinsLoss, lambda_param=0.0051),
        "blockwise_barlow_twins": functools.partial(lightly_loss.BarlowTwinsLoss, lambda_param=0.0051),
    }
    if name not in lightly_losses:
        return None
    # an nn.Module: loss_fn is a registered child module, which a plain function cannot replace
    module.loss_fn = WithoutTerms(lightly_losses[name]())
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--backbone", default=None, help="timm name; default: each method's own")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--precision", default="32-true", help="e.g. bf16-mixed on a GPU")
    parser.add_argument("--accelerator", default="auto")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and args.accelerator != "cpu" else "cpu")

    rows = []
    for name in args.methods:
        module, num_views = fresh_module(name, args)
        eager = images_per_second(module, num_views, args)
        rows.append([name, "ours, eager", f"{eager:,.1f}", "1.00×"])
        if args.compile:
            compiled = images_per_second(compile_children(fresh_module(name, args)[0]), num_views, args)
            rows.append([name, "ours, torch.compile", f"{compiled:,.1f}", f"{compiled / eager:.2f}×"])
        lightly_module = lightly_variant(name, fresh_module(name, args)[0])
        if lightly_module is not None:
            theirs = images_per_second(lightly_module, num_views, args)
            part = "predictor" if name == "ijepa" else "loss"
            rows.append([name, f"lightly's {part}, eager", f"{theirs:,.1f}", f"{theirs / eager:.2f}×"])

    lines = header_lines(
        f"Training throughput ({args.image_size} px, batch {args.batch_size}, {args.precision})",
        device,
        f"backbone: {args.backbone or 'each method default (benchmarks/methods.py)'}",
        f"images/s over {args.steps} steps after {args.warmup} warmup steps; each image in all its views",
        "lightly: " + ("installed" if importlib.util.find_spec("lightly") else "not installed, no comparison"),
    )
    publish(lines + markdown_table(["method", "variant", "images/s", "vs ours eager"], rows))


if __name__ == "__main__":
    main()
