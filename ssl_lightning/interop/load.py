"""Load weights of another code base (:mod:`.layouts`) into one of our methods, all or nothing.

A method names its parts with :meth:`~ssl_lightning.methods.base.SSLMethod.weight_parts`
(``encoder``, ``target_encoder``, ``predictor``, ``projector`` → module). Every part the file has
and the method has is checked first (every tensor present, every shape equal, the fixed sin-cos
positions equal to ours), and only then copied, so a mismatch changes nothing. The
:class:`ImportReport` says what was loaded, what was filled in and what the file held that
nothing took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ssl_lightning.errors import CheckpointError
from ssl_lightning.interop.layouts import ForeignWeights, read_foreign_weights
from ssl_lightning.nn.vit import MaskedViTEncoder

FIXED_POSITIONS_ATOL = 1e-4


@dataclass
class ImportReport:
    """What :func:`load_weights` did.

    Attributes:
        layout: the file's layout (see :data:`~ssl_lightning.interop.layouts.LAYOUTS`).
        path: the file or folder read.
        loaded: part → number of tensors copied.
        filled: part → how it was set without weights of its own in the file.
        not_mapped: what the file holds that no part of the method took.
    """

    layout: str
    path: Path
    loaded: dict[str, int] = field(default_factory=dict)
    filled: dict[str, str] = field(default_factory=dict)
    not_mapped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"Loaded {self.path} (layout {self.layout!r}):"]
        lines += [f"  {part}: {count} tensors" for part, count in self.loaded.items()]
        lines += [f"  {part}: {how}" for part, how in self.filled.items()]
        if self.not_mapped:
            shown = ", ".join(self.not_mapped[:8]) + (
                f", ... ({len(self.not_mapped)} in all)" if len(self.not_mapped) > 8 else ""
            )
            lines.append(f"  not mapped: {shown}")
        return "\n".join(lines)


def state_module(module: nn.Module) -> nn.Module:
    """The module whose state dict a part's tensors are named after (a JEPA encoder's timm ViT)."""
    return module.vit if isinstance(module, MaskedViTEncoder) else module


def check_fixed_positions(module: nn.Module, positions: Tensor, part: str, path: Path) -> None:
    """A file's ``pos_embed`` must be the fixed sin-cos table our module rebuilds (non-persistent)."""
    ours = getattr(module, "pos_embed", None)
    if not isinstance(ours, Tensor):
        raise CheckpointError(
            f"{path}: the file's {part} has a pos_embed, which the configured {part} has no place for."
        )
    positions = positions.reshape(-1, positions.shape[-1])
    if positions.shape != ours.shape:
        raise CheckpointError(
            f"{path}: the {part}'s pos_embed is {tuple(positions.shape)} in the file but {tuple(ours.shape)} in the "
            "configured model (patches × width): set image_size and patch_size to the checkpoint's."
        )
    if not torch.allclose(positions.to(ours), ours, atol=FIXED_POSITIONS_ATOL):
        raise CheckpointError(
            f"{path}: the {part}'s pos_embed is not the fixed 2-D sin-cos table our {part} uses (learned positions?), "
            "so it cannot be mapped."
        )


def check_part(module: nn.Module, tensors: dict[str, Tensor], part: str, path: Path, ignored: set[str]) -> None:
    """Every tensor of ``module`` present in ``tensors`` with its shape, and nothing else there."""
    expected = state_module(module).state_dict()
    where = f"{path}: the configured {part} ({type(module).__name__}) does not match the file's"
    for key, value in expected.items():
        if key not in tensors:
            raise CheckpointError(
                f"{where}: the file has no {key!r}. Configure the checkpoint's architecture "
                f"(the file's {part} has {len(tensors)} tensors, the model's {len(expected)})."
            )
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{where}: first mismatching tensor {key!r} is {tuple(tensors[key].shape)} in the file and "
                f"{tuple(value.shape)} in the model. Configure the checkpoint's architecture (width, depth, patch size, "
                "channels)."
            )
    extra = sorted(set(tensors) - set(expected) - ignored - {"pos_embed"})
    if extra:
        raise CheckpointError(
            f"{where}: the file has {len(extra)} tensors the model has no place for, e.g. {extra[0]!r}. "
            "Configure the checkpoint's architecture (depth, qkv_bias, layer scale...)."
        )


def ignored_tensors(module: nn.Module, tensors: dict[str, Tensor]) -> set[str]:
    """Tensors of a part the module rightly lacks: the mask token of a StoP predictor, which
    replaces it with noise through the tied projection (FlexPredict)."""
    has_mask_token = getattr(module, "mask_token", None) is not None
    return {"mask_token"} if "mask_token" in tensors and not has_mask_token else set()


def load_into(parts: dict[str, nn.Module], weights: ForeignWeights) -> ImportReport:
    """Check every part, then copy; see the module docstring."""
    report = ImportReport(weights.layout, weights.path, not_mapped=list(weights.not_mapped))
    taken = {part: tensors for part, tensors in weights.parts.items() if part in parts}
    report.not_mapped += [f"{part} (the method has none)" for part in weights.parts if part not in parts]
    if "encoder" not in taken:
        raise CheckpointError(
            f"{weights.path} ({weights.layout}) has no encoder for this method (the file has: {', '.join(weights.parts)})."
        )
    if "target_encoder" in parts and "target_encoder" not in taken:
        taken["target_encoder"] = taken["encoder"]
        report.filled["target_encoder"] = "a copy of the encoder (the file has no target encoder)"
    ignored = {part: ignored_tensors(parts[part], tensors) for part, tensors in taken.items()}
    for part, tensors in taken.items():
        check_part(parts[part], tensors, part, weights.path, ignored[part])
        if "pos_embed" in tensors:
            check_fixed_positions(parts[part], tensors["pos_embed"], part, weights.path)
    for part, tensors in taken.items():
        module = state_module(parts[part])
        keys = module.state_dict().keys()
        module.load_state_dict({key: tensors[key] for key in keys}, strict=True)
        report.loaded[part] = len(keys)
        report.not_mapped += [f"{part}.{key}" for key in sorted(ignored[part])]
    for part in parts:
        if part not in taken:
            report.filled[part] = "kept at its initialisation (not in the file)"
    return report


def load_weights(parts: dict[str, nn.Module], source: str | Path) -> ImportReport:
    """Read ``source`` (any layout of :mod:`.layouts`) and load it into ``parts``, all or nothing.

    Raises:
        CheckpointNotFoundError: nothing at ``source``.
        CheckpointError: an unknown layout, no encoder, or a tensor missing or of another shape than
            the configured architecture's (named, with both shapes).
    """
    return load_into(parts, read_foreign_weights(source))
