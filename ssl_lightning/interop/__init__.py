"""Weights in from other code bases (official I-JEPA/StoP, timm, Hugging Face, torchvision ResNets)
and out to Hugging Face ``transformers``; see docs/interop.md."""

from ssl_lightning.interop.layouts import LAYOUTS, ForeignWeights, read_foreign_weights
from ssl_lightning.interop.load import ImportReport, load_weights

__all__ = ["LAYOUTS", "ForeignWeights", "ImportReport", "load_weights", "read_foreign_weights"]
