"""Weights from other code bases: read a file or folder, recognise its layout, and rename its
tensors into the parts our methods are made of.

The parts (:class:`ForeignWeights`) use our names: ``encoder`` and ``target_encoder`` hold a timm
model's state dict (a ViT's with its ``pos_embed`` row per patch, or a ResNet's, which are
torchvision's names), ``predictor`` our :class:`~ssl_lightning.nn.JEPAPredictor`'s and ``projector``
our projector MLP's. Known layouts (:data:`LAYOUTS`):

- ``ijepa``: the ``.pth.tar`` of facebookresearch/ijepa and of amirbar/StoP (FlexPredict): the
  ``encoder``, ``predictor`` and ``target_encoder`` state dicts (DDP's ``module.`` prefixes
  removed) beside ``opt``, ``scaler``, ``epoch``... The encoders use timm's ViT names already; the
  predictor's ``predictor_embed``/``predictor_blocks``/``predictor_norm``/``predictor_proj`` become
  ``input_proj``/``blocks``/``norm``/``output_proj``.
- ``timm-vit``: a timm ViT state dict (timm's ``vit_*_gap_*.in1k_ijepa`` weights, our own timm export).
- ``hf-ijepa``: a transformers ``IJepaModel`` (a folder with ``config.json`` and
  ``model.safetensors`` or ``pytorch_model.bin``, or the weights file alone), see :mod:`.hf_ijepa`.
- ``torchvision-resnet``: a torchvision ResNet state dict (the released VICReg and Barlow Twins
  ``resnet50.pth``), or the official training checkpoints of both (``model`` with
  ``module.backbone.``/``module.projector.`` prefixes).
- ``ssl_lightning``: one of our Lightning checkpoints, to start a method from another's weights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor

from ssl_lightning.errors import CheckpointError, CheckpointNotFoundError
from ssl_lightning.evaluation.checkpoints import describe, first_line, load_tensors
from ssl_lightning.interop.hf_ijepa import is_hf_ijepa, timm_from_hf

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREDICTOR_NAMES = {
    "predictor_embed.": "input_proj.",
    "predictor_blocks.": "blocks.",
    "predictor_norm.": "norm.",
    "predictor_proj.": "output_proj.",
    "mask_token": "mask_token",
}


@dataclass
class ForeignWeights:
    """A file's tensors in our parts' names.

    Attributes:
        layout: the recognised layout (a key of :data:`LAYOUTS`).
        path: the file or folder read.
        parts: ``encoder``, ``target_encoder``, ``predictor``, ``projector`` → state dict (only those present).
        not_mapped: what the file holds that no part takes (optimizer state, classifier heads, ...).
        config: the architecture the file states (a Hugging Face ``config.json``), if any.
    """

    layout: str
    path: Path
    parts: dict[str, dict[str, Tensor]]
    not_mapped: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def read_file(path: Path) -> tuple[Any, dict[str, Any]]:
    """The content of a weights file or Hugging Face folder, and the ``config.json`` beside it (or ``{}``)."""
    if not path.exists():
        raise CheckpointNotFoundError(f"No weights at {path}: pass a checkpoint file or a Hugging Face model folder.")
    if path.is_dir():
        files = [path / name for name in HF_WEIGHT_FILES if (path / name).is_file()]
        if not (path / "config.json").is_file() or not files:
            raise CheckpointError(
                f"{path} is a folder but not a Hugging Face model: it needs config.json and one of {list(HF_WEIGHT_FILES)}."
            )
        path = files[0]
    if path.suffix != ".safetensors":
        return load_tensors(path), config_beside(path)
    try:
        return load_file(path), config_beside(path)
    except Exception as error:  # safetensors raises several types; the message is what matters
        raise CheckpointError(
            f"{path} cannot be read with safetensors ({first_line(error)}): pass a file of plain tensors (a state "
            "dict, a training checkpoint, safetensors)."
        ) from error


def config_beside(path: Path) -> dict[str, Any]:
    """The Hugging Face ``config.json`` in the folder of the weights file ``path``, or ``{}``."""
    config_file = path.parent / "config.json"
    return json.loads(config_file.read_text()) if config_file.is_file() else {}


def strip_prefix(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``state_dict`` without ``prefix`` on the keys that have it (all keys keep theirs otherwise)."""
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def tensors_only(content: Any) -> bool:
    return isinstance(content, dict) and bool(content) and all(isinstance(v, Tensor) for v in content.values())


def split_by_prefix(state_dict: dict[str, Tensor], prefixes: dict[str, str]) -> tuple[dict[str, dict], list[str]]:
    """Tensors whose key starts with a prefix of ``prefixes`` (prefix → part), grouped by part with the
    prefix removed, and the keys of the others."""
    parts: dict[str, dict[str, Tensor]] = {}
    rest = []
    for key, value in state_dict.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            rest.append(key)
        else:
            parts.setdefault(prefixes[prefix], {})[key[len(prefix) :]] = value
    return parts, rest


