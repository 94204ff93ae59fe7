"""DataModules and view recipes.

DataModules (``--data <Name>`` on the command line): ``FashionMNIST``, ``MNIST``, ``CIFAR10``,
``CIFAR100``, ``STL10``, ``ImageFolder``. View recipes (``views: {class_path: <Name>}``):
``JointEmbeddingViews`` (VICReg / Barlow Twins), ``IJEPAViews``, ``StoPViews``,
``LinearEvalViews`` (linear evaluation), ``MultiCropViews`` (LeJEPA's global + local crops).
"""

from ssl_lightning.data.base import DatasetNotFoundError, SSLDataModule
from ssl_lightning.data.cifar import CIFAR10, CIFAR100
from ssl_lightning.data.hugging_face import HFImages
from ssl_lightning.data.image_folder import ImageFolder
from ssl_lightning.data.mnist import MNIST, FashionMNIST
from ssl_lightning.data.stl10 import STL10
from ssl_lightning.data.transforms import MultiViewTransform, eval_transform
from ssl_lightning.data.views import (
    IJEPAViews,
    JointEmbeddingViews,
    LinearEvalViews,
    MultiCropViews,
    StoPViews,
    ViewRecipe,
)

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "MNIST",
    "STL10",
    "DatasetNotFoundError",
    "FashionMNIST",
    "HFImages",
    "IJEPAViews",
    "ImageFolder",
    "JointEmbeddingViews",
    "LinearEvalViews",
    "MultiCropViews",
    "MultiViewTransform",
    "SSLDataModule",
    "StoPViews",
    "StreamingImages",
    "ViewRecipe",
    "eval_transform",
]


def __getattr__(name: str):
    """``StreamingImages`` on first use: it subclasses litdata's classes, and importing litdata takes
    a second and is not needed by the other DataModules (the ``ssl-lightning`` command imports it
    for its short name)."""
    if name == "StreamingImages":
        from ssl_lightning.data.streaming import StreamingImages

        return StreamingImages
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
