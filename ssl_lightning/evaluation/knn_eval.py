"""Offline k-nearest-neighbour evaluation of a frozen pretrained encoder, with the vote of the online
kNN monitor (:func:`~ssl_lightning.callbacks.knn.knn_votes`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric

from ssl_lightning.callbacks.knn import knn_votes
from ssl_lightning.errors import ConfigurationError
from ssl_lightning.evaluation.encoding import encode_labelled, limited_batches, training_images
from ssl_lightning.evaluation.frozen import load_frozen_encoder

TOP_K = 5


class KNNEval(LightningModule):
    """kNN classification of validation images by the training images, on a frozen encoder's features.

    Run it with ``validate`` (``ssl-lightning validate --config examples/knn_eval.yaml
    --model.init_args.checkpoint=PATH``). At the start of validation the training images are
    encoded into a bank of L2-normalised features: the DataModule's ``train_eval_dataloader()``
    (every ssl_lightning DataModule has one: all training images, validation transform, in order),
    else its ``train_dataloader()``; labels ``-1`` stay out of the bank. The Trainer's
    ``limit_train_batches`` (and so ``fast_dev_run``) limits the bank's batches, as it would the
    training batches; ``limit_val_batches`` limits the queries. Each validation image is
    classified by :func:`~ssl_lightning.callbacks.knn.knn_votes`, the code of the online
    :class:`~ssl_lightning.callbacks.OnlineKNN`, for every ``k``. Logs ``knn/k<k>/top1`` and
    ``knn/k<k>/top5``.

    Every process encodes the whole training set (the validation set is split across processes
    as usual), and the bank lives on the module's device: ``N × (4 D + 8)`` bytes, e.g. 10 GB for
    ImageNet's 1.28 M images with 2048-d features.

    Args:
        checkpoint, method, encoder, pool, stage: the frozen encoder, as for
            :class:`~ssl_lightning.evaluation.LinearEval`.
        k: the numbers of neighbours that vote, one evaluation each (20 and 200 are the usual).
        temperature: τ of the vote weights ``exp(cosine similarity / τ)``.
        in_chans, image_size: evaluation images (linked from the DataModule by the CLI).
    """

    def __init__(
        self,
        checkpoint: str,
        method: str | None = None,
        encoder: str | None = None,
        pool: Literal["avg", "last4"] | None = None,
        stage: int | None = None,
        k: Sequence[int] = (20, 200),
        temperature: float = 0.07,
        in_chans: int | None = None,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if not k or min(k) < 1 or temperature <= 0:
            raise ConfigurationError(
                f"KNNEval needs k values ≥ 1 and temperature > 0, got k={k}, temperature={temperature}"
            )
        self.save_hyperparameters()
        self.encoder, _ = load_frozen_encoder(checkpoint, method, encoder, pool, stage, in_chans, image_size)
        self.ks = sorted(set(k))
        self.temperature = temperature
        self.accuracy = nn.ModuleDict({f"k{k}_top{top}": MeanMetric() for k in self.ks for top in (1, TOP_K)})
        self.bank: Tensor | None = None
        self.bank_labels: Tensor | None = None

    def forward(self, images: Tensor) -> Tensor:
        """L2-normalised float features ``(B, D)`` of ``images``."""
        return F.normalize(self.encoder(images).float(), dim=1)

    def on_validation_epoch_start(self) -> None:
        loader = limited_batches(self.trainer, training_images(self.trainer, "KNNEval"))
        self.bank, self.bank_labels = encode_labelled(self, loader)
        if not len(self.bank_labels):
            raise ConfigurationError("KNNEval found no labelled training image (every label is -1): the bank is empty.")
        rank_zero_info(f"KNNEval: a bank of {len(self.bank_labels)} training features of size {self.bank.shape[1]}")

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        known = labels >= 0
        queries, labels = self(images[known]), labels[known]
        num_classes = int(self.bank_labels.max()) + 1
        for k in self.ks:
            votes = knn_votes(queries, self.bank, self.bank_labels, num_classes, k, self.temperature)
            top = votes.topk(min(TOP_K, num_classes), dim=1).indices
            self.accuracy[f"k{k}_top1"].update((votes.argmax(dim=1) == labels).float())
            self.accuracy[f"k{k}_top{TOP_K}"].update((top == labels.unsqueeze(1)).any(dim=1).float())

    def on_validation_epoch_end(self) -> None:
        for name, metric in self.accuracy.items():
            k, top = name.split("_")
            if metric.update_count:
                self.log(f"knn/{k}/{top}", metric.compute(), sync_dist=True)
            metric.reset()
