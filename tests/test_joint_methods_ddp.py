"""BarlowTwins, BlockwiseBarlowTwins and LeJEPA under 2-process DDP: the parameter gradients of two processes
on two half-batches (averaged, as DDP does) equal one process's gradients on the whole batch.

BatchNorm layers (backbone, heads, projectors) are put in eval mode: in training mode they
normalise over each process's own samples, which is per-rank by design unless the Trainer's
``sync_batchnorm=True`` converts them to SyncBatchNorm (CUDA-only in torch, so not testable on CPU
with gloo). Eval-mode BatchNorm is a fixed per-channel affine map, so the only global-batch
computation left is the loss (Barlow Twins' cross-correlation, LeJEPA's SIGReg), whose gradient-carrying
collectives this test proves. Noise injection is off (it draws different noise on each rank).
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_lightning.methods import BarlowTwins, BlockwiseBarlowTwins, LeJEPA
from tests.distributed_utils import ddp_gradients, run_distributed
from tests.tiny_methods import JOINT as COMMON

BUILDERS = {
    "BarlowTwins": lambda: BarlowTwins(**COMMON),
    "BlockwiseBarlowTwins": lambda: BlockwiseBarlowTwins(**COMMON, head_dim=16, noise_std=0.0),
    "LeJEPA": lambda: LeJEPA(**{**COMMON, "projector_dims": [32, 32, 16]}, num_slices=64, sigreg_weight=0.5),
}


def model_and_batch(method: str):
    torch.manual_seed(0)
    model = BUILDERS[method]()
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
    gen = torch.Generator().manual_seed(1)
    views = [torch.randn(8, 1, 16, 16, generator=gen) for _ in range(2)]
    return model, views


def _distributed_gradients(rank, world_size, out_path):
    grads = {}
    for method in BUILDERS:
        model, views = model_and_batch(method)
        half = views[0].shape[0] // world_size
        local = [view[rank * half : (rank + 1) * half] for view in views]
        loss = model.training_step((local, torch.zeros(half)), 0)["loss"]
        grads[method] = ddp_gradients(model, loss)
    if rank == 0:
        torch.save(grads, out_path)


@pytest.fixture(scope="module")
def two_process_gradients(tmp_path_factory):
    """Both methods' DDP-averaged gradients from one 2-process run (spawning costs more than the steps)."""
    out = tmp_path_factory.mktemp("ddp") / "grads.pt"
    run_distributed(_distributed_gradients, 2, str(out))
    return torch.load(out)


@pytest.mark.distributed
@pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")
@pytest.mark.parametrize("method", sorted(BUILDERS))
def test_two_process_gradients_equal_single_process(two_process_gradients, method):
    model, views = model_and_batch(method)
    model.training_step((views, torch.zeros(8)), 0)["loss"].backward()
    multi_grads = two_process_gradients[method]
    assert len(multi_grads) == len(list(model.parameters()))
    # float32 sums in a different order: absolute tolerance relative to the model's gradient scale
    atol = 1e-5 * max(float(param.grad.abs().max()) for param in model.parameters())
    for (name, param), multi in zip(model.named_parameters(), multi_grads):
        torch.testing.assert_close(
            multi, param.grad, rtol=1e-4, atol=atol, msg=functools.partial("{}: {}".format, name)
        )
