"""After pretraining: offline linear and kNN evaluation of a frozen encoder, and encoder export.

- :class:`LinearEval` (``ssl-lightning fit --config examples/linear_eval.yaml --model.init_args.checkpoint=PATH``)
- :class:`KNNEval` (``ssl-lightning validate --config examples/knn_eval.yaml --model.init_args.checkpoint=PATH``)
- :class:`LowShotEval` (``ssl-lightning validate --config examples/low_shot_eval.yaml --model.init_args.checkpoint=PATH``),
  the I-JEPA/StoP low-shot protocol, with its solver :func:`fit_logistic_regression`
- :func:`export_encoder` (``ssl-lightning export --checkpoint PATH --output encoder.safetensors``) and
  :func:`load_encoder`
- :func:`load_pretrained`: the method a checkpoint holds, rebuilt with its weights; the dispatch
  table :data:`~ssl_lightning.evaluation.pretrained.METHODS` says how to take each method's encoders out.
"""

from ssl_lightning.evaluation.checkpoints import CheckpointError
from ssl_lightning.evaluation.export import ArchitectureMismatchError, export_encoder, load_encoder, read_sidecar
from ssl_lightning.evaluation.features import ViTFeatures
from ssl_lightning.evaluation.frozen import FrozenEncoder, load_frozen_encoder
from ssl_lightning.evaluation.knn_eval import KNNEval
from ssl_lightning.evaluation.linear_eval import LinearEval
from ssl_lightning.evaluation.logistic import LogisticFit, fit_logistic_regression
from ssl_lightning.evaluation.low_shot_eval import LowShotEval
from ssl_lightning.evaluation.pretrained import METHODS, MethodEncoders, Pretrained, load_pretrained

__all__ = [
    "METHODS",
    "ArchitectureMismatchError",
    "CheckpointError",
    "FrozenEncoder",
    "KNNEval",
    "LinearEval",
    "LogisticFit",
    "LowShotEval",
    "MethodEncoders",
    "Pretrained",
    "ViTFeatures",
    "export_encoder",
    "fit_logistic_regression",
    "load_encoder",
    "load_frozen_encoder",
    "load_pretrained",
    "read_sidecar",
]
