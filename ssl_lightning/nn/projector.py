"""Projector MLPs of the joint-embedding methods.

VICReg (Bardes et al. 2022, §4.2) and Barlow Twins (Zbontar et al. 2021, §2) both use an expander
of three linear layers (8192-8192-8192 for ResNet-50), with BatchNorm and ReLU after every layer
but the last. VICReg's linear layers have biases; Barlow Twins' do not (``bias=False``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def projector_mlp(in_dim: int, dims: Sequence[int], bias: bool = True) -> nn.Sequential:
    """``Linear → BN → ReLU`` for every entry of ``dims`` but the last, then a plain ``Linear``."""
    if not dims:
        raise ValueError("projector dims must name at least one output dimension, e.g. [2048, 2048, 2048]")
    layers: list[nn.Module] = []
    for out_dim in dims[:-1]:
        layers += [nn.Linear(in_dim, out_dim, bias=bias), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)]
        in_dim = out_dim
    layers.append(nn.Linear(in_dim, dims[-1], bias=bias))
    return nn.Sequential(*layers)
