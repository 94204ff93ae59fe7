"""The method a foreign checkpoint fits, read from its tensors' shapes (and a Hugging Face
``config.json``), so that evaluation and export take official weights like our own checkpoints.

ViTs: width, depth, patch size, channels and image size (from the patches of ``pos_embed``) come
from the shapes; the number of heads, which no shape shows, from ``config.json`` or the standard
ViT of that width (:data:`VIT_HEADS`). ResNets: depth and block type from the blocks, widths,
channels and stem from the convolutions. A projector found beside a ResNet picks VICReg (biases)
or Barlow Twins (none).
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from ssl_lightning.errors import CheckpointError
from ssl_lightning.interop.layouts import ForeignWeights

VIT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
"""Heads of the standard ViTs by width: Ti, S, B, L, H, g (I-JEPA's ViT-g/16), G."""
RESNETS = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
    (True, (3, 4, 23, 3)): "resnet101",
    (True, (3, 8, 36, 3)): "resnet152",
}
"""(bottleneck blocks, blocks per stage) → timm name."""
STANDARD_CHANNELS = (64, 128, 256, 512)
DEFAULT_RESNET_IMAGE_SIZE = 224
DEFAULT_SMALL_STEM_IMAGE_SIZE = 32


def count_indexed(state_dict: dict[str, Tensor], prefix: str) -> int:
    """How many ``<prefix><i>.`` groups ``state_dict`` has (blocks, layers)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def vit_arguments(encoder: dict[str, Tensor], config: dict[str, Any], path) -> dict[str, Any]:
    """:class:`~ssl_lightning.methods.IJEPA` arguments building the encoder these ViT tensors belong to."""
    width, in_chans, patch, _ = encoder["patch_embed.proj.weight"].shape
    if "pos_embed" in encoder:
        grid = round(encoder["pos_embed"].shape[-2] ** 0.5)
        image_size = grid * patch
    else:
        image_size = config.get("image_size")
    heads = config.get("num_attention_heads", VIT_HEADS.get(width))
    if heads is None or image_size is None:
        raise CheckpointError(
            f"{path}: a ViT of width {width} whose {'heads' if heads is None else 'image size'} the file does not say. "
            "Configure the method yourself and pass the file as init_from."
        )
    return {
        "backbone": None,
        "image_size": int(image_size),
        "in_chans": int(in_chans),
        "patch_size": int(patch),
        "embed_dim": int(width),
        "depth": count_indexed(encoder, "blocks."),
        "num_heads": int(heads),
        "backbone_kwargs": {
            "mlp_ratio": encoder["blocks.0.mlp.fc1.weight"].shape[0] / width,
            "qkv_bias": "blocks.0.attn.qkv.bias" in encoder,
        },
    }


def predictor_arguments(predictor: dict[str, Tensor]) -> dict[str, Any]:
    return {"pred_dim": int(predictor["input_proj.weight"].shape[0]), "pred_depth": count_indexed(predictor, "blocks.")}


def resnet_arguments(encoder: dict[str, Tensor], path) -> dict[str, Any]:
    """Joint-embedding method arguments building the timm ResNet these torchvision-named tensors belong to."""
    bottleneck = "layer1.0.conv3.weight" in encoder
    blocks = tuple(count_indexed(encoder, f"layer{stage}.") for stage in range(1, 5))
    name = RESNETS.get((bottleneck, blocks))
    last_conv = "conv3" if bottleneck else "conv2"
    outputs = [encoder[f"layer{stage}.0.{last_conv}.weight"].shape[0] for stage in range(1, 5)]
    channels = [out // 4 for out in outputs] if bottleneck else outputs
    inner = [encoder[f"layer{stage}.0.conv1.weight"].shape[0] for stage in range(1, 5)]
    if name is None or inner != channels:
        raise CheckpointError(
            f"{path}: a ResNet with {blocks} {'bottleneck' if bottleneck else 'basic'} blocks per stage and inner widths "
            f"{inner}: not a ResNet-18/34/50/101/152 of plain width. Configure the method yourself and pass init_from."
        )
    stem = encoder["conv1.weight"]
    kwargs: dict[str, Any] = {}
    if tuple(channels) != STANDARD_CHANNELS:
        kwargs["channels"] = channels
    if stem.shape[0] != 64:
        kwargs["stem_width"] = int(stem.shape[0])
    small_stem = stem.shape[-1] == 3
    return {
        "backbone": name,
        "in_chans": int(stem.shape[1]),
        "image_size": DEFAULT_SMALL_STEM_IMAGE_SIZE if small_stem else DEFAULT_RESNET_IMAGE_SIZE,
        "small_image_stem": bool(small_stem),
        "backbone_kwargs": kwargs or None,
    }


def projector_arguments(projector: dict[str, Tensor]) -> tuple[str, dict[str, Any]]:
    """The method (VICReg: biased hidden layers; Barlow Twins: none) and projector arguments of a projector MLP."""
    linear = sorted(int(key.split(".")[0]) for key in projector if key.endswith("weight") and projector[key].ndim == 2)
    dims = [int(projector[f"{index}.weight"].shape[0]) for index in linear]
    method = "VICReg" if f"{linear[0]}.bias" in projector else "BarlowTwins"
    return method, {"projector_dims": dims}


def infer_method(weights: ForeignWeights, method: str | None) -> tuple[str, dict[str, Any]]:
    """The method name and ``__init__`` arguments that hold ``weights`` (``method`` chooses among
    those of the same shape: IJEPA or FlexPredict, VICReg, BarlowTwins or LeJEPA)."""
    encoder = weights.parts["encoder"]
    if "patch_embed.proj.weight" in encoder:
        arguments = vit_arguments(encoder, weights.config, weights.path)
        if "predictor" in weights.parts:
            arguments |= predictor_arguments(weights.parts["predictor"])
        return method or "IJEPA", arguments
    arguments = resnet_arguments(encoder, weights.path)
    found = "VICReg"
    if "projector" in weights.parts:
        found, projector = projector_arguments(weights.parts["projector"])
        if method in (None, found):
            arguments |= projector
    return method or found, arguments
