"""Preemption-safe checkpoints: atomic writes, and ``--ckpt_path=last`` that continues the killed run
where it logged.

- :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file beside it and renames it
  into place, so a kill during a save leaves the previous file whole (the CLI installs it).
- :func:`find_last_checkpoint` resolves ``ckpt_path="last"`` for ModelCheckpoints that save under the
  logger's version directory (the default), which Lightning cannot see before the new run has picked
  its own version, and counts a SLURM requeue checkpoint (``hpc_ckpt_N.ckpt``) as a candidate.
- :class:`RecordLogVersion` writes the logger's version into every checkpoint, so that the resumed
  run logs into the same version directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

LOG_VERSION_KEY = "ssl_lightning_log_version"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic: written to ``.<name>.<pid>.tmp`` in the same
    directory, then moved over the target with :func:`os.replace`. A process killed while saving
    leaves the old checkpoint (and at worst a stray temporary file), never a truncated one. Remote
    paths (``s3://`` …) are saved as Lightning does."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


def use_atomic_checkpoints(trainer: Trainer) -> None:
    """Give ``trainer`` atomic checkpoint writes when it uses Lightning's default ``TorchCheckpointIO``
    (a custom checkpoint plugin is left alone)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


class RecordLogVersion(Callback):
    """Store the first logger's version in every checkpoint (``ssl_lightning_log_version``)."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.logger is not None:
            checkpoint[LOG_VERSION_KEY] = trainer.logger.version


def find_last_checkpoint(trainer: Trainer) -> Path | None:
    """The newest of: the ``last*.ckpt`` files where a ModelCheckpoint without ``dirpath`` saves (the
    logger's version directories, or ``default_root_dir/checkpoints`` without a logger) and the SLURM
    requeue checkpoints in ``default_root_dir``; ``None`` when there is none (Lightning then resolves
    ``"last"`` itself, e.g. for a ModelCheckpoint with its own ``dirpath``)."""
    root = Path(trainer.default_root_dir)
    candidates = list(root.glob("hpc_ckpt_*.ckpt"))
    logger = trainer.logger
    implicit = any(cb.dirpath is None for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint))
    if implicit and logger is None:
        candidates += root.glob("checkpoints/last*.ckpt")
    elif implicit and getattr(logger, "root_dir", None):
        candidates += Path(logger.root_dir).glob("*/checkpoints/last*.ckpt")
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)


def continue_in_logged_version(trainer: Trainer, checkpoint: Path) -> None:
    """Make the trainer's logger write into the version directory recorded in ``checkpoint``
    (read memory-mapped: the weights are not loaded)."""
    logger = trainer.logger
    if logger is None or not hasattr(logger, "_version"):
        return
    version = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True).get(LOG_VERSION_KEY)
    if version is not None:
        logger._version = version
