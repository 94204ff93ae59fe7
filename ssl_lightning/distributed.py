"""Distributed helpers that keep gradients correct.

SSL losses such as VICReg's covariance term and Barlow Twins' cross-correlation are defined over
the *global* batch. Gathering embeddings with a plain ``torch.distributed.all_gather`` gives the
right loss value but cuts the gradient to every other rank's samples (SPEC.md §5). The helpers
here use PyTorch's functional collectives with autograd
(``torch.distributed._functional_collectives.all_gather_single_autograd``, which replaces the
deprecated :mod:`torch.distributed.nn.functional`): the backward of the gather reduce-scatters
(sums) the incoming gradients over ranks, so that after DDP averages parameter gradients the
result equals single-process training on the concatenated batch. Functional collectives are
traceable, so a loss compiled with ``torch.compile`` stays one graph under DDP.

Helpers for callbacks (kNN bank, RankMe buffers) gather *without* gradient and accept tensors of
different lengths on each rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed._functional_collectives import all_gather_single_autograd


def is_distributed() -> bool:
    """True when a default process group exists and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping the gradient to every rank's input.

    Every rank must pass a tensor of the same shape. Returns ``x`` itself outside distributed runs.
    """
    if not is_distributed():
        return x
    return all_gather_single_autograd(x, gather_dim=0, group=dist.group.WORLD)


def all_reduce_sum_with_grad(x: Tensor) -> Tensor:
    """Sum ``x`` over ranks, keeping the gradient to every rank's input (identity outside
    distributed): the sum of the gathered copies, whose backward gives each rank the sum of all
    ranks' incoming gradients, as a gradient-carrying all-reduce would."""
    if not is_distributed():
        return x
    return gather_with_grad(x.unsqueeze(0)).sum(dim=0)


@torch.no_grad()
def gather_variable_length(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 without gradient; lengths may differ per rank.

    Each rank's tensor is padded to the longest length for the collective, then trimmed.
    """
    if not is_distributed():
        return x
    local_len = torch.tensor([x.shape[0]], device=x.device)
    lengths = [torch.zeros_like(local_len) for _ in range(world_size())]
    dist.all_gather(lengths, local_len)
    longest = int(max(int(n) for n in lengths))
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    buffers = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(buffers, padded)
    return torch.cat([buf[: int(n)] for buf, n in zip(buffers, lengths)], dim=0)
