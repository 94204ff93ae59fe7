"""Does the representation beat the raw pixels? One line at the end of fit that answers it with the
same linear probe on both."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.evaluation.encoding import subset_loader, training_images
from ssl_lightning.evaluation.frozen_probes import encode, linear_probe_accuracy
from ssl_lightning.evaluation.pretrained import representation


class PixelBaselineReport(Callback):
    """At the end of fit, fit one linear probe on the method's frozen features and one on the raw pixels
    of the same images, score both on the validation images, and print (and log) them side by side.

    The probe is :func:`~ssl_lightning.evaluation.frozen_probes.linear_probe_accuracy` (L-BFGS logistic
    regression on standardised features, scikit-learn's default L2) on ``train_images`` training images
    drawn once with ``seed`` (the DataModule's ``train_eval_dataloader()``: validation transform, no
    augmentation); the representation is the one the method is evaluated with
    (:func:`~ssl_lightning.evaluation.pretrained.representation`). Logs ``baseline/linear_features`` and
    ``baseline/linear_pixels``. Skipped under ``fast_dev_run``. Every process computes it (no
    collectives), so under FSDP, which shards the encoder, use ``benchmarks/reproduce.py`` instead.

    Args:
        train_images: training images the two probes are fit on.
        tolerance: L-BFGS gradient tolerance of the fits.
        seed: draw of the training images.
    """

    def __init__(self, train_images: int = 10_000, tolerance: float = 1e-3, seed: int = 0) -> None:
        if train_images < 1:
            raise ConfigurationError(f"train_images must be positive, got {train_images}")
        self.train_images, self.tolerance, self.seed = train_images, tolerance, seed

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        loader = training_images(trainer, type(self).__name__)
        order = torch.randperm(len(loader.dataset), generator=torch.Generator().manual_seed(self.seed))
        train = subset_loader(loader, order[: self.train_images])
        val = trainer.datamodule.val_dataloader()
        encoder = representation(pl_module)
        accuracies = {}
        for name, network in (("features", encoder), ("pixels", None)):
            train_x, train_y = encode(network, train, pl_module.device)
            val_x, val_y = encode(network, val, pl_module.device)
            accuracies[name] = linear_probe_accuracy(train_x, train_y, val_x, val_y, tolerance=self.tolerance)
        online = trainer.callback_metrics.get("probe/val_acc")
        online_note = "" if online is None else f"; online probe {100 * float(online):.1f}%"
        rank_zero_info(
            f"{type(pl_module).__name__} after {trainer.global_step} steps: linear probe on its frozen features "
            f"{100 * accuracies['features']:.1f}% vs {100 * accuracies['pixels']:.1f}% on the raw pixels "
            f"(same probe, {len(train_y)} training images, {len(val_y)} validation images){online_note}. "
            "Full comparison with learning curves: python benchmarks/reproduce.py"
        )
        if trainer.logger is not None:
            metrics = {f"baseline/linear_{name}": value for name, value in accuracies.items()}
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
