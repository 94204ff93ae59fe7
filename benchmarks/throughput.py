"""Training throughput (images/s) of each method, eager and with ``torch.compile``, and its model
FLOP utilisation (MFU).

Runs the full Lightning training step (forward, loss, backward, optimizer, schedulers, EMA) on
random in-memory images, so data loading is not measured. With ``--compile`` the method is also
built with its own ``compile=True`` option (its hot modules compiled in place, default inductor
backend; see ``SSLMethod.compiled_modules``) and measured in the same run as eager. When the
``lightly`` package is installed, lightly's loss replaces ours in the same module for a
side-by-side ratio (for I-JEPA, which has no loss module in lightly, lightly's predictor replaces
ours).

With ``--mfu`` the model FLOPs of one training step are counted by
``torch.utils.flop_counter.FlopCounterMode`` over the first (untimed, eager) training step: the
matrix multiplications, convolutions and attention of the forward and backward passes of the
networks and the loss, including the forward pass of I-JEPA's target encoder (which has no
backward); elementwise work, the optimizer and the EMA update are not counted. Achieved FLOP/s =
FLOPs per step × steps per second, and MFU = achieved / peak, the peak being the GPU's dense bf16
tensor-core rate (NVIDIA datasheets: ``training_step.PEAK_BF16_FLOPS``) or ``--peak-flops``. On a CPU, or
an unknown GPU, MFU is left out unless ``--peak-flops`` is given.

    python benchmarks/throughput.py                       # every method, CPU-sized defaults
    python benchmarks/throughput.py --methods vicreg --compile --batch-size 256 --image-size 32
    python benchmarks/throughput.py --methods ijepa --backbone vit_base_patch16_224 --image-size 224 \
        --batch-size 128 --precision bf16-mixed --compile --mfu          # MFU of ViT-B/16 I-JEPA
"""

from __future__ import annotations

import argparse
import functools
import importlib.util

import torch
from lightly_ijepa import LightlyIJEPAPredictor
from lightning.pytorch import LightningModule
from methods import METHODS
from report import header_lines, markdown_table, publish
from torch import nn
from training_step import StepFlops, benchmark_device, datasheet_peak, fresh_module, images_per_second


def peak_flops(args: argparse.Namespace, device: torch.device) -> float | None:
    """``--peak-flops``, else the GPU's dense bf16 peak (``training_step.PEAK_BF16_FLOPS``), else None."""
    return args.peak_flops or datasheet_peak(device)


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
    parser.add_argument("--compile", action="store_true", help="also measure the methods with compile=True")
    parser.add_argument("--mfu", action="store_true", help="count model FLOPs per step; report FLOP/s and MFU")
    parser.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for MFU (default: GPU's bf16)")
    parser.add_argument("--precision", default="32-true", help="e.g. bf16-mixed on a GPU")
    parser.add_argument("--accelerator", default="auto")
    args = parser.parse_args()
    if args.mfu and args.warmup < 1:
        parser.error("--mfu counts the FLOPs of the first training step, which must be untimed: use --warmup 1 or more")
    if args.peak_flops is not None and args.peak_flops <= 0:
        parser.error(f"--peak-flops must be a positive number of FLOP/s (e.g. 989e12), got {args.peak_flops}")
    device = benchmark_device(args.accelerator)
    peak = peak_flops(args, device)

    rows, step_flops = [], {}
    for name in args.methods:
        module, num_views = fresh_module(name, args)
        counter = StepFlops()
        eager = images_per_second(module, num_views, args, [counter] if args.mfu else [])
        step_flops[name] = counter.flops
        variants = [("ours, eager", eager)]
        if args.compile:
            compiled = images_per_second(fresh_module(name, args, compile=True)[0], num_views, args)
            variants.append(("ours, torch.compile", compiled))
        lightly_module = lightly_variant(name, fresh_module(name, args)[0])
        if lightly_module is not None:
            part = "predictor" if name == "ijepa" else "loss"
            variants.append((f"lightly's {part}, eager", images_per_second(lightly_module, num_views, args)))
        for variant, speed in variants:
            row = [name, variant, f"{speed:,.1f}", f"{speed / eager:.2f}×"]
            if args.mfu:
                achieved = step_flops[name] * speed / args.batch_size
                row += [f"{achieved / 1e12:,.4g}"] + ([f"{achieved / peak:.1%}"] if peak else [])
            rows.append(row)

    notes = [
        f"backbone: {args.backbone or 'each method default (benchmarks/methods.py)'}",
        f"images/s over {args.steps} steps after {args.warmup} warmup steps; each image in all its views",
        "lightly: " + ("installed" if importlib.util.find_spec("lightly") else "not installed, no comparison"),
    ]
    columns = ["method", "variant", "images/s", "vs ours eager"]
    if args.mfu:
        counted = ", ".join(f"{name} {flops / 1e9:,.4g}" for name, flops in step_flops.items())
        notes.append(
            f"model GFLOP per training step (FlopCounterMode, forward + backward, EMA and optimizer not counted; "
            f"every row of a method uses it): {counted}"
        )
        notes.append(
            f"MFU against a peak of {peak / 1e12:,.4g} TFLOP/s"
            if peak
            else "MFU left out: no peak FLOP/s (--peak-flops)"
        )
        columns += ["TFLOP/s"] + (["MFU"] if peak else [])
    lines = header_lines(
        f"Training throughput ({args.image_size} px, batch {args.batch_size}, {args.precision})", device, *notes
    )
    publish(lines + markdown_table(columns, rows))


if __name__ == "__main__":
    main()
