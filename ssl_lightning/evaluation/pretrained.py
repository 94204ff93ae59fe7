"""Pretrained methods from checkpoints: which method a checkpoint holds, that method rebuilt with its
weights, and its encoders for evaluation and export.

The dispatch is the :data:`METHODS` table, keyed on the method's class name: the class path that
LightningCLI saves in the checkpoint's ``hyper_parameters`` (``_class_path``) names it; checkpoints
saved without the CLI are recognised by their top-level weight names and their hyper-parameters.
A method is rebuilt from its saved ``__init__`` arguments, its weights are loaded strictly, and
its :class:`MethodEncoders` entry takes the encoders out. A new method plugs in with one entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

import ssl_lightning.methods
from ssl_lightning.errors import CheckpointError, ConfigurationError
from ssl_lightning.evaluation.checkpoints import checkpoint_not_found, is_lightning_checkpoint, load_tensors
from ssl_lightning.evaluation.features import ViTFeatures
from ssl_lightning.evaluation.timm_weights import TimmEncoder, backbone_as_timm, vit_as_timm
from ssl_lightning.interop.architecture import infer_method
from ssl_lightning.interop.layouts import ForeignWeights, config_beside, foreign_weights, read_foreign_weights
from ssl_lightning.interop.load import load_into
from ssl_lightning.methods.base import SSLMethod


def backbone_features(method: SSLMethod, encoder: str, pool: str | None, stage: int | None) -> nn.Module:
    return method.backbone


def vit_features(method: SSLMethod, encoder: str, pool: str | None, stage: int | None) -> nn.Module:
    return ViTFeatures(getattr(method, f"{encoder}_encoder"), pool or "avg")


def block_features(method: SSLMethod, encoder: str, pool: str | None, stage: int | None) -> nn.Module:
    """Block ``stage``'s representation: stages 1..``stage`` of the ResNet, then that block's head."""
    last = stage or len(method.heads)
    return nn.Sequential(*method.stages[:last], method.heads[last - 1])


@dataclass(frozen=True)
class MethodEncoders:
    """How to take the encoders out of one method.

    Attributes:
        modules: top-level names of the method's weights (how a checkpoint without class path is recognised).
        features: ``(method, encoder, pool, stage) → module`` mapping images to ``(B, D)`` features.
        as_timm: ``(method, hparams, encoder) → TimmEncoder``, the encoder as a plain timm model.
        encoders: the encoders to choose from; the first is the default.
        pools: the pooling choices of ``features`` (none when empty).
        stages: the number of stages a representation can be taken from (none when 0).
    """

    modules: frozenset[str]
    features: Callable[[SSLMethod, str, str | None, int | None], nn.Module]
    as_timm: Callable[[SSLMethod, dict[str, Any], str], TimmEncoder]
    encoders: tuple[str, ...] = ("backbone",)
    pools: tuple[str, ...] = ()
    stages: int = 0


JOINT_EMBEDDING = MethodEncoders(frozenset({"backbone", "projector"}), backbone_features, backbone_as_timm)
JEPA = MethodEncoders(
    frozenset({"context_encoder", "target_encoder", "predictor"}),
    vit_features,
    vit_as_timm,
    encoders=("target", "context"),
    pools=("avg", "last4"),
)
BLOCKWISE = MethodEncoders(frozenset({"backbone", "heads", "projectors"}), block_features, backbone_as_timm, stages=4)

METHODS: dict[str, MethodEncoders] = {
    "VICReg": JOINT_EMBEDDING,
    "BarlowTwins": JOINT_EMBEDDING,
    "LeJEPA": JOINT_EMBEDDING,
    "IJEPA": JEPA,
    "FlexPredict": JEPA,
    "BlockwiseBarlowTwins": BLOCKWISE,
}
"""Method class name (in :mod:`ssl_lightning.methods`) → how to take its encoders out."""


def representation(method: SSLMethod, trainable: bool = False) -> nn.Module:
    """The module mapping images to ``method``'s representation, the one its checkpoints are evaluated
    and exported with (JEPA: the target encoder, average-pooled; blockwise: block 4), or with
    ``trainable`` the first of its encoders whose weights train (JEPA: the context encoder)."""
    spec = METHODS.get(type(method).__name__)
    if spec is None:
        raise ConfigurationError(
            f"{type(method).__name__} is not one of the methods with encoders: {', '.join(METHODS)}."
        )
    for name in spec.encoders:
        encoder = spec.features(method, name, None, None)
        if not trainable or any(p.requires_grad for p in encoder.parameters()):
            return encoder
    raise ConfigurationError(f"{type(method).__name__} has no encoder with trainable weights.")


@dataclass
class Pretrained:
    """A pretraining checkpoint's method, rebuilt with its weights (on the CPU, in eval mode).

    ``hparams`` are the checkpoint's saved ``__init__`` arguments. Read them rather than
    ``method.hparams``: a method rebuilt inside a LightningCLI instantiation (e.g. by ``LinearEval``)
    records the CLI's arguments of the outer module as its own hyper-parameters.
    """

    name: str
    method: SSLMethod
    hparams: dict[str, Any]
    path: Path
    epoch: int | None = None
    """The checkpoint's epoch counter and optimizer steps (``None`` for foreign weights)."""
    global_step: int | None = None

    @property
    def spec(self) -> MethodEncoders:
        return METHODS[self.name]

    @property
    def in_chans(self) -> int:
        return self.hparams["in_chans"]

    @property
    def image_size(self) -> int:
        return self.hparams["image_size"]

    def encoder_name(self, encoder: str | None) -> str:
        """``encoder``, checked against the method's encoders; ``None`` gives the default one."""
        if encoder is None:
            return self.spec.encoders[0]
        if encoder not in self.spec.encoders:
            raise ConfigurationError(
                f"{self.path} holds a {self.name} checkpoint, whose encoders are {list(self.spec.encoders)}; "
                f"got encoder={encoder!r}."
            )
        return encoder

    def features(self, encoder: str | None = None, pool: str | None = None, stage: int | None = None) -> nn.Module:
        """The module mapping images to the ``(B, D)`` features of the chosen encoder.

        Args:
            encoder: ``"target"`` (default) or ``"context"`` for JEPA methods; ``"backbone"`` otherwise.
            pool: JEPA methods: ``"avg"`` (default) or ``"last4"`` (see :class:`ViTFeatures`).
            stage: blockwise methods: the block whose representation to use, 1–4 (default: 4).
        """
        spec = self.spec
        if pool is not None and pool not in spec.pools:
            rule = f"pool must be one of {list(spec.pools)}" if spec.pools else "pool applies to JEPA methods only"
            raise ConfigurationError(f"{self.path} holds a {self.name} checkpoint: {rule}, got pool={pool!r}.")
        if stage is not None and not 1 <= stage <= spec.stages:
            rule = f"stage must be in 1..{spec.stages}" if spec.stages else "stage applies to blockwise methods only"
            raise ConfigurationError(f"{self.path} holds a {self.name} checkpoint: {rule}, got stage={stage}.")
        return spec.features(self.method, self.encoder_name(encoder), pool, stage)

    def as_timm(self, encoder: str | None = None) -> TimmEncoder:
        """The chosen encoder as timm weights (see :class:`TimmEncoder`)."""
        return self.spec.as_timm(self.method, self.hparams, self.encoder_name(encoder))


