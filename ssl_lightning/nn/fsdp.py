"""FSDP2 sharding for EMA teacher-student networks (PyTorch's ``torch.distributed.fsdp.fully_shard``).

FSDP2 shards every parameter of a ``fully_shard``-ed module separately, as a ``DTensor`` split along
dim 0 over the mesh (``Shard(0)``, the last shards padded). So a teacher that is a copy of its
student and is sharded on the same mesh with the same placements holds, on every rank, the same
slice of each parameter as its student: the EMA update then needs no communication
(:func:`~ssl_lightning.nn.ema.ema_update_` works on the local shards). :func:`check_aligned_shards`
verifies this once after sharding.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from ssl_lightning.errors import ConfigurationError

# The names Lightning's ModelParallelStrategy gives the dimensions of its 2-D device mesh.
DATA_PARALLEL, TENSOR_PARALLEL = "data_parallel", "tensor_parallel"


def data_parallel_mesh(device_mesh: DeviceMesh) -> DeviceMesh:
    """The 1-D mesh to shard over: a 1-D mesh as it is; of Lightning's 2-D
    ``("data_parallel", "tensor_parallel")`` mesh its data-parallel dimension, after checking that
    the tensor-parallel dimension has size 1 (the networks are not tensor-parallel, and the data
    sampler splits batches over the data-parallel ranks only, so tensor-parallel ranks would train
    on identical data)."""
    if device_mesh.ndim == 1:
        return device_mesh
    names = device_mesh.mesh_dim_names or ()
    if set(names) != {DATA_PARALLEL, TENSOR_PARALLEL}:
        raise ConfigurationError(
            f"Expected a 1-D device mesh or ModelParallelStrategy's ({DATA_PARALLEL!r}, {TENSOR_PARALLEL!r}) "
            f"mesh, got dimensions {names or device_mesh.ndim}."
        )
    tensor_parallel = device_mesh[TENSOR_PARALLEL].size()
    if tensor_parallel > 1:
        raise ConfigurationError(
            f"The networks are sharded with FSDP2 only (no tensor parallelism), but the device mesh has "
            f"tensor_parallel_size={tensor_parallel}: those ranks would get identical batches. Use "
            "ModelParallelStrategy(data_parallel_size=<devices × num_nodes>, tensor_parallel_size=1)."
        )
    return device_mesh[DATA_PARALLEL]


def mixed_precision_policy(precision: str | None) -> MixedPrecisionPolicy:
    """FSDP2's precision for a Trainer ``precision`` flag: for ``"bf16-mixed"`` the all-gathered
    parameters (hence the all-gather traffic and the forward/backward compute) are bfloat16 while
    the sharded parameters, the optimizer state and the gradient reduce-scatter stay float32
    (``MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)``); otherwise FSDP2's
    default (everything in the parameters' dtype)."""
    if precision == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_transformer(
    module: nn.Module, blocks: Iterable[nn.Module], mesh: DeviceMesh, mp_policy: MixedPrecisionPolicy
) -> None:
    """``fully_shard`` each transformer block, then ``module`` (which keeps the remaining
    parameters: embeddings, norms, projections): one all-gather per block, so only one block's
    full weights are live at a time (FSDP2's recommended wrapping, as in torchtitan). Blocks free
    their gathered weights after forward; a root keeps them until its backward (FSDP2's default),
    so an EMA teacher, which runs no backward, needs :func:`reshard` before its update."""
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(module, mesh=mesh, mp_policy=mp_policy)


def reshard(module: nn.Module) -> None:
    """Free the weights a ``fully_shard``-ed root still holds gathered after a forward without
    backward and register its shards as its parameters again (``FSDPModule.reshard()``, not
    recursive: blocks reshard after their own forward); nothing for a module that is not sharded."""
    if is_sharded(module):
        module.reshard()


def is_sharded(module: nn.Module) -> bool:
    """Whether ``fully_shard`` was applied to ``module``."""
    return isinstance(module, FSDPModule)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: ``DTensor.full_tensor()`` (gathered from all ranks) for a ``DTensor``, else ``tensor``."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _layout(param: torch.Tensor) -> tuple:
    """What decides which elements of a parameter a rank holds: type, device mesh, placements, local shape."""
    if isinstance(param, DTensor):
        return "DTensor", param.device_mesh, tuple(param.placements), tuple(param.to_local().shape)
    return "Tensor", None, (), tuple(param.shape)


def _describe(layout: tuple) -> str:
    kind, mesh, placements, shape = layout
    return f"{kind} with local shape {shape}" + (f", placements {placements} on {mesh}" if mesh is not None else "")


def check_aligned_shards(teacher: nn.Module, student: nn.Module) -> None:
    """Raise a ``ValueError`` naming the first parameter whose shard differs between ``teacher``
    and ``student`` (type, device mesh, placements or local shape), or when their numbers of
    parameters differ: the shard-local EMA update is only correct when both hold the same slice of
    every parameter."""
    teacher_params, student_params = list(teacher.named_parameters()), list(student.named_parameters())
    if len(teacher_params) != len(student_params):
        raise ConfigurationError(
            f"The EMA teacher has {len(teacher_params)} parameters but its student has {len(student_params)}; "
            "the teacher must be a copy of the student (ssl_lightning.nn.frozen_copy)."
        )
    for (name, t_param), (s_name, s_param) in zip(teacher_params, student_params):
        if _layout(t_param) != _layout(s_param):
            raise ConfigurationError(
                f"The EMA teacher's parameter {name!r} is a {_describe(_layout(t_param))} but the student's "
                f"{s_name!r} is a {_describe(_layout(s_param))}; shard teacher and student alike (same fully_shard mesh "
                "and placements) so that the EMA update can run on local shards."
            )
