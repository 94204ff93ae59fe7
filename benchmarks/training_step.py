"""Measuring one method's training step, shared by ``throughput.py``, ``roofline.py`` and ``gpu.py``.

The full Lightning training step (forward, loss, backward, optimizer, schedulers, EMA) runs on
random images held in memory, so no data loading is measured: :func:`images_per_second` times it,
:class:`StepFlops` counts its model FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` and
:func:`matmul_flops_per_second` measures the machine's dense matmul rate, the roofline the
achieved FLOP/s are compared with.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from methods import METHODS
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from ssl_lightning.nn.onednn_linear import linear_as_convolution

# Dense bf16 tensor-core peak FLOP/s by a substring of torch.cuda.get_device_name(), first match
# wins (NVIDIA H100/H200 and A100 datasheets; the "with sparsity" figures are twice these).
PEAK_BF16_FLOPS = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12)]


class RandomViews(Dataset):
    """``length`` samples ``(views, label)`` of random images, generated once on ``device``.
    ``distinct`` images at most are stored (sample ``i`` is image ``i % distinct``), so a
    benchmark holding its images on a GPU holds one batch of them, not the whole run's."""

    def __init__(
        self,
        length: int,
        num_views: int,
        in_chans: int,
        image_size: int,
        device: torch.device | str = "cpu",
        distinct: int | None = None,
    ) -> None:
        stored = length if distinct is None else min(length, distinct)
        self.images = torch.randn(stored, in_chans, image_size, image_size, device=device)
        self.length = length
        self.num_views = num_views

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        image = self.images[index % len(self.images)]
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
        """Wait for the GPU: the timer's own sync, not the step's, so hidden from CUDA's sync debug
        mode (``gpu.py --sync-debug`` counts the step's)."""
        if pl_module.device.type == "cuda":
            mode = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize(pl_module.device)
            torch.cuda.set_sync_debug_mode(mode)


class StepFlops(Callback):
    """FLOPs of the first training step (forward, loss and backward), by ``FlopCounterMode``."""

    def __init__(self) -> None:
        self.counter: FlopCounterMode | None = None
        self.flops: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.counter = FlopCounterMode(display=False)
            self.counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.counter.__exit__(None, None, None)
            self.flops = self.counter.get_total_flops()


def benchmark_device(accelerator: str) -> torch.device:
    """The device a Trainer with ``accelerator`` (``"auto"``, ``"cpu"``, ``"gpu"``, ...) trains on."""
    return torch.device("cuda" if torch.cuda.is_available() and accelerator != "cpu" else "cpu")


def images_per_second(
    module: LightningModule,
    num_views: int,
    args: argparse.Namespace,
    callbacks: Sequence[Callback] = (),
    strategy="auto",
    on_device: bool = False,
) -> float:
    """Images (each in ``num_views`` views) per second over ``args.steps`` timed training steps.

    ``args`` holds ``batch_size``, ``warmup``, ``steps``, ``in_chans``, ``image_size``,
    ``accelerator`` and ``precision``. ``on_device``: the images are generated on the training
    device (one batch of them, repeated), so no host-to-device copy is timed."""
    timer = StepTimer(args.warmup)
    length = args.batch_size * (args.warmup + args.steps)
    if on_device:
        device = benchmark_device(args.accelerator)
        data = RandomViews(length, num_views, args.in_chans, args.image_size, device, distinct=args.batch_size)
    else:
        data = RandomViews(length, num_views, args.in_chans, args.image_size)
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=1,
        strategy=strategy,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, timer],
    )
    trainer.fit(module, DataLoader(data, batch_size=args.batch_size, drop_last=True))
    return args.batch_size * args.steps / (timer.end - timer.start)


def fresh_module(name: str, args: argparse.Namespace, **method_options) -> tuple[LightningModule, int]:
    """The method built with the same seed every time, so variants start from the same weights."""
    torch.manual_seed(0)
    case = METHODS[name](args.image_size, args.in_chans, args.backbone, **method_options)
    return case.module, case.num_views


def use_fused_adamw(module: LightningModule) -> LightningModule:
    """Give ``module`` (a method whose optimizer is ``torch.optim.AdamW`` or a partial of it, as
    every builder of ``methods.py`` makes) the fused AdamW kernels: the same update with the same
    hyper-parameters, one kernel for all parameters (on CPUs since torch 2.4)."""
    optimizer = module.optimizer
    if getattr(optimizer, "func", optimizer) is torch.optim.AdamW:
        module.optimizer = functools.partial(optimizer, fused=True)
    return module


def datasheet_peak(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak from :data:`PEAK_BF16_FLOPS`, or None (a CPU, an unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matrix products of a Trainer ``precision`` run in (``bf16-mixed``: bfloat16)."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    return torch.float16 if precision.startswith("16") else torch.float32


def matmul_flops_per_second(
    device: torch.device,
    dtype: torch.dtype,
    size: int,
    repeats: int = 5,
    matmuls_per_repeat: int = 1,
    kernel: str = "blas",
) -> float:
    """FLOP/s of ``size`` × ``size`` matrix products in ``dtype`` on ``device``: the best of
    ``repeats`` timed runs of ``matmuls_per_repeat`` products each (2·size³ FLOPs a product),
    after one untimed run. ``kernel``: ``"blas"``, ``torch.mm`` (on a CPU, the BLAS torch was built
    with); ``"onednn"``, the same product as a 1×1 convolution, which a CPU runs in oneDNN
    (:func:`~ssl_lightning.nn.onednn_linear.linear_as_convolution`)."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty_like(a)

    def product() -> None:
        if kernel == "onednn":
            linear_as_convolution(a, b, None)
        else:
            torch.mm(a, b, out=out)

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(matmuls_per_repeat):
            product()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    run()
    best = min(run() for _ in range(repeats))
    return 2 * size**3 * matmuls_per_repeat / best
