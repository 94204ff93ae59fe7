"""Run a model's linear layers through oneDNN when it trains on the CPU (:mod:`ssl_lightning.nn.onednn_linear`)."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from ssl_lightning.nn.onednn_linear import use_onednn_linears


class OneDNNLinears(Callback):
    """When a fit, validation or test starts on the CPU, turn every plain ``nn.Linear`` of the module
    into an :class:`~ssl_lightning.nn.onednn_linear.OneDNNLinear`: the same weights, the products
    computed as 1×1 convolutions by oneDNN instead of the BLAS. Worth it where the BLAS does not use the
    processor's full vector width (on AMD Zen 5, MKL's float32 GEMM runs at half oneDNN's rate: an
    I-JEPA ViT-Tiny step 1.5× faster on 2 cores, ``benchmarks/RESULTS.md``); ``benchmarks/roofline.py``
    prints both GEMM rates of the machine at hand. Does nothing on other accelerators. In YAML::

        trainer:
          callbacks:
            - class_path: ssl_lightning.callbacks.OneDNNLinears
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type != "cpu":
            return
        count = use_onednn_linears(pl_module)
        rank_zero_info(f"OneDNNLinears: {count} linear layers of {type(pl_module).__name__} run through oneDNN.")
