"""Reading what a method hands its callbacks: the step's ``outputs`` dict (``{"features": ...}``, a
tensor or a dict of named tensors) and the batch's labels, plus the callbacks' metric names and a
warning when validation features are not finite."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from ssl_lightning.distributed import is_distributed
from ssl_lightning.errors import ConfigurationError, ConfigurationTypeError

SINGLE_FEATURE_KEY = "features"


def features_by_name(features: Tensor | dict[str, Tensor], wanted: list[str] | None) -> dict[str, Tensor]:
    """Name a method's ``features`` output: a tensor becomes ``{"features": t}``; a dict is kept,
    restricted to ``wanted`` when given. Raises when a wanted key is missing."""
    if isinstance(features, Tensor):
        return {SINGLE_FEATURE_KEY: features}
    if not isinstance(features, dict):
        raise ConfigurationTypeError(
            f"The method's `features` output must be a tensor or a dict of tensors, got {type(features).__name__}"
        )
    if wanted is None:
        return dict(features)
    missing = [key for key in wanted if key not in features]
    if missing:
        raise KeyError(
            f"Feature keys {missing} are not in the method's features {sorted(features)}; fix `feature_keys`."
        )
    return {key: features[key] for key in wanted}


def labels_of(batch: Any, callback: str) -> Tensor:
    """The class labels of a ``(inputs, labels)`` batch, with a clear error for unlabelled batches."""
    if isinstance(batch, (list, tuple)) and len(batch) == 2 and isinstance(batch[1], Tensor) and batch[1].ndim == 1:
        return batch[1]
    raise ConfigurationError(
        f"{callback} needs batches of the form (images_or_views, labels) with a 1-D label tensor; got {type(batch).__name__}. "
        "Give the DataModule's samples a label (use -1 for unlabelled images, which the callbacks ignore)."
    )


def outputs_features(outputs: Any, callback: str, key: str = "features") -> Tensor | dict[str, Tensor]:
    """``outputs[key]`` of a training/validation step, with a clear error when the step did not return it."""
    if not isinstance(outputs, dict) or key not in outputs:
        raise ConfigurationError(
            f"{callback} reads the `{key}` the method returns from training_step/validation_step, "
            f'but the step returned no {{"{key}": ...}} dict.'
        )
    return outputs[key]


def metric_name(prefix: str, key: str, metric: str | None = None) -> str:
    """``prefix/metric`` for a single feature tensor, ``prefix/key/metric`` for an entry of dict features
    (``metric`` may be left out: ``rankme`` / ``rankme/block1``)."""
    parts = [prefix] if key == SINGLE_FEATURE_KEY else [prefix, key]
    return "/".join(parts if metric is None else [*parts, metric])


class NonFiniteFeatureCheck:
    """Warn once per run when the validation features a callback scores hold NaN or inf (NaN images,
    or an encoder that overflows): the accuracy computed from them looks like any other, since a NaN
    logit or similarity still yields a class.

    :meth:`update` counts the samples with a non-finite feature on the device, so there is no host
    sync per batch; :meth:`check` reads the count once per validation epoch, summed over ranks (so
    every rank must call it), and stops counting after its warning.
    """

    def __init__(self, callback: str) -> None:
        self.callback = callback
        self.non_finite: Tensor | None = None  # samples of this epoch with a NaN or inf feature
        self.samples = 0
        self.warned = False

    def update(self, features: dict[str, Tensor]) -> None:
        """Count the samples (rows) of ``features`` with a non-finite value in any entry."""
        if self.warned or not features:
            return
        finite = torch.stack([f.flatten(1).isfinite().all(dim=1) for f in features.values()]).all(dim=0)
        count = finite.logical_not().sum()
        self.non_finite = count if self.non_finite is None else self.non_finite + count
        self.samples += len(finite)

    def check(self, device: torch.device) -> None:
        """At the end of a validation epoch: warn if any of its samples had non-finite features, and start over."""
        if self.warned:
            return
        counts = torch.tensor([0, self.samples], device=device)
        if self.non_finite is not None:
            counts[0] += self.non_finite.to(device)
        self.non_finite, self.samples = None, 0
        if is_distributed():
            dist.all_reduce(counts)
        non_finite, samples = counts.tolist()
        if non_finite:
            rank_zero_warn(
                f"{self.callback}: {non_finite} of the {samples} validation samples it scored this epoch have NaN or "
                "infinite features, so its validation accuracy is meaningless. Check the validation images for NaN "
                "or infinite pixels (a transform, a corrupt file) and the encoder for non-finite weights or an "
                "overflow (e.g. float16). This warning is not repeated."
            )
            self.warned = True
