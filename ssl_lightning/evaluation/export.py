"""Export a pretrained encoder as timm weights (``.safetensors``) with a JSON sidecar naming the timm
architecture and its arguments, or as a Hugging Face ``IJepaModel`` folder, with a model card; and
load a timm export back.

The weights load into the named timm model with no key surgery. ResNets: timm's ResNet keys are
torchvision's, so ``torchvision.models.resnet50()`` (with ``fc = nn.Identity()``) loads them too,
when the widths are the standard ones. Encoders with the small-image stem (3×3 stride-1 ``conv1``,
no max-pool) need that stem applied before loading (``"small_image_stem": true`` in the sidecar;
:func:`load_encoder` does it), and so do plain-stem ResNets whose ``stem_width`` is not timm's 64
(:func:`~ssl_lightning.nn.backbone.apply_stem_width`: timm reads that width only for deep stems);
all others also load with
``timm.create_model(architecture, pretrained=True, pretrained_cfg_overlay={"file": path}, **model_kwargs)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import ssl_lightning
from ssl_lightning.errors import CheckpointError, CheckpointNotFoundError, ConfigurationError
from ssl_lightning.evaluation.pretrained import JEPA, Pretrained, load_pretrained
from ssl_lightning.evaluation.timm_weights import TimmEncoder, create_timm_model
from ssl_lightning.interop.hf_export import write_hf_folder
from ssl_lightning.interop.model_card import model_card, run_record, write_card

SIDECAR_FORMAT = "ssl_lightning.encoder/1"
ExportFormat = Literal["timm", "hf"]
EXPORT_FORMATS = ("timm", "hf")


class ArchitectureMismatchError(CheckpointError):
    """The encoder in a checkpoint or export is not the architecture the caller asked for."""


def sidecar_path(weights: str | Path) -> Path:
    """The JSON sidecar next to an exported ``.safetensors`` file (same name, ``.json``)."""
    return Path(weights).expanduser().with_suffix(".json")


def check_architecture(found: str, expected: str | None, source: Path) -> None:
    if expected is not None and expected != found:
        raise ArchitectureMismatchError(
            f"{source} holds a {found!r} encoder, not {expected!r}. Export to (or load into) {found!r}, "
            "or pass the checkpoint of a run that trained the architecture you want."
        )


@torch.no_grad()
def check_same_features(timm_encoder: TimmEncoder, model: nn.Module, image_size: int) -> None:
    """Raise unless ``model`` reproduces the pretrained encoder's features on a random image batch."""
    in_chans = timm_encoder.model_kwargs["in_chans"]
    images = torch.randn(2, in_chans, image_size, image_size, generator=torch.Generator().manual_seed(0))
    expected, got = timm_encoder.reference(images), model(images)
    if expected.shape != got.shape or not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise RuntimeError(
            f"Export self-check failed: the rebuilt timm {timm_encoder.architecture!r} does not reproduce the "
            f"pretrained encoder's features (shapes {tuple(expected.shape)} / {tuple(got.shape)}). Please report this."
        )


