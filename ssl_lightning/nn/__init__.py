"""Neural-network building blocks shared by the methods."""

from ssl_lightning.nn.backbone import create_backbone
from ssl_lightning.nn.blockwise import add_feature_noise, stage_head
from ssl_lightning.nn.ema import ema_update_, frozen_copy, momentum_at
from ssl_lightning.nn.pos_embed import sincos_pos_embed_2d
from ssl_lightning.nn.predictor import JEPAPredictor, StochasticPositionPredictor
from ssl_lightning.nn.projector import projector_mlp
from ssl_lightning.nn.resnet_stages import resnet_stages, stage_channels
from ssl_lightning.nn.schedules import cosine_ramp, linear_ramp, warmup_cosine
from ssl_lightning.nn.vit import JEPA_VIT_ARGS, MaskedViTEncoder, gather_tokens

__all__ = [
    "JEPA_VIT_ARGS",
    "JEPAPredictor",
    "MaskedViTEncoder",
    "StochasticPositionPredictor",
    "add_feature_noise",
    "cosine_ramp",
    "create_backbone",
    "ema_update_",
    "frozen_copy",
    "gather_tokens",
    "linear_ramp",
    "momentum_at",
    "projector_mlp",
    "resnet_stages",
    "sincos_pos_embed_2d",
    "stage_channels",
    "stage_head",
    "warmup_cosine",
]
