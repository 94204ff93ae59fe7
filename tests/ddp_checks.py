"""Callbacks for fits launched in subprocesses: after training, one checks that every rank holds the
same trainable parameters (DDP keeps replicas in sync) and writes what it found to
``<default_root_dir>/ddp_check.json`` on rank 0; the other kills the run at a given step."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch import Callback


class RanksInSync(Callback):
    """Records world size, global step and the largest parameter difference between ranks."""

    def on_train_end(self, trainer, pl_module) -> None:
        flat = torch.cat([p.detach().reshape(-1).float() for p in pl_module.parameters() if p.requires_grad])
        gathered = [torch.empty_like(flat) for _ in range(trainer.world_size)]
        dist.all_gather(gathered, flat)
        difference = max(float((other - gathered[0]).abs().max()) for other in gathered)
        if trainer.is_global_zero:
            report = {
                "world_size": trainer.world_size,
                "strategy": type(trainer.strategy).__name__,
                "global_step": trainer.global_step,
                "max_parameter_difference": difference,
                "parameters": flat.numel(),
                "logged": sorted(trainer.logged_metrics),
            }
            (Path(trainer.default_root_dir) / "ddp_check.json").write_text(json.dumps(report))


class SignalAtStep(Callback):
    """After global step ``$SIGNAL_AT_STEP``, send the signals named in ``$SIGNALS`` (comma-separated,
    default ``SIGKILL``) as a cluster would: ``SIGKILL`` to the run's whole process group (every
    rank), any other signal to this process (its handler runs before the next signal). Does nothing
    when ``$SIGNAL_AT_STEP`` is unset."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != int(os.environ.get("SIGNAL_AT_STEP", "-1")):
            return
        for name in os.environ.get("SIGNALS", "SIGKILL").split(","):
            number = getattr(signal, name)
            if number == signal.SIGKILL:
                os.killpg(os.getpgid(0), number)
            os.kill(os.getpid(), number)