def export_encoder(
    checkpoint: str | Path,
    output: str | Path,
    method: str | None = None,
    encoder: str | None = None,
    architecture: str | None = None,
    format: ExportFormat = "timm",
) -> Path:
    """Write a pretraining checkpoint's encoder as timm weights plus a JSON sidecar, or as a Hugging
    Face ``IJepaModel`` folder, with a model card ``README.md`` beside it.

    ``format="timm"``: the weights go to ``output`` (``.safetensors``), the sidecar to the same name
    with ``.json``: ``architecture`` and ``model_kwargs`` (the ``timm.create_model`` call),
    ``small_image_stem``, ``feature_dim``, ``image_size`` and the source (checkpoint, method,
    encoder). Before writing, the timm model is rebuilt from the sidecar, loaded strictly and
    checked to give the same features as the pretrained encoder. JEPA encoders become a timm ViT
    without class token whose fixed sin-cos positions are its ``pos_embed`` and whose ``forward``
    returns the average-pooled tokens; blockwise checkpoints export the whole ResNet (the per-block
    heads are not part of it).

    ``format="hf"`` (ViT encoders only): ``output`` is a folder that gets ``config.json`` (the
    chosen encoder recorded under ``ssl_lightning``) and ``model.safetensors``, which
    ``transformers.IJepaModel.from_pretrained(output)`` loads; the mean of its
    ``last_hidden_state`` is our pooled features (:mod:`ssl_lightning.interop.hf_export`).

    The model card (:mod:`ssl_lightning.interop.model_card`) goes to ``README.md`` in the output's
    folder, or to ``<name>.README.md`` when a README of yours is already there.

    Args:
        checkpoint: the pretraining ``.ckpt`` (or foreign weights, see
            :func:`~ssl_lightning.evaluation.load_pretrained`).
        output: the ``.safetensors`` file (timm) or the folder (hf) to write; folders are created.
        method: the method the checkpoint must hold (e.g. ``"VICReg"``); ``None`` accepts any.
        encoder: JEPA methods: ``"target"`` (default, the one the paper evaluates) or ``"context"``.
        architecture: the timm architecture you expect (e.g. ``"resnet50"``); ``None`` accepts any.
        format: ``"timm"`` or ``"hf"``.

    Returns:
        The path of the weights file (timm) or of the folder (hf).

    Raises:
        FileNotFoundError, CheckpointError: see :func:`~ssl_lightning.evaluation.load_pretrained`.
        ArchitectureMismatchError: the checkpoint's encoder is not ``architecture``.
        ConfigurationError: a bad output name, or ``format="hf"`` for an encoder that is not a ViT.
    """
    output = Path(output).expanduser()
    if format not in EXPORT_FORMATS:
        raise ConfigurationError(f"format must be one of {list(EXPORT_FORMATS)}, got {format!r}")
    if format == "timm" and output.suffix != ".safetensors":
        raise ConfigurationError(f"The timm export is a safetensors file: name it *.safetensors, got {output}")
    if format == "hf" and output.suffix:
        raise ConfigurationError(
            f"The Hugging Face export is a folder: give a folder name without suffix, got {output}"
        )
    pretrained = load_pretrained(checkpoint, method)
    if format == "hf" and pretrained.spec is not JEPA:
        raise ConfigurationError(
            f"{pretrained.path} holds a {pretrained.name} checkpoint, whose encoder is not a ViT: transformers' "
            "IJepaModel holds I-JEPA/FlexPredict ViT encoders only. Export it with format='timm' (--format timm)."
        )
    timm_encoder = pretrained.as_timm(encoder)
    check_architecture(timm_encoder.architecture, architecture, pretrained.path)
    source = {
        "checkpoint": str(pretrained.path.resolve()),
        "method": pretrained.name,
        "encoder": pretrained.encoder_name(encoder),
    }
    if format == "hf":
        write_hf_folder(output, timm_encoder, source, pretrained.image_size, pretrained.in_chans)
        snippet = f'from transformers import IJepaModel\nmodel = IJepaModel.from_pretrained("{output}")'
        card_folder, stem = output, output.name
    else:
        write_timm_export(output, timm_encoder, pretrained, source)
        snippet = (
            f'from ssl_lightning.evaluation import load_encoder\nencoder = load_encoder("{output}")'
            "  # a timm model, in eval mode"
        )
        card_folder, stem = output.parent, output.stem
    facts = {
        "Method": f"{pretrained.name}, {source['encoder']} encoder",
        "Architecture": f"{timm_encoder.architecture} {json.dumps(timm_encoder.model_kwargs)}",
        "Input": f"{pretrained.image_size} px images of {pretrained.in_chans} channel(s)",
        "Exported from": source["checkpoint"],
    }
    card = model_card(
        f"{pretrained.name} encoder",
        facts,
        run_record(pretrained.path, pretrained.epoch, pretrained.global_step),
        snippet,
    )
    write_card(card_folder, stem, card)
    return output


def write_timm_export(output: Path, timm_encoder: TimmEncoder, pretrained: Pretrained, source: dict[str, Any]) -> None:
    """The timm weights and their sidecar, after checking that the rebuilt timm model reproduces the features."""
    model = create_timm_model(timm_encoder.architecture, timm_encoder.model_kwargs, timm_encoder.small_image_stem)
    model.load_state_dict(timm_encoder.state_dict, strict=True)
    check_same_features(timm_encoder, model.eval(), pretrained.image_size)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "library": "timm",
        "architecture": timm_encoder.architecture,
        "model_kwargs": timm_encoder.model_kwargs,
        "small_image_stem": timm_encoder.small_image_stem,
        "feature_dim": model.num_features,
        "image_size": pretrained.image_size,
        "weights": output.name,
        "source": source,
        "ssl_lightning_version": ssl_lightning.__version__,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().clone().contiguous() for key, value in timm_encoder.state_dict.items()}
    save_file(tensors, output, metadata={"format": "pt"})
    sidecar_path(output).write_text(json.dumps(sidecar, indent=2) + "\n")


def read_sidecar(weights: str | Path) -> dict[str, Any]:
    """The sidecar of an exported encoder, with clear errors for missing or foreign files."""
    weights = Path(weights).expanduser()
    sidecar = sidecar_path(weights)
    if not weights.with_suffix(".safetensors").is_file() or not sidecar.is_file():
        raise CheckpointNotFoundError(
            f"No exported encoder at {weights}: export_encoder writes <name>.safetensors and <name>.json side by side."
        )
    content = json.loads(sidecar.read_text())
    if content.get("format") != SIDECAR_FORMAT:
        raise CheckpointError(f"{sidecar} is not an ssl_lightning encoder sidecar (format {content.get('format')!r}).")
    return content


def load_encoder(weights: str | Path, architecture: str | None = None) -> nn.Module:
    """The timm model of an export (``.safetensors`` or its ``.json`` sidecar), weights loaded, in eval mode.

    Args:
        weights: the exported ``.safetensors`` file (or its sidecar).
        architecture: the timm architecture you expect; ``None`` accepts any.

    Raises:
        FileNotFoundError: the weights or the sidecar are missing.
        ArchitectureMismatchError: the export is not ``architecture``.
    """
    sidecar = read_sidecar(weights)
    weights = Path(weights).expanduser().with_suffix(".safetensors")
    check_architecture(sidecar["architecture"], architecture, weights)
    model = create_timm_model(sidecar["architecture"], sidecar["model_kwargs"], sidecar["small_image_stem"])
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval()
