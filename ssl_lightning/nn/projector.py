"""Projector MLPs of the joint-embedding methods.

VICReg (Bardes et al. 2022, §4.2) and Barlow Twins (Zbontar et al. 2021, §2) both use an expander
of three linear layers (8192-8192-8192 for ResNet-50), with BatchNorm and ReLU after every layer
but the last. VICReg's hidden linear layers have biases and its last one has none (the official
code's layout, so its checkpoints load strictly: ``bias=True, last_bias=False``); Barlow Twins' have
no biases at all (``bias=False``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ssl_lightning.errors import ConfigurationError


def projector_mlp(in_dim: int, dims: Sequence[int], bias: bool = True, last_bias: bool | None = None) -> nn.Sequential:
    """``Linear → BN → ReLU`` for every entry of ``dims`` but the last, then a plain ``Linear``;
    ``bias`` for the hidden linear layers, ``last_bias`` (default: ``bias``) for the last one."""
    if not dims:
        raise ConfigurationError("projector dims must name at least one output dimension, e.g. [2048, 2048, 2048]")
    layers: list[nn.Module] = []
    for out_dim in dims[:-1]:
        layers += [nn.Linear(in_dim, out_dim, bias=bias), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)]
        in_dim = out_dim
    layers.append(nn.Linear(in_dim, dims[-1], bias=bias if last_bias is None else last_bias))
    return nn.Sequential(*layers)
