"""Any image dataset in the ImageNet folder layout: ``data_dir/train/<class>/*``,
``data_dir/val/<class>/*``."""

import os
import warnings
from pathlib import Path
from typing import Literal

from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset, pil_loader

from ssl_lightning.data.base import SSLDataModule
from ssl_lightning.data.views import ViewRecipe
from ssl_lightning.errors import ConfigurationError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BadImageError(DataError):
    """An image file that cannot be decoded: truncated, corrupt, or not an image."""


def undecodable(path: str, error: OSError, fix: str = "Replace it or delete it.") -> BadImageError:
    """The error for an image file PIL cannot decode, naming it: PIL's own ``OSError: Truncated File
    Read`` does not say which of a million files it was."""
    return BadImageError(
        f"Cannot decode the image {path} ({type(error).__name__}: {error}): the file is truncated, corrupt or not "
        f"an image. {fix}"
    )


def load_rgb(path: str) -> Image.Image:
    """torchvision's PIL loader (decode, convert to RGB), with the file named when it fails."""
    try:
        return pil_loader(path)
    except OSError as err:  # PIL's UnidentifiedImageError and truncated-data errors are OSErrors
        raise undecodable(path, err) from err


def image_format(channels: int) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """PIL mode and normalisation of decoded images with ``channels``: RGB with the ImageNet
    statistics, or grayscale ("L") with 0.5/0.5."""
    if channels not in (1, 3):
        raise ConfigurationError(f"channels must be 1 or 3, got {channels}")
    return ("RGB", IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ("L", (0.5,), (0.5,))


class ClassListImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder with class indices from a given class list, so the validation
    split uses the training split's indices even if it lacks some classes, and with the file named
    when an image cannot be decoded (:func:`load_rgb`). With ``skip_bad_images`` an undecodable
    image is replaced by the next decodable one, with a warning naming it and counting the images
    this process has skipped so far."""

    def __init__(self, root: Path, classes: list[str], transform, skip_bad_images: bool = False) -> None:
        self.class_list = classes
        self.skip_bad_images = skip_bad_images
        self.skipped: set[str] = set()
        super().__init__(str(root), transform=transform, loader=load_rgb, allow_empty=True)

    def __getitem__(self, index: int):
        if not self.skip_bad_images:
            return super().__getitem__(index)
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            try:
                return super().__getitem__(position)
            except BadImageError as error:
                path = self.samples[position][0]
                if path not in self.skipped:
                    self.skipped.add(path)
                    warnings.warn(
                        f"{error} Skipped ({len(self.skipped)} skipped so far by this process).", stacklevel=2
                    )
        raise BadImageError(f"No image of {self.root} can be decoded ({len(self)} files).")

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self.class_list, {name: index for index, name in enumerate(self.class_list)}


class ImageFolder(SSLDataModule):
    """ImageNet-style folders (ImageNet, Imagenette, your own data), decoded with PIL as RGB and
    normalised with the ImageNet statistics.

    Classes are the sub-folders of ``data_dir/train`` (sorted); ``data_dir/val`` must use the same
    folder names (the official ImageNet validation set must first be sorted into them). Nothing
    is downloaded. ``setup`` raises a ``ValueError`` naming the training class folders without any
    image file: they would count as classes that no image belongs to. Validation folders of
    classes missing from ``train`` are skipped, with a warning naming them (their images could
    not be scored); classes missing from ``val`` are fine.

    Args:
        data_dir: folder holding ``train/`` and ``val/``.
        batch_size: training batch size per process; the last incomplete batch is dropped.
        num_workers: DataLoader worker processes (JPEG decoding is the bottleneck: raise it).
        views: view recipe for training; ``None`` = ``JointEmbeddingViews()`` (two views).
        val_batch_size: validation batch size; ``None`` = ``batch_size``.
        image_size: side of the training views and validation crops.
        num_classes: number of classes; ``None`` = the number of folders in ``data_dir/train``.
        seed: seed of the training order and augmentations (see :class:`SSLDataModule`).
        bad_images: what an undecodable image (truncated, corrupt, not an image) does: ``"error"``
            stops with a :class:`BadImageError` naming the file; ``"skip"`` uses the next image in
            its place and warns once per file, with the count skipped so far.
    """

    channels = 3
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    required_files = ("train", "val")

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 256,
        num_workers: int = 2,
        views: ViewRecipe | None = None,
        val_batch_size: int | None = None,
        image_size: int = 224,
        num_classes: int | None = None,
        seed: int | None = None,
        bad_images: Literal["error", "skip"] = "error",
        batched_views: bool = False,
    ) -> None:
        if bad_images not in ("error", "skip"):
            raise ConfigurationError(f"bad_images must be 'error' or 'skip', got {bad_images!r}")
        self.bad_images = bad_images
        super().__init__(
            data_dir=data_dir,
            batch_size=batch_size,
            num_workers=num_workers,
            views=views,
            val_batch_size=val_batch_size,
            download=False,
            image_size=image_size,
            seed=seed,
            batched_views=batched_views,
        )
        self.num_classes = num_classes or len(self._classes())

    def _classes(self) -> list[str]:
        train_dir = self.data_dir / "train"
        if not train_dir.is_dir():
            raise self.missing_data_error(f"no training folder {train_dir}")
        return datasets.folder.find_classes(str(train_dir))[0]

    def search_dirs(self) -> list[Path]:
        return [self.data_dir]

    def how_to_get_data(self) -> str:
        return (
            f"Arrange the images as {self.data_dir}/train/<class>/<image> and "
            f"{self.data_dir}/val/<class>/<image> (one folder per class, same names in both)."
        )

    def build_datasets(self, root, train_transform, val_transform) -> tuple[Dataset, Dataset]:
        classes = self._classes()
        skip = self.bad_images == "skip"
        train = ClassListImageFolder(root / "train", classes, train_transform, skip)
        present = set(train.targets)
        empty = [name for index, name in enumerate(classes) if index not in present]
        if empty:
            raise ConfigurationError(
                f"ImageFolder: the class folder(s) {', '.join(empty)} of {root / 'train'} hold no image file "
                f"({', '.join(IMG_EXTENSIONS)}): add images to them or remove them."
            )
        self._warn_unknown_val_classes(root / "val", classes)
        return train, ClassListImageFolder(root / "val", classes, val_transform, skip)

    @staticmethod
    def _warn_unknown_val_classes(val_dir: Path, classes: list[str]) -> None:
        """Warn of the ``val_dir`` class folders not in ``classes``: ClassListImageFolder skips them."""
        unknown = sorted({entry.name for entry in os.scandir(val_dir) if entry.is_dir()} - set(classes))
        if unknown:
            skipped = len(make_dataset(str(val_dir), dict.fromkeys(unknown, 0), IMG_EXTENSIONS, allow_empty=True))
            rank_zero_warn(
                f"ImageFolder: the validation class folder(s) {', '.join(unknown)} of {val_dir} have no training "
                f"folder, so their {skipped} image(s) are skipped: add these classes to train/ or remove them from val/."
            )
