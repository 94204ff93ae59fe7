"""Run a function in several CPU processes joined by a gloo process group (for distributed tests)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
        dist.barrier()  # no rank tears the group down while another still writes its records
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable, world_size: int = 2, *args) -> None:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` processes; ``fn`` must be importable."""
    mp.spawn(_worker, args=(world_size, _free_port(), fn, args), nprocs=world_size, join=True)


def _external_worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    try:
        fn(rank, world_size, *args)
        if dist.is_initialized():
            # No rank tears the group down while another is still in a collective or writing its
            # records: a rank leaving early once aborted its peer ("terminate called without an
            # active exception", SIGABRT) under a loaded CI machine.
            dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_lightning_distributed(fn: Callable, world_size: int = 2, *args) -> None:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` processes that Lightning takes as
    launched externally (as by torchrun: ``LOCAL_RANK`` etc. are set), so a ``Trainer(devices=
    world_size)`` built in ``fn`` joins them instead of re-running ``sys.argv`` (which under
    pytest would start pytest again). The Trainer creates the process group."""
    mp.spawn(_external_worker, args=(world_size, _free_port(), fn, args), nprocs=world_size, join=True)


def ddp_gradients(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    """Backpropagate ``loss`` and average parameter gradients over ranks, as DDP does."""
    loss.backward()
    grads = []
    for param in model.parameters():
        grad = param.grad.clone()
        dist.all_reduce(grad)
        grads.append(grad / dist.get_world_size())
    return grads


def _linear_model_and_views() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded ``Linear(6, 10)`` and two 16-sample input batches (the same in every process)."""
    gen = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(16, 6, generator=gen), torch.randn(16, 6, generator=gen)
    torch.manual_seed(2)
    return torch.nn.Linear(6, 10), x1, x2


def _half_batch_loss_gradients(rank: int, world_size: int, loss_fn: Callable, out_path: str) -> None:
    model, x1, x2 = _linear_model_and_views()
    local = slice(rank * 16 // world_size, (rank + 1) * 16 // world_size)
    loss, _ = loss_fn(model(x1[local]), model(x2[local]))
    grads = ddp_gradients(model, loss)
    if rank == 0:
        torch.save(grads, out_path)


def assert_two_process_loss_gradients_equal(loss_fn: Callable, out_path: str) -> None:
    """For a two-view loss ``loss_fn(z1, z2) -> (loss, terms)`` (importable, so it can be spawned):
    the DDP-averaged gradients of a linear model in 2 processes, each on half of the batch, equal
    those of 1 process on the whole batch (SPEC.md §5). Loss values may differ per rank (e.g.
    VICReg's per-rank invariance term); gradients may not."""
    run_distributed(_half_batch_loss_gradients, 2, loss_fn, out_path)
    model, x1, x2 = _linear_model_and_views()
    loss, _ = loss_fn(model(x1), model(x2))
    loss.backward()
    for single, multi in zip([p.grad for p in model.parameters()], torch.load(out_path)):
        torch.testing.assert_close(multi, single, rtol=1e-5, atol=1e-6)