def rename_predictor(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The official predictor's tensors in :class:`~ssl_lightning.nn.JEPAPredictor`'s names. Its
    ``predictor_pos_embed`` is the fixed sin-cos table our predictor rebuilds, so it is returned
    under ``pos_embed`` for the loader to compare, not to load."""
    renamed, left = {}, []
    for key, value in state_dict.items():
        if key == "predictor_pos_embed":
            renamed["pos_embed"] = value
            continue
        old = next((name for name in PREDICTOR_NAMES if key.startswith(name)), None)
        if old is None:
            left.append(f"predictor.{key}")
        else:
            renamed[PREDICTOR_NAMES[old] + key[len(old) :]] = value
    return renamed, left


def official_ijepa(content: Any) -> ForeignWeights | None:
    if not isinstance(content, dict) or not isinstance(content.get("encoder"), dict):
        return None
    if not ({"predictor", "target_encoder"} & set(content)):
        return None
    parts = {"encoder": strip_prefix(content["encoder"], "module.")}
    not_mapped = [key for key in content if key not in ("encoder", "predictor", "target_encoder")]
    if isinstance(content.get("target_encoder"), dict):
        parts["target_encoder"] = strip_prefix(content["target_encoder"], "module.")
    if isinstance(content.get("predictor"), dict):
        parts["predictor"], left = rename_predictor(strip_prefix(content["predictor"], "module."))
        not_mapped += left
    return ForeignWeights("ijepa", Path(), parts, not_mapped)


def is_timm_vit(state_dict: dict[str, Tensor]) -> bool:
    return "patch_embed.proj.weight" in state_dict and any(re.match(r"blocks\.\d+\.attn\.qkv\.", k) for k in state_dict)


def timm_vit(content: Any) -> ForeignWeights | None:
    if not tensors_only(content):
        return None
    state_dict = strip_prefix(content, "module.")
    if not is_timm_vit(state_dict):
        return None
    unused = [key for key in state_dict if key == "cls_token" or key.startswith(("head.", "fc_norm."))]
    encoder = {key: value for key, value in state_dict.items() if key not in unused}
    return ForeignWeights("timm-vit", Path(), {"encoder": encoder}, unused)


def hf_ijepa(content: Any) -> ForeignWeights | None:
    if not tensors_only(content) or not is_hf_ijepa(content):
        return None
    encoder, left = timm_from_hf(content)
    return ForeignWeights("hf-ijepa", Path(), {"encoder": encoder}, left)


def is_torchvision_resnet(state_dict: dict[str, Tensor]) -> bool:
    return "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict


def torchvision_resnet(content: Any) -> ForeignWeights | None:
    """A torchvision ResNet state dict, or an official VICReg / Barlow Twins training checkpoint."""
    not_mapped: list[str] = []
    if isinstance(content, dict) and tensors_only(content.get("model")):
        not_mapped = [key for key in content if key != "model"]
        content = content["model"]
    if not tensors_only(content):
        return None
    state_dict = strip_prefix(content, "module.")
    parts, rest = split_by_prefix(state_dict, {"backbone.": "encoder", "projector.": "projector"})
    if "encoder" not in parts:  # a bare ResNet
        parts, rest = {"encoder": state_dict}, []
    encoder = parts["encoder"]
    if not is_torchvision_resnet(encoder):
        return None
    classifier = [key for key in encoder if key.startswith("fc.")]  # the ImageNet head, not the encoder
    parts["encoder"] = {key: value for key, value in encoder.items() if key not in classifier}
    return ForeignWeights("torchvision-resnet", Path(), parts, not_mapped + rest + classifier)


def our_checkpoint(content: Any) -> ForeignWeights | None:
    """One of our Lightning checkpoints: the encoders, predictor and projector of any of our methods."""
    if not isinstance(content, dict) or not tensors_only(content.get("state_dict")):
        return None
    state_dict = content["state_dict"]
    prefixes = {
        "backbone.": "encoder",
        "projector.": "projector",
        "context_encoder.vit.": "encoder",
        "target_encoder.vit.": "target_encoder",
        "predictor.": "predictor",
    }
    parts, rest = split_by_prefix(state_dict, prefixes)
    if not parts:
        return None
    not_mapped = rest + [key for key in content if key != "state_dict"]
    return ForeignWeights("ssl_lightning", Path(), parts, not_mapped)


LAYOUTS: dict[str, Callable[[Any], ForeignWeights | None]] = {
    "ssl_lightning": our_checkpoint,
    "ijepa": official_ijepa,
    "hf-ijepa": hf_ijepa,
    "timm-vit": timm_vit,
    "torchvision-resnet": torchvision_resnet,
}
"""Layout name → reader returning the parts, or ``None`` when the content is not of that layout."""

LAYOUT_DESCRIPTIONS = {
    "ssl_lightning": "an ssl_lightning .ckpt (state_dict with backbone./context_encoder./predictor. ...)",
    "ijepa": "official I-JEPA / StoP .pth.tar (encoder, predictor, target_encoder, opt, epoch)",
    "hf-ijepa": "Hugging Face IJepaModel (embeddings.patch_embeddings..., encoder.layer.N...)",
    "timm-vit": "timm ViT state dict (patch_embed.proj..., blocks.N.attn.qkv..., pos_embed)",
    "torchvision-resnet": "torchvision ResNet state dict (conv1, layer1...), or VICReg/Barlow Twins' "
    "training checkpoint (model: module.backbone..., module.projector...)",
}


def read_foreign_weights(source: str | Path) -> ForeignWeights:
    """Read ``source`` and rename its tensors into our parts (:func:`foreign_weights`).

    Raises:
        CheckpointNotFoundError: nothing at ``source``.
        CheckpointError: the file cannot be read, or its layout is none of :data:`LAYOUTS`.
    """
    path = Path(source).expanduser()
    content, config = read_file(path)
    return foreign_weights(content, config, path)


def foreign_weights(content: Any, config: dict[str, Any], path: Path) -> ForeignWeights:
    """The content of a file, already read, in our parts' names; a :class:`CheckpointError` listing
    its top-level keys and the layouts we know when it is of none of :data:`LAYOUTS`."""
    for reader in LAYOUTS.values():
        found = reader(content)
        if found is not None:
            found.path, found.config = path, config
            return found
    known = "; ".join(f"{name}: {text}" for name, text in LAYOUT_DESCRIPTIONS.items())
    raise CheckpointError(f"{path} is of no layout we know: it holds {describe(content)}. Known layouts: {known}.")
