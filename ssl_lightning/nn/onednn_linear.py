"""Linear layers through oneDNN on the CPU: the same matrix product, computed as a 1×1 convolution.

On a CPU, ``nn.Linear`` multiplies through the BLAS PyTorch was built with (MKL), and convolutions
run in oneDNN's own kernels. Where the BLAS does not use the processor's full vector width, the two
differ: on AMD Zen 5 cores MKL's float32 GEMM runs at its AVX2 rate, oneDNN's at the AVX-512 rate,
and a linear layer's forward and backward pass, as a 1×1 convolution over a ``(1, in, 1, tokens)``
channels-last view of the input, runs 2.0-2.2× faster (``benchmarks/roofline.py`` measures both
GEMMs on the machine at hand). The weights stay the ``(out, in)`` matrices of ``nn.Linear``, so state
dicts, optimizers and checkpoints do not change; results equal ``F.linear``'s up to float32 rounding.
Other devices and dtypes, and code compiled by ``torch.compile``, take ``F.linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def linear_as_convolution(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)`` for ``x`` ``(..., in)``, computed by ``F.conv2d`` with a 1×1 kernel.

    The rows of ``x`` become the pixels of one image with ``in`` channels, in channels-last order, so
    no data moves; the output comes back in that order as well and is viewed as ``(..., out)``.
    """
    rows = x.reshape(1, 1, -1, x.shape[-1]).permute(0, 3, 1, 2)  # (1, in, 1, M), channels-last memory
    out = F.conv2d(rows, weight[:, :, None, None], bias)
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], weight.shape[0])


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose float32 CPU products go through :func:`linear_as_convolution`."""

    def forward(self, x: Tensor) -> Tensor:
        on_cpu = x.device.type == "cpu" and x.dtype == self.weight.dtype and x.dim() >= 2
        # Under torch.compile, inductor picks the kernels (its convolution lowering fails on dynamic token counts).
        if on_cpu and not torch.compiler.is_compiling():
            return linear_as_convolution(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def use_onednn_linears(module: nn.Module) -> int:
    """Turn every plain ``nn.Linear`` of ``module`` into an :class:`OneDNNLinear`, in place (same
    parameters, same state dict); return how many were turned. Subclasses of ``nn.Linear`` are left
    alone: their ``forward`` may do more than the product."""
    linears = [m for m in module.modules() if type(m) is nn.Linear]
    for linear in linears:
        linear.__class__ = OneDNNLinear
    return len(linears)
