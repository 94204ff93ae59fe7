"""Reading what a method hands its callbacks: the step's ``outputs`` dict (``{"features": ...}``, a
tensor or a dict of named tensors) and the batch's labels, plus the callbacks' metric names."""

from __future__ import annotations

from typing import Any

from torch import Tensor

SINGLE_FEATURE_KEY = "features"


def features_by_name(features: Tensor | dict[str, Tensor], wanted: list[str] | None) -> dict[str, Tensor]:
    """Name a method's ``features`` output: a tensor becomes ``{"features": t}``; a dict is kept,
    restricted to ``wanted`` when given. Raises when a wanted key is missing."""
    if isinstance(features, Tensor):
        return {SINGLE_FEATURE_KEY: features}
    if not isinstance(features, dict):
        raise TypeError(
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
    raise ValueError(
        f"{callback} needs batches of the form (images_or_views, labels) with a 1-D label tensor; got {type(batch).__name__}. "
        "Give the DataModule's samples a label (use -1 for unlabelled images, which the callbacks ignore)."
    )


def outputs_features(outputs: Any, callback: str, key: str = "features") -> Tensor | dict[str, Tensor]:
    """``outputs[key]`` of a training/validation step, with a clear error when the step did not return it."""
    if not isinstance(outputs, dict) or key not in outputs:
        raise ValueError(
            f"{callback} reads the `{key}` the method returns from training_step/validation_step, "
            f'but the step returned no {{"{key}": ...}} dict.'
        )
    return outputs[key]


def metric_name(prefix: str, key: str, metric: str | None = None) -> str:
    """``prefix/metric`` for a single feature tensor, ``prefix/key/metric`` for an entry of dict features
    (``metric`` may be left out: ``rankme`` / ``rankme/block1``)."""
    parts = [prefix] if key == SINGLE_FEATURE_KEY else [prefix, key]
    return "/".join(parts if metric is None else [*parts, metric])