def method_class(name: str) -> type[SSLMethod]:
    return getattr(ssl_lightning.methods, name)


def accepts(cls: type, arguments: dict[str, Any]) -> bool:
    """Whether ``cls(**arguments)`` binds (by names only)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return True
    return set(arguments) <= {p.name for p in parameters}


def candidate_methods(checkpoint: dict[str, Any], path: Path) -> list[str]:
    """Names of the :data:`METHODS` the checkpoint may hold, most likely first."""
    saved = checkpoint.get("hyper_parameters") or {}
    class_path = saved.get("_class_path")
    if class_path is not None:
        name = class_path.rsplit(".", 1)[-1]
        if class_path.startswith("ssl_lightning.") and name in METHODS:
            return [name]
        raise CheckpointError(
            f"{path} is a checkpoint of {class_path}, not of an ssl_lightning pretraining method "
            f"({', '.join(METHODS)}). Pass the checkpoint of the pretraining run."
        )
    hparams = init_arguments(saved)
    modules = {key.split(".", 1)[0] for key in checkpoint["state_dict"]}
    names = [name for name, spec in METHODS.items() if spec.modules == modules and accepts(method_class(name), hparams)]
    if not names:
        known = "; ".join(f"{name}: {', '.join(sorted(spec.modules))}" for name, spec in METHODS.items())
        raise CheckpointError(
            f"{path} is a Lightning checkpoint whose weights are under {', '.join(sorted(modules))} "
            f"(hyper-parameters: {', '.join(sorted(hparams)) or 'none'}): not a checkpoint of an ssl_lightning "
            f"method ({known}). Is it from another library?"
        )
    return names


def init_arguments(hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    """The method's ``__init__`` arguments among saved hyper-parameters (drops LightningCLI's ``_class_path``...)."""
    return {key: value for key, value in hyper_parameters.items() if not key.startswith("_")}


def load_pretrained(checkpoint: str | Path, method: str | None = None) -> Pretrained:
    """Rebuild the method a pretraining checkpoint holds and load its weights (CPU, eval mode).

    The method is rebuilt from its saved ``__init__`` arguments, so the whole method (projector or
    predictor included) is held in memory for a moment.

    Weights of other code bases (an official I-JEPA/StoP ``.pth.tar``, timm or Hugging Face I-JEPA
    weights, a torchvision-layout ResNet: :mod:`ssl_lightning.interop`) are loaded into the method
    their shapes describe (:func:`foreign_pretrained`).

    Args:
        checkpoint: path of a ``.ckpt`` file saved by a pretraining run (CLI or plain Python), or of
            foreign weights (a file, or a Hugging Face model folder).
        method: the method you expect (a key of :data:`METHODS`, e.g. ``"IJEPA"``); ``None`` accepts any.

    Raises:
        FileNotFoundError: no file at ``checkpoint``.
        CheckpointError: the file is neither an ssl_lightning pretraining checkpoint nor foreign
            weights of a known layout, holds another method than ``method``, or cannot be rebuilt
            (e.g. it was trained with an ``nn.Module`` backbone).
    """
    path = Path(checkpoint).expanduser()
    if method is not None and method not in METHODS:
        raise ConfigurationError(f"Unknown method {method!r}; the methods with encoders are {', '.join(METHODS)}.")
    if path.is_dir() or path.suffix == ".safetensors":
        return foreign_pretrained(read_foreign_weights(path), method)
    if not path.is_file():
        raise checkpoint_not_found(path)
    content = load_tensors(path)  # read once: official checkpoints hold GBs of optimizer state
    if not is_lightning_checkpoint(content):
        return foreign_pretrained(foreign_weights(content, config_beside(path), path), method)
    names = candidate_methods(content, path)
    if method is not None:
        if method not in names:
            raise CheckpointError(f"{path} holds a checkpoint of {' or '.join(names)}, not of {method}.")
        names = [method]
    hparams = init_arguments(content.get("hyper_parameters") or {})
    if "backbone" not in hparams:
        raise CheckpointError(
            f"{path} ({names[0]}) was trained with a backbone passed as an nn.Module, which checkpoints do not "
            "record, so it cannot be rebuilt here. Build that module yourself and load the checkpoint's "
            "state_dict entries under its prefix (e.g. 'backbone.')."
        )
    errors = []
    for name in names:
        try:
            pretrained = method_class(name)(**hparams)
            pretrained.load_state_dict(content["state_dict"], strict=True)
        except (TypeError, ValueError, RuntimeError) as error:
            errors.append(f"{name}: {error}")
            continue
        return Pretrained(name, pretrained.eval(), hparams, path, content.get("epoch"), content.get("global_step"))
    raise CheckpointError(
        f"{path} looks like a {' or '.join(names)} checkpoint but cannot be rebuilt from its hyper-parameters "
        f"and weights (saved by another ssl_lightning version?): {'; '.join(errors)}"
    )


def foreign_pretrained(weights: ForeignWeights, method: str | None) -> Pretrained:
    """Foreign weights (:mod:`ssl_lightning.interop.layouts`) in the method their shapes describe
    (:func:`~ssl_lightning.interop.architecture.infer_method`; ``method`` chooses among methods of the
    same architecture). What was loaded is logged."""
    name, arguments = infer_method(weights, method)
    if name not in METHODS:
        raise ConfigurationError(f"Unknown method {name!r}; the methods with encoders are {', '.join(METHODS)}.")
    built = method_class(name)(**arguments)
    rank_zero_info(str(load_into(built.weight_parts(), weights)))
    return Pretrained(name, built.eval(), dict(built.hparams), weights.path)
