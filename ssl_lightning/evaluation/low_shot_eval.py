"""Low-shot evaluation of a frozen pretrained encoder: the "1% of ImageNet's labels" protocol of
I-JEPA (Assran et al., CVPR 2023, Table 2) and StoP (Bar et al., ICML 2024), an L2-regularised
logistic regression fitted on a class-balanced labelled subset of the training set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.evaluation.encoding import encode_labelled, subset_loader, training_images
from ssl_lightning.evaluation.frozen import load_frozen_encoder
from ssl_lightning.evaluation.logistic import LogisticFit, fit_logistic_regression
from ssl_lightning.evaluation.subsets import check_subset_size, class_balanced_subset, dataset_labels

TOP_K = 5
Standardize = Literal["train", "per_split", "none"]


def mean_and_std(
    features: Tensor, sum_over_processes: Callable[[Tensor], Tensor] = lambda t: t
) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and standard deviation (with Bessel's correction, as ``torch.std``) of
    ``(N, D)`` features, in float64, over the rows of every process: ``sum_over_processes`` sums the
    per-process moments (the identity for one process). A constant dimension gets std 1 (it
    standardises to 0 instead of NaN)."""
    x = features.double()
    moments = torch.stack([x.new_full(x.shape[1:], len(x)), x.sum(0), x.square().sum(0)])
    count, total, squares = sum_over_processes(moments)
    mean = total / count
    variance = (squares - count * mean.square()).clamp_min(0) / (count - 1)
    std = variance.sqrt()
    return mean, torch.where(std > 0, std, torch.ones_like(std))


