"""The step learning-rate schedule of VISSL's linear evaluation (Goyal et al. 2021; its ImageNet
benchmark: ×0.1 at epochs 8, 16 and 24 of 28), as a factor on the base rate."""

from __future__ import annotations

from collections.abc import Sequence

from ssl_lightning.errors import ConfigurationError


def step_decay(step: int, milestones: Sequence[int], steps_per_epoch: int, gamma: float) -> float:
    """``gamma`` to the power of the milestones reached at optimizer step ``step`` (counted from 0):
    epoch ``m`` starts at step ``m × steps_per_epoch``, whose rate is already decayed."""
    return gamma ** sum(step >= milestone * steps_per_epoch for milestone in milestones)


def check_milestones(milestones: Sequence[int] | None, gamma: float, final_lr_factor: float) -> list[int] | None:
    """``milestones`` as a list, checked: increasing epochs ≥ 1, a positive ``gamma``, and no
    cosine end factor (the step schedule replaces the cosine)."""
    if milestones is None:
        return None
    milestones = list(milestones)
    if (
        not milestones
        or any(not isinstance(m, int) or m < 1 for m in milestones)
        or milestones != sorted(set(milestones))
    ):
        raise ConfigurationError(f"lr_milestones must be increasing epochs ≥ 1, got {milestones!r}")
    if gamma <= 0:
        raise ConfigurationError(f"lr_gamma must be > 0, got {gamma}")
    if final_lr_factor != 0.0:
        raise ConfigurationError(
            f"final_lr_factor={final_lr_factor} sets the end of the cosine schedule, which lr_milestones replaces; "
            "leave it at 0 with lr_milestones."
        )
    return milestones
