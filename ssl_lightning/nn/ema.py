"""Exponential-moving-average (EMA) teacher: frozen copy, in-place update, momentum schedule."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.nn.schedules import linear_ramp


def frozen_copy(module: nn.Module) -> nn.Module:
    """Deep copy of ``module`` with ``requires_grad=False`` on every parameter (e.g. I-JEPA's
    target encoder), so it takes no gradient and stays out of the optimizer's parameter groups."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def ema_update_(teacher_params: Iterable[Tensor], student_params: Iterable[Tensor], momentum: float | Tensor) -> None:
    """In-place EMA ``θ_t ← m·θ_t + (1 − m)·θ_s`` for matching parameter lists (I-JEPA, Assran et
    al., arXiv 2301.08243, Sec. 3: target-encoder weights follow the context encoder's).

    One fused ``torch._foreach_lerp_`` call (``lerp(θ_t, θ_s, 1 − m)``) over all parameters.
    ``momentum`` may be a 0-dim tensor (on the parameters' device), so the update can live in a compiled region without
    recompiling when ``m`` changes every step.

    FSDP2-sharded parameters (``DTensor``) are updated through their local shards
    (``DTensor.to_local()``), with no communication: teacher and student must be sharded alike
    (:func:`~ssl_lightning.nn.fsdp.check_aligned_shards` verifies it once after sharding) and be in
    their sharded state (:func:`~ssl_lightning.nn.fsdp.reshard`).
    """
    teacher, student = _local(teacher_params), _local(student_params)
    if len(teacher) != len(student):
        raise ConfigurationError(f"EMA needs matching parameter lists, got {len(teacher)} and {len(student)} tensors")
    torch._foreach_lerp_(teacher, student, 1.0 - momentum)


def _local(params: Iterable[Tensor]) -> list[Tensor]:
    """The tensors themselves, or for ``DTensor`` parameters this rank's shard (sharing its storage)."""
    return [param.to_local() if isinstance(param, DTensor) else param for param in params]


def momentum_at(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """I-JEPA's EMA momentum: linear from ``start`` to ``end`` over the whole run."""
    return linear_ramp(step, total_steps, start, end)
