"""Export a JEPA encoder as a Hugging Face ``transformers`` ``IJepaModel`` folder.

The folder holds ``config.json``, ``model.safetensors`` (the Hub's tensor names, see
:mod:`.hf_ijepa`) and a model card ``README.md``; ``transformers.IJepaModel.from_pretrained(folder)``
loads it, and the mean of its ``last_hidden_state`` is our encoder's pooled features. transformers
is not a dependency: when it is installed, the export is loaded back with it and checked to give
our features before anything is written.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

import ssl_lightning
from ssl_lightning.errors import ConfigurationError
from ssl_lightning.evaluation.timm_weights import TimmEncoder
from ssl_lightning.interop.hf_ijepa import BLOCK_NAMES, hf_from_timm

HF_LAYER_NORM_EPS = 1e-6  # timm's ViT LayerNorms; transformers' default is 1e-12
MAPPABLE_TOP = {"pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
MAPPABLE_BLOCK = re.compile(
    r"blocks\.\d+\.(" + "|".join(map(re.escape, [*BLOCK_NAMES, "attn.qkv"])) + r")\.(weight|bias)$"
)


def check_mappable(timm_encoder: TimmEncoder, source: str) -> None:
    """Refuse an encoder with parts ``IJepaModel`` does not have (layer scale, qk-norm, a pre-norm...)."""
    extra = [k for k in timm_encoder.state_dict if k not in MAPPABLE_TOP and not MAPPABLE_BLOCK.match(k)]
    if extra:
        raise ConfigurationError(
            f"{source}: the encoder has tensors that transformers' IJepaModel has no place for (e.g. {extra[0]!r}): "
            "export it with --format timm."
        )


def hf_config(timm_encoder: TimmEncoder, source: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` of the ``IJepaModel`` that holds ``timm_encoder`` (every size explicit), with
    ``source`` (checkpoint, method, encoder) recorded under ``ssl_lightning``."""
    state = timm_encoder.state_dict
    width, channels, patch, _ = state["patch_embed.proj.weight"].shape
    kwargs = timm_encoder.model_kwargs
    return {
        "architectures": ["IJepaModel"],
        "model_type": "ijepa",
        "hidden_size": int(width),
        "num_hidden_layers": kwargs["depth"],
        "num_attention_heads": kwargs["num_heads"],
        "intermediate_size": int(state["blocks.0.mlp.fc1.weight"].shape[0]),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": HF_LAYER_NORM_EPS,
        "image_size": list(kwargs["img_size"]),
        "patch_size": int(patch),
        "num_channels": int(channels),
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "ssl_lightning": {**source, "version": ssl_lightning.__version__},
    }


@torch.no_grad()
def check_with_transformers(folder: Path, timm_encoder: TimmEncoder, image_size: int, in_chans: int) -> None:
    """Load the folder with transformers (when installed) and compare its pooled features with ours."""
    if importlib.util.find_spec("transformers") is None:
        return
    from transformers import IJepaModel

    model = IJepaModel.from_pretrained(folder).eval()
    images = torch.randn(2, in_chans, image_size, image_size, generator=torch.Generator().manual_seed(0))
    expected: Tensor = timm_encoder.reference(images)
    got = model(pixel_values=images).last_hidden_state.mean(dim=1)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise RuntimeError(
            f"Export self-check failed: transformers' IJepaModel from {folder} does not reproduce the encoder's "
            f"features (max |Δ| {(got - expected).abs().max():.2e}). Please report this."
        )


def write_hf_folder(
    folder: Path, timm_encoder: TimmEncoder, source: dict[str, Any], image_size: int, in_chans: int
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` and check them (see the module docstring)."""
    check_mappable(timm_encoder, source["checkpoint"])
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in hf_from_timm(timm_encoder.state_dict).items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config(timm_encoder, source), indent=2) + "\n")
    try:
        check_with_transformers(folder, timm_encoder, image_size, in_chans)
    except Exception:
        for name in ("model.safetensors", "config.json"):
            (folder / name).unlink(missing_ok=True)
        raise
    return folder
