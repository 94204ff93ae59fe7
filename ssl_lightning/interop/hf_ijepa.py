"""The Hugging Face ``transformers`` I-JEPA layout (``IJepaModel``) and timm's ViT layout, both ways.

``IJepaModel`` is a pre-norm ViT without class token whose ``position_embeddings`` hold one row per
patch: the I-JEPA encoder exactly, with the attention's ``qkv`` projection split into ``query``,
``key`` and ``value`` and other names. Two spellings of the names exist: the one of the checkpoints
on the Hub (``facebook/ijepa_vith14_1k`` etc., transformers 4) and the one of transformers 5's
modules (which renames the former on load). We read both and write the Hub's, which both versions load.

Config defaults that differ from our encoders are written explicitly: ``layer_norm_eps`` (1e-12 in
transformers, 1e-6 in timm's ViTs) and ``intermediate_size``.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from ssl_lightning.errors import CheckpointError

# timm name (after "blocks.<i>.") → Hub name (after "encoder.layer.<i>."), for everything but qkv.
BLOCK_NAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
QKV = ("query", "key", "value")
TOP_NAMES = {
    "patch_embed.proj": "embeddings.patch_embeddings.projection",
    "norm": "layernorm",
}
# transformers 5's attention projections → the Hub's names.
V5_QKV = {"q": "query", "k": "key", "v": "value"}
HF_MARKER = "embeddings.patch_embeddings.projection.weight"
"""A key every I-JEPA checkpoint of transformers has (after an ``ijepa.`` prefix, if any)."""


def is_hf_ijepa(state_dict: dict[str, Tensor]) -> bool:
    return any(key == HF_MARKER or key.endswith("." + HF_MARKER) for key in state_dict)


def hub_names(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` with transformers 5 names, or a task model's ``ijepa.`` prefix, in the Hub's spelling."""
    renamed = {}
    for key, value in state_dict.items():
        key = key.removeprefix("ijepa.")
        key = re.sub(r"^layers\.", "encoder.layer.", key)
        key = re.sub(r"\.attention\.([qkv])_proj\.", lambda m: f".attention.attention.{V5_QKV[m.group(1)]}.", key)
        key = key.replace(".attention.o_proj.", ".attention.output.dense.")
        key = key.replace(".mlp.fc1.", ".intermediate.dense.").replace(".mlp.fc2.", ".output.dense.")
        renamed[key] = value
    return renamed


def timm_from_hf(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """An ``IJepaModel`` state dict (either spelling) as a timm ViT state dict with ``pos_embed``.

    Returns the timm state dict and the keys that have no place in it (the pooler, a classifier,
    the mask token).
    """
    hub = hub_names(state_dict)
    timm_state: dict[str, Tensor] = {}
    if "embeddings.position_embeddings" in hub:
        timm_state["pos_embed"] = hub.pop("embeddings.position_embeddings")
    for key in list(hub):
        for timm_name, hub_name in TOP_NAMES.items():
            if key.startswith(hub_name + "."):
                timm_state[timm_name + key[len(hub_name) :]] = hub.pop(key)
    layers = sorted({int(m.group(1)) for key in hub if (m := re.match(r"encoder\.layer\.(\d+)\.", key))})
    for i in layers:
        hub_prefix, timm_prefix = f"encoder.layer.{i}.", f"blocks.{i}."
        for timm_name, hub_name in BLOCK_NAMES.items():
            for leaf in ("weight", "bias"):
                key = f"{hub_prefix}{hub_name}.{leaf}"
                if key in hub:
                    timm_state[f"{timm_prefix}{timm_name}.{leaf}"] = hub.pop(key)
        for leaf in ("weight", "bias"):
            parts = [hub.pop(f"{hub_prefix}attention.attention.{name}.{leaf}", None) for name in QKV]
            if all(part is not None for part in parts):
                timm_state[f"{timm_prefix}attn.qkv.{leaf}"] = torch.cat(parts)
            elif any(part is not None for part in parts):
                raise CheckpointError(f"The Hugging Face checkpoint has only some of query/key/value in layer {i}.")
    return timm_state, sorted(hub)


def hf_from_timm(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A timm ViT state dict (with ``pos_embed``, no class token) in the Hub's ``IJepaModel`` names."""
    hub: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key == "pos_embed":
            hub["embeddings.position_embeddings"] = value
            continue
        block = re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if block:
            i, name, leaf = block.groups()
            prefix = f"encoder.layer.{i}."
            if name == "attn.qkv":
                for part_name, part in zip(QKV, value.chunk(3)):
                    hub[f"{prefix}attention.attention.{part_name}.{leaf}"] = part
            else:
                hub[f"{prefix}{BLOCK_NAMES[name]}.{leaf}"] = value
            continue
        name, leaf = key.rsplit(".", 1)
        hub[f"{TOP_NAMES[name]}.{leaf}"] = value
    return hub
