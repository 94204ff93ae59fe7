"""Two-process Lightning runs of the JEPA methods for tests/test_fsdp.py: a tiny ViT, fixed data,
DDP or FSDP2 (``ModelParallelStrategy``), and what each run records. Each ``*_run`` function is
called in every process by :func:`tests.distributed_utils.run_lightning_distributed` and writes
its records to files in ``out_dir``."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.utils.data import DataLoader, TensorDataset

from ssl_lightning.nn.fsdp import full_tensor
from tests.jepa_helpers import tiny_method

# tiny_method's ViT (patch 4 on 32 px, depth 2) made narrower: embed 32, predictor 16 × 1 block.
TINY_VIT = {"embed_dim": 32, "num_heads": 2, "pred_dim": 16, "pred_depth": 1}
BATCH_SIZE = 4  # per rank


def strategy(name: str):
    """``"ddp"``, or ``"fsdp2"``: FSDP2 over 2 data-parallel ranks."""
    if name == "fsdp2":
        return ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    return name


def fit(model: pl.LightningModule, strategy_name: str, max_steps: int, **options) -> pl.Trainer:
    """``Trainer.fit`` of ``model`` on 2 CPU processes with 64 fixed random images (no shuffling);
    ``options`` go to the Trainer, except ``ckpt_path`` which goes to ``fit``."""
    images = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(7))
    loader = DataLoader(TensorDataset(images, torch.zeros(64, dtype=torch.long)), batch_size=BATCH_SIZE)
    ckpt_path = options.pop("ckpt_path", None)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy(strategy_name),
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return trainer


def full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with sharded tensors gathered (a collective: call it on every rank)."""
    return {name: full_tensor(value).detach().clone() for name, value in module.state_dict().items()}


def optimizer_state(trainer: pl.Trainer) -> list[dict[str, torch.Tensor]]:
    """AdamW's state per parameter in parameter-group order, moments gathered (a collective)."""
    optimizer = trainer.optimizers[0]
    params = [param for group in optimizer.param_groups for param in group["params"]]
    return [{key: full_tensor(value).clone() for key, value in optimizer.state[param].items()} for param in params]


class RecordBatches(pl.Callback):
    """Per step, this rank's images and masks (to check that two runs saw the same ones)."""

    def __init__(self) -> None:
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        context_idx, target_idx = pl_module.last_masks
        self.steps.append((batch[0].clone(), context_idx.clone(), [idx.clone() for idx in target_idx]))


class RecordStart(pl.Callback):
    """The state at ``on_train_start`` (after a checkpoint was restored)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.global_step = trainer.global_step
        self.scheduler_steps = trainer.lr_scheduler_configs[0].scheduler.last_epoch
        self.model = full_state(pl_module)
        self.optimizer = optimizer_state(trainer)


def ddp_and_fsdp2_run(rank: int, world_size: int, out_dir: str, steps: int, ema_momentum: float) -> None:
    """The same I-JEPA training (seed, data, masks) under DDP and then under FSDP2; per strategy and
    rank ``{strategy}_{rank}.pt`` holds the batches seen and the gathered final weights."""
    for name in ("ddp", "fsdp2"):
        pl.seed_everything(0)
        model = tiny_method("IJEPA", **TINY_VIT, ema_momentum=(ema_momentum, ema_momentum))
        initial = full_state(model)
        batches = RecordBatches()
        fit(model, name, steps, callbacks=[batches])
        record = {"batches": batches.steps, "initial": initial, "final": full_state(model)}
        torch.save(record, Path(out_dir) / f"{name}_{rank}.pt")


def save_and_resume_run(rank: int, world_size: int, out_dir: str, saved_steps: int, total_steps: int) -> None:
    """FSDP2 I-JEPA trained for ``saved_steps``, saved as a distributed checkpoint, then a fresh model
    (other initial weights) resumed from it up to ``total_steps``; rank 0 writes ``resume.pt``."""
    ckpt = Path(out_dir) / "fsdp2.ckpt"
    model = tiny_method("IJEPA", seed=0, **TINY_VIT)
    trainer = fit(model, "fsdp2", saved_steps)
    trainer.save_checkpoint(ckpt)
    saved = {"model": full_state(model), "optimizer": optimizer_state(trainer)}

    resumed = tiny_method("IJEPA", seed=1, **TINY_VIT)
    start = RecordStart()
    trainer = fit(resumed, "fsdp2", total_steps, callbacks=[start], ckpt_path=ckpt)
    final = full_state(resumed)
    if rank == 0:
        restored = {"model": start.model, "optimizer": start.optimizer}
        record = {"saved": saved, "restored": restored, "final": final, "start_step": start.global_step}
        record |= {"scheduler_steps": start.scheduler_steps, "end_step": trainer.global_step}
        torch.save(record, Path(out_dir) / "resume.pt")


def bf16_run(rank: int, world_size: int, out_dir: str) -> None:
    """Two FSDP2 steps of FlexPredict with ``precision="bf16-mixed"``; rank 0 writes ``bf16.pt``:
    the dtypes of a block's weight and output inside forward and of its sharded parameter, the
    logged metrics, and the teacher before and after."""
    model = tiny_method("FlexPredict", **TINY_VIT)
    qkv = model.context_encoder.vit.blocks[0].attn.qkv
    seen = []
    qkv.register_forward_hook(lambda module, args, output: seen.append((module.weight.dtype, output.dtype)))
    teacher_before = full_state(model.target_encoder)
    trainer = fit(model, "fsdp2", 2, precision="bf16-mixed")
    teacher_after = full_state(model.target_encoder)
    if rank == 0:
        record = {"forward_dtypes": seen, "sharded_dtype": qkv.weight.dtype, "metrics": dict(trainer.callback_metrics)}
        record |= {"teacher_before": teacher_before, "teacher_after": teacher_after}
        torch.save(record, Path(out_dir) / "bf16.pt")
