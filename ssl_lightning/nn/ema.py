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

    One fused ``torch._foreach_lerp_`` call (``lerp(θ_t, θ_s, 1 − m)``) over all parameters for a
    float ``momentum``. ``momentum`` may also be a 0-dim tensor on the parameters' device (the NaN
    guard's held momentum, :meth:`~ssl_lightning.methods.base.SSLMethod.ema_momentum_held`), which
    is never read on the host: it goes to the overload that takes one weight tensor per parameter
    (on a GPU not the fused kernel, which needs weights shaped like the parameters, but one ``lerp_``
    per parameter).

    FSDP2-sharded parameters (``DTensor``) are updated through their local shards
    (``DTensor.to_local()``), with no communication: teacher and student must be sharded alike
    (:func:`~ssl_lightning.nn.fsdp.check_aligned_shards` verifies it once after sharding) and be in
    their sharded state (:func:`~ssl_lightning.nn.fsdp.reshard`).
    """
    teacher, student = _local(teacher_params), _local(student_params)
    if len(teacher) != len(student):
        raise ConfigurationError(f"EMA needs matching parameter lists, got {len(teacher)} and {len(student)} tensors")
    if isinstance(momentum, Tensor):
        weight = (1.0 - momentum).to(teacher[0].dtype) if teacher else momentum
        torch._foreach_lerp_(teacher, student, [weight] * len(teacher))
    else:
        torch._foreach_lerp_(teacher, student, 1.0 - momentum)


def _local(params: Iterable[Tensor]) -> list[Tensor]:
    """The tensors themselves, or for ``DTensor`` parameters this rank's shard (sharing its storage)."""
    return [param.to_local() if isinstance(param, DTensor) else param for param in params]


def momentum_at(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """I-JEPA's EMA momentum: linear from ``start`` to ``end`` over the whole run."""
    return linear_ramp(step, total_steps, start, end)
