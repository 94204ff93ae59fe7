"""Per-step hyper-parameter schedules (learning rate, weight decay, EMA momentum), as plain floats.

``step`` counts optimizer steps from 0; past ``total_steps`` a schedule stays at its end value.
"""

from __future__ import annotations

import math


def _progress(step: int, total_steps: int) -> float:
    """Fraction of a phase done, clipped to [0, 1]; a phase of no steps is already done."""
    if total_steps <= 0:
        return 1.0
    return min(max(step / total_steps, 0.0), 1.0)


def linear_ramp(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear interpolation from ``start`` (step 0) to ``end`` (step ``total_steps``)."""
    return start + (end - start) * _progress(step, total_steps)


def cosine_ramp(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (step ``total_steps``):
    ``end + (start − end)·(1 + cos(π·step/total_steps))/2``.

    With ``start < end`` this is I-JEPA's weight-decay ramp (Assran et al., arXiv 2301.08243,
    pretraining recipe: 0.04 → 0.4); with ``start > end`` the usual cosine decay.
    """
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * _progress(step, total_steps)))


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, start: float, peak: float, end: float) -> float:
    """Linear warmup ``start → peak`` over ``warmup_steps``, then cosine ``peak → end`` until ``total_steps``.

    I-JEPA's learning rate (ViT-H/14 recipe: 2e-4 → 1e-3 over 40 epochs, cosine to 1e-6).
    """
    if step < warmup_steps:
        return linear_ramp(step, warmup_steps, start, peak)
    return cosine_ramp(step - warmup_steps, total_steps - warmup_steps, peak, end)
