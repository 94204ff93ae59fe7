"""The classifier heads of offline linear evaluation, and which heads one run trains.

A run trains one head per (head type, pooling) pair, all on the same frozen features: VISSL's ViT
protocol (Goyal et al. 2021), which I-JEPA and StoP report, trains four at once, BatchNorm + linear
and plain linear on the last layer's average-pooled tokens and on the last four layers'
concatenation, and reports the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from torch import nn

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.evaluation.features import ViTPool

HeadType = Literal["bn_linear", "linear"]
HEAD_TYPES: tuple[str, ...] = get_args(HeadType)
POOLS: tuple[str, ...] = get_args(ViTPool)
LINEAR_INIT_STD = 0.01


def linear_head(head_type: str, in_features: int, num_classes: int) -> nn.Sequential:
    """A classifier of ``in_features``-dimensional features into ``num_classes`` logits.

    - ``"bn_linear"``: ``BatchNorm1d(affine=False) → Linear``; the normalisation makes one learning
      rate fit every encoder (this library's default protocol; VISSL's ``eval_mlp`` head).
    - ``"linear"``: ``Linear`` alone, the head of the VICReg and Barlow Twins evaluation code.

    The linear layer starts from weights drawn from N(0, 0.01²) and zero biases, as in that code.
    The last module is always the linear layer.
    """
    if head_type not in HEAD_TYPES:
        raise ConfigurationError(f"head_type must be one of {list(HEAD_TYPES)}, got {head_type!r}")
    linear = nn.Linear(in_features, num_classes)
    nn.init.normal_(linear.weight, std=LINEAR_INIT_STD)
    nn.init.zeros_(linear.bias)
    if head_type == "linear":
        return nn.Sequential(linear)
    return nn.Sequential(nn.BatchNorm1d(in_features, affine=False), linear)


@dataclass(frozen=True)
class HeadSpec:
    """One head of a run: its ``name`` (a key of the metrics), its type and the pooling it reads."""

    name: str
    head_type: str
    pool: str | None


def as_list(value: str | Sequence[str] | None) -> list:
    return [value] if value is None or isinstance(value, str) else list(value)


def head_specs(head_type: str | Sequence[str], pool: str | Sequence[str] | None) -> list[HeadSpec]:
    """Every ``head_type`` × ``pool`` pair, named ``<head_type>_<pool>`` (``<head_type>`` without a pool).

    Raises:
        ValueError: an empty, repeated or unknown head type or pooling.
    """
    head_types, pools = as_list(head_type), as_list(pool)
    for name, values, known in (("head_type", head_types, HEAD_TYPES), ("pool", pools, POOLS)):
        if not values or len(set(values)) != len(values):
            raise ConfigurationError(f"{name} must be one value or a list of distinct values, got {values!r}")
        unknown = [value for value in values if value is not None and value not in known]
        if unknown:
            raise ConfigurationError(f"{name} must be among {list(known)}, got {unknown!r}")
    if None in pools and len(pools) > 1:
        raise ConfigurationError(f"pool must be None (non-JEPA encoders) or a list of poolings, got {pools!r}")
    return [
        HeadSpec(head_type if pool is None else f"{head_type}_{pool}", head_type, pool)
        for head_type in head_types
        for pool in pools
    ]
