"""Shared pieces of the I-JEPA and FlexPredict method tests: a tiny configuration, fixed masks and
noise, and the two-process gradient check."""

from __future__ import annotations

import functools
from unittest import mock

import torch
import torch.distributed as dist

from ssl_lightning.methods import IJEPA, FlexPredict
from tests.distributed_utils import ddp_gradients

# 32 px / patch 4 = an 8×8 grid; 4 targets of scale (0.1, 0.15) leave contexts of 11+ patches.
TINY_JEPA = {
    "backbone": None,
    "patch_size": 4,
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 4,
    "pred_dim": 32,
    "pred_depth": 2,
    "target_scale": (0.1, 0.15),
    "min_keep": 3,
    "in_chans": 1,
    "image_size": 32,
    "warmup_epochs": 0,
}
METHODS = {"IJEPA": IJEPA, "FlexPredict": FlexPredict}


def tiny_method(name: str = "IJEPA", seed: int = 0, **kwargs) -> IJEPA:
    torch.manual_seed(seed)
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3)
    return METHODS[name](**{**TINY_JEPA, "optimizer": optimizer, **kwargs})


def batch_and_masks(model: IJEPA, batch_size: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Images for ``model`` and one set of masks for the whole batch, from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 1, 32, 32, generator=generator)
    context_idx, target_idx = model.mask_sampler(batch_size, generator=generator)
    return images, context_idx, target_idx


def whole_batch_noise(model: IJEPA, images: torch.Tensor, target_idx: list, seed: int = 2) -> torch.Tensor:
    """Standard-normal predictor noise for every target token of the whole batch, ``(T, B, Kt, enc_dim)``."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(target_idx), len(images), target_idx[0].shape[1], model.context_encoder.embed_dim)
    return torch.randn(shape, generator=generator)


def fixed_noise(noise: torch.Tensor, expected_std: float, draws: list):
    """Make ``Tensor.normal_`` (which FlexPredict's predictor uses to draw its noise, and nothing else
    does during a forward pass) fill its tensor with ``noise`` (``(T, B, Kt, D)``, block-major
    like the predictor's rows) scaled by the requested std; each draw is appended to ``draws``."""

    def normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> torch.Tensor:
        assert std == expected_std and mean == 0.0
        draws.append(tensor.shape)
        return tensor.copy_(noise.flatten(0, 1) * std)

    return mock.patch.object(torch.Tensor, "normal_", normal_)


def jepa_loss_of(model: IJEPA, images, context_idx, target_idx, noise: torch.Tensor | None) -> torch.Tensor:
    """The model's JEPA loss for fixed masks (and, for FlexPredict, fixed predictor noise)."""
    if noise is None:
        return model.prediction_loss(images, context_idx, target_idx)[0]
    draws = []
    with fixed_noise(noise, model.noise_std, draws):
        loss = model.prediction_loss(images, context_idx, target_idx)[0]
    assert len(draws) == 1  # the predictor drew its noise once, and got ours
    return loss


def trainable(model: IJEPA) -> torch.nn.ModuleList:
    return torch.nn.ModuleList([model.context_encoder, model.predictor])


def distributed_gradients(rank: int, world_size: int, out_path: str) -> None:
    """For each method, each rank takes its half of the batch, of the whole-batch masks and
    (FlexPredict) of the whole-batch noise; rank 0 saves the DDP-averaged gradients of the
    trainable parameters as ``{method name: gradients}``."""
    grads = {}
    for name in METHODS:
        model = tiny_method(name)
        images, context_idx, target_idx = batch_and_masks(model)
        noise = whole_batch_noise(model, images, target_idx) if name == "FlexPredict" else None
        half = len(images) // world_size
        local = slice(rank * half, (rank + 1) * half)
        local_noise = None if noise is None else noise[:, local]
        loss = jepa_loss_of(model, images[local], context_idx[local], [t[local] for t in target_idx], local_noise)
        grads[name] = ddp_gradients(trainable(model), loss)
    assert dist.get_world_size() == world_size
    if rank == 0:
        torch.save(grads, out_path)


def single_process_gradients(name: str) -> list[torch.Tensor]:
    model = tiny_method(name)
    images, context_idx, target_idx = batch_and_masks(model)
    noise = whole_batch_noise(model, images, target_idx) if name == "FlexPredict" else None
    jepa_loss_of(model, images, context_idx, target_idx, noise).backward()
    return [p.grad for p in trainable(model).parameters()]