class LowShotEval(LightningModule):
    """Logistic regression on a frozen encoder's features of a few labelled training images, scored
    on the validation images: the low-shot protocol of I-JEPA and StoP.

    Run it with ``validate`` (``ssl-lightning validate --config examples/low_shot_eval.yaml
    --model.init_args.checkpoint=PATH``). At the start of validation:

    1. a class-balanced labelled subset of the training set is drawn
       (:func:`~ssl_lightning.evaluation.subsets.class_balanced_subset`: ``label_fraction`` of the
       labelled images spread evenly over the classes, or ``samples_per_class`` each; seeded by
       ``subset_seed``) and only those images are encoded, with the validation transform (the
       DataModule's ``train_eval_dataloader()``, as :class:`~ssl_lightning.evaluation.KNNEval`);
    2. the features (JEPA methods: the target encoder's tokens averaged, as the official
       ``logistic_eval.py``) are standardised per dimension (centred, divided by their std);
    3. :func:`~ssl_lightning.evaluation.logistic.fit_logistic_regression` fits
       ``(1/N) Σ CE(W x_i, y_i) + (λ/2) ‖W‖²`` with ``λ = l2 / N`` (``N`` labelled images), no
       intercept, as the official ``cyanure.MultiClassifier(loss="multiclass-logistic",
       penalty="l2", fit_intercept=False)`` with ``lambd = 0.0025 / N``.

    Validation images are encoded in ``validation_step`` and classified at the end of the epoch.
    Logs ``lowshot/top1``, ``lowshot/top5``, ``lowshot/train_top1`` (accuracy on the labelled
    subset) and ``lowshot/num_labelled``.

    Differences from the official code, on purpose: validation features are standardised with the
    labelled subset's statistics (``standardize="train"``), where the official code uses the
    validation set's own (``standardize="per_split"`` reproduces it); the official code then
    rotates both feature sets by the eigenvectors of the training features' Gram matrix (a PCA
    keeping every component), which is skipped here: for an orthogonal ``Q`` and an intercept-free
    L2-regularised fit, the solution on ``x Q`` is ``W Q`` and the scores ``x Q (W Q)ᵀ = x Wᵀ``
    are unchanged. The official code stops cyanure at a relative duality gap of 1e-3 (at most 100
    epochs); L-BFGS here runs to a gradient tolerance (``tolerance``), closer to the exact optimum
    (1% of Fashion-MNIST, 600 × 128 features of a quickstart VICReg: 1e-7 takes ~900 iterations,
    1.5 s on a CPU, and ends 5e-8 above the minimum in relative terms).
    ImageNet papers use the fixed 1% file list of SimCLR (12 811 images, 12 or 13 per class); a
    seeded draw has the same shape but other images.

    Under DDP every process draws the same subset (same seed), encodes all of it and fits the same
    model; the weights of process 0 are broadcast, so that every process classifies its share of
    the validation set with the same classifier. ``standardize="per_split"`` takes the statistics
    of the whole validation set (moments summed over the processes; the distributed sampler's
    padding duplicates count twice, as they do in the accuracy).

    Args:
        checkpoint, method, encoder, pool, stage: the frozen encoder, as for
            :class:`~ssl_lightning.evaluation.LinearEval` (JEPA: target encoder, tokens averaged).
        label_fraction: fraction of the labelled training images in the subset (0.01 = 1%).
        samples_per_class: images per class instead (e.g. 1, 2, 5 for I-JEPA's few-shot lists);
            when given, ``label_fraction`` is ignored.
        subset_seed: seed of the subset draw.
        l2: the regularisation, divided by the number of labelled images (``λ = l2 / N``; 0.0025 in
            I-JEPA/StoP).
        standardize: statistics that standardise the validation features: ``"train"`` (the
            labelled subset's), ``"per_split"`` (the validation set's own, as the official code),
            or ``"none"`` (raw features).
        tolerance, max_iterations: stopping rule of L-BFGS (max-norm of the gradient, iterations).
        double_precision: solve in float64 (else float32).
        in_chans, image_size: evaluation images (linked from the DataModule by the CLI).
    """

    def __init__(
        self,
        checkpoint: str,
        method: str | None = None,
        encoder: str | None = None,
        pool: Literal["avg", "last4"] | None = None,
        stage: int | None = None,
        label_fraction: float | None = 0.01,
        samples_per_class: int | None = None,
        subset_seed: int = 0,
        l2: float = 0.0025,
        standardize: Standardize = "train",
        tolerance: float = 1e-7,
        max_iterations: int = 5000,
        double_precision: bool = True,
        in_chans: int | None = None,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        self.label_fraction = None if samples_per_class is not None else label_fraction
        check_subset_size(self.label_fraction, samples_per_class)
        if standardize not in ("train", "per_split", "none"):
            raise ConfigurationError(f"standardize must be 'train', 'per_split' or 'none', got {standardize!r}.")
        if l2 <= 0:
            raise ConfigurationError(f"LowShotEval needs l2 > 0 (0.0025 in I-JEPA/StoP), got l2={l2}.")
        self.save_hyperparameters()
        self.encoder, _ = load_frozen_encoder(checkpoint, method, encoder, pool, stage, in_chans, image_size)
        self.dtype_of_fit = torch.float64 if double_precision else torch.float32
        self.accuracy = nn.ModuleDict({f"top{top}": MeanMetric() for top in (1, TOP_K)})
        self.classifier: LogisticFit | None = None
        self.train_statistics: tuple[Tensor, Tensor] | None = None
        self.train_top1 = 0.0
        self.num_labelled = 0
        self.val_features: list[Tensor] = []
        self.val_labels: list[Tensor] = []

    def forward(self, images: Tensor) -> Tensor:
        """Float features ``(B, D)`` of ``images``."""
        return self.encoder(images).float()

    def standardized(self, features: Tensor, statistics: tuple[Tensor, Tensor] | None) -> Tensor:
        features = features.to(self.dtype_of_fit)
        if statistics is None:
            return features
        mean, std = statistics
        return (features - mean.to(features)) / std.to(features)

    def on_validation_epoch_start(self) -> None:
        hparams = self.hparams
        loader = training_images(self.trainer, "LowShotEval")
        indices = class_balanced_subset(
            dataset_labels(loader.dataset), self.label_fraction, hparams.samples_per_class, hparams.subset_seed
        )
        features, labels = encode_labelled(self, subset_loader(loader, indices))
        self.train_statistics = None if hparams.standardize == "none" else mean_and_std(features)
        features = self.standardized(features, self.train_statistics)
        num_classes = getattr(self.trainer.datamodule, "num_classes", None) or int(labels.max()) + 1
        fit = fit_logistic_regression(
            features,
            labels,
            num_classes,
            l2=hparams.l2 / len(labels),
            tolerance=hparams.tolerance,
            max_iterations=hparams.max_iterations,
            dtype=self.dtype_of_fit,
        )
        self.classifier = self.trainer.strategy.broadcast(fit.to("cpu"), src=0).to(self.device)
        self.train_top1 = float((self.classifier.logits(features).argmax(dim=1) == labels).double().mean())
        self.num_labelled = len(labels)
        self.val_features, self.val_labels = [], []
        rank_zero_info(
            f"LowShotEval: logistic regression on {len(labels)} labelled training images ({features.shape[1]}-d "
            f"features, {num_classes} classes): {fit.iterations} L-BFGS iterations, max gradient "
            f"{fit.max_gradient:.2g}, training top-1 {self.train_top1:.4f}"
        )

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        known = labels >= 0
        self.val_features.append(self(images[known]))
        self.val_labels.append(labels[known])

    def on_validation_epoch_end(self) -> None:
        dimension = self.classifier.weight.shape[1]
        features = torch.cat([torch.empty(0, dimension, device=self.device), *self.val_features])
        labels = torch.cat([torch.empty(0, dtype=torch.long, device=self.device), *self.val_labels])
        statistics = self.train_statistics
        if self.hparams.standardize == "per_split":
            statistics = mean_and_std(features, lambda moments: self.trainer.strategy.reduce(moments, reduce_op="sum"))
        logits = self.classifier.logits(self.standardized(features, statistics))
        top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
        if len(labels):
            self.accuracy["top1"].update((top[:, 0] == labels).float())
            self.accuracy[f"top{TOP_K}"].update((top == labels.unsqueeze(1)).any(dim=1).float())
        for name, metric in self.accuracy.items():
            self.log(f"lowshot/{name}", metric.compute(), sync_dist=True)
            metric.reset()
        self.log("lowshot/train_top1", self.train_top1)
        self.log("lowshot/num_labelled", float(self.num_labelled))
        self.val_features, self.val_labels = [], []
