"""FSDP2 for the ViT methods (I-JEPA, FlexPredict) on 2 CPU processes (gloo).

- ``IJEPA.shard_modules``: errors for tensor parallelism and misaligned EMA shards, idempotence,
  and the shard-local EMA equal to the EMA of the full tensors (processes joined by hand);
- a Lightning fit under ``ModelParallelStrategy`` ends with the same student and EMA teacher as
  the same fit under DDP (same seed, data and masks; DDP itself is tested equal to one process on
  the whole batch in test_jepa_ddp.py);
- resuming from a distributed checkpoint restores weights, optimizer state and step counts;
- ``precision="bf16-mixed"`` all-gathers bfloat16 weights and keeps float32 shards;
- what is not supported fails with a clear error: FSDP1 (``FSDPStrategy``), ResNet methods.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard

from ssl_lightning.methods import VICReg
from ssl_lightning.nn.ema import ema_update_
from ssl_lightning.nn.fsdp import check_aligned_shards
from tests import fsdp_helpers
from tests.distributed_utils import run_distributed, run_lightning_distributed
from tests.jepa_helpers import tiny_method

pytestmark = pytest.mark.distributed

# Max |difference| allowed between the FSDP2 and the DDP run: their gradients are averaged by a
# reduce-scatter instead of an all-reduce, which may round differently (float32 sums of 2 terms;
# with gloo on CPU the runs were measured bitwise equal).
ATOL = 1e-6


def sharding_checks(rank: int, world_size: int) -> None:
    mesh_2d = init_device_mesh("cpu", (1, 2), mesh_dim_names=("data_parallel", "tensor_parallel"))
    with pytest.raises(ValueError, match=r"tensor_parallel_size=2.*tensor_parallel_size=1"):
        tiny_method(**fsdp_helpers.TINY_VIT).shard_modules(mesh_2d)

    mesh = init_device_mesh("cpu", (world_size,))
    model = tiny_method(**fsdp_helpers.TINY_VIT)
    full_teacher = fsdp_helpers.full_state(model.target_encoder)
    model.shard_modules(mesh)
    params = list(model.parameters())
    assert all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in params)
    model.shard_modules(mesh)  # idempotent
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]

    # The shard-local EMA equals the EMA of the full tensors.
    with torch.no_grad():  # a student unlike the teacher
        for param in model.context_encoder.parameters():
            param.to_local().add_(torch.randn_like(param.to_local()))
    full_student = fsdp_helpers.full_state(model.context_encoder)
    ema_update_(model.target_encoder.parameters(), model.context_encoder.parameters(), 0.9)
    for name, value in fsdp_helpers.full_state(model.target_encoder).items():
        torch.testing.assert_close(value, torch.lerp(full_teacher[name], full_student[name], 0.1))

    # A teacher with other parameters, unsharded, or sharded on another dimension is refused by name.
    student = tiny_method(**fsdp_helpers.TINY_VIT).context_encoder
    fully_shard(student, mesh=mesh)
    with pytest.raises(ValueError, match=r"teacher has \d+ parameters but its student has"):
        check_aligned_shards(tiny_method(**fsdp_helpers.TINY_VIT, depth=1).target_encoder, student)
    teacher = tiny_method(**fsdp_helpers.TINY_VIT).target_encoder
    with pytest.raises(ValueError, match=r"'vit.patch_embed.proj.weight' is a Tensor with local shape"):
        check_aligned_shards(teacher, student)
    fully_shard(teacher, mesh=mesh, shard_placement_fn=lambda param: Shard(param.ndim - 1))
    with pytest.raises(ValueError, match=r"'vit.patch_embed.proj.weight' is a DTensor .*Shard\(dim=3\)"):
        check_aligned_shards(teacher, student)


def test_shard_modules_checks_and_shard_local_ema():
    run_distributed(sharding_checks, 2)


def test_fsdp2_fit_equals_ddp_fit(tmp_path):
    """Three I-JEPA steps with EMA momentum 0.9 (so the teacher moves well beyond ATOL); the two
    runs must have seen the same images and masks on each rank."""
    run_lightning_distributed(fsdp_helpers.ddp_and_fsdp2_run, 2, str(tmp_path), 3, 0.9)
    for rank in range(2):
        ddp, fsdp2 = (torch.load(tmp_path / f"{name}_{rank}.pt") for name in ("ddp", "fsdp2"))
        assert len(ddp["batches"]) == len(fsdp2["batches"]) == 3
        torch.testing.assert_close(fsdp2["batches"], ddp["batches"], rtol=0, atol=0)
    teacher = [name for name in ddp["final"] if name.startswith("target_encoder.")]
    moved = max((ddp["final"][name] - ddp["initial"][name]).abs().max().item() for name in teacher)
    assert moved > 100 * ATOL
    torch.testing.assert_close(fsdp2["final"], ddp["final"], rtol=0, atol=ATOL)  # names the first mismatch


def test_resume_from_distributed_checkpoint(tmp_path):
    run_lightning_distributed(fsdp_helpers.save_and_resume_run, 2, str(tmp_path), 2, 4)
    ckpt = tmp_path / "fsdp2.ckpt"
    assert ckpt.is_dir() and (ckpt / "meta.pt").is_file() and len(list(ckpt.glob("*.distcp"))) == 2
    record = torch.load(tmp_path / "resume.pt")
    assert record["start_step"] == record["scheduler_steps"] == 2 and record["end_step"] == 4
    torch.testing.assert_close(record["restored"], record["saved"], rtol=0, atol=0)
    assert all(state["step"].item() == 2 for state in record["restored"]["optimizer"])
    assert any(not torch.equal(record["final"][name], value) for name, value in record["saved"]["model"].items())


def test_bf16_mixed_fit(tmp_path):
    run_lightning_distributed(fsdp_helpers.bf16_run, 2, str(tmp_path))
    record = torch.load(tmp_path / "bf16.pt")
    assert set(record["forward_dtypes"]) == {(torch.bfloat16, torch.bfloat16)}
    assert record["sharded_dtype"] == torch.float32
    metrics = record["metrics"]
    assert torch.isfinite(metrics["train/loss"]) and type(metrics["train/tied_projection_norm"]) is torch.Tensor
    assert any(not torch.equal(record["teacher_after"][k], v) for k, v in record["teacher_before"].items())


def test_fsdp1_is_refused_with_a_pointer_to_fsdp2():
    model = tiny_method(**fsdp_helpers.TINY_VIT)
    # Lightning builds an FSDPStrategy Trainer only with GPUs; the hook reads nothing but the strategy.
    model._trainer = SimpleNamespace(strategy=FSDPStrategy())
    with pytest.raises(TypeError, match="ModelParallelStrategy"):
        model.setup("fit")


def test_resnet_methods_refuse_model_parallel():
    with pytest.raises(NotImplementedError, match="VICReg does not support ModelParallelStrategy"):
        VICReg(backbone="resnet18", projector_dims=(16, 16)).shard_modules(None)  # refused before the mesh is read
