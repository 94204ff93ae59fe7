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
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable, world_size: int = 2, *args) -> None:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` processes; ``fn`` must be importable."""
    mp.spawn(_worker, args=(world_size, _free_port(), fn, args), nprocs=world_size, join=True)


def ddp_gradients(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    """Backpropagate ``loss`` and average parameter gradients over ranks, as DDP does."""
    loss.backward()
    grads = []
    for param in model.parameters():
        grad = param.grad.clone()
        dist.all_reduce(grad)
        grads.append(grad / dist.get_world_size())
    return grads
