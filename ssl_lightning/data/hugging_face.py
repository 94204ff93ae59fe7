"""Image datasets of the Hugging Face Hub, or their files on disk, through ``datasets``.

``datasets`` is an optional dependency (``pip install "ssl_lightning[hf]"``), imported when the
data is loaded.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ssl_lightning.data.base import SSLDataModule
from ssl_lightning.data.image_folder import image_format
from ssl_lightning.data.views import ViewRecipe
from ssl_lightning.errors import ConfigurationError

FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}


def load_split(path: str, split: str, data_files: dict[str, str] | None, cache_dir: str | None):
    """One split of a dataset: a folder of ``save_to_disk``, local Parquet/Arrow files, or a Hub name."""
    try:
        import datasets
    except ImportError as error:
        raise ConfigurationError(
            "HFImages needs the `datasets` package: pip install 'ssl_lightning[hf]' (or pip install datasets)."
        ) from error
    local = Path(path).expanduser()
    if local.is_dir() and (local / "dataset_dict.json").is_file():
        splits = datasets.load_from_disk(str(local))
        if split not in splits:
            raise ConfigurationError(f"{local} has the splits {list(splits)}, not {split!r}.")
        return splits[split]
    if data_files is not None:
        suffix = Path(next(iter(data_files.values()))).suffix
        if suffix not in FILE_BUILDERS:
            raise ConfigurationError(f"data_files must be {' or '.join(FILE_BUILDERS)} files, got {suffix!r}.")
        if split not in data_files:
            raise ConfigurationError(f"data_files names the splits {list(data_files)}, not {split!r}.")
        return datasets.load_dataset(FILE_BUILDERS[suffix], data_files=data_files, split=split, cache_dir=cache_dir)
    return datasets.load_dataset(path, split=split, cache_dir=cache_dir)


def as_pil(value: Any) -> Image.Image:
    """A ``datasets`` image cell (decoded PIL image, ``{"bytes", "path"}`` dict, or array) as a PIL image."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        return Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    return Image.fromarray(np.asarray(value))


class HFImageDataset(Dataset):
    """``(transform(image), label)`` of a ``datasets.Dataset``'s image and label columns."""

    def __init__(self, rows, image_column: str, label_column: str | None, mode: str, transform) -> None:
        self.rows, self.image_column, self.label_column = rows, image_column, label_column
        self.mode, self.transform = mode, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row = self.rows[int(index)]
        label = row[self.label_column] if self.label_column is not None else -1
        return self.transform(as_pil(row[self.image_column]).convert(self.mode)), label


class HFImages(SSLDataModule):
    """A Hugging Face image dataset: a Hub name when online (e.g. ``"uoft-cs/cifar10"``), a folder
    written by ``Dataset(Dict).save_to_disk``, or local Parquet/Arrow files (``data_files``), offline.

    Images are converted to RGB (or grayscale with ``channels=1``) and normalised with the ImageNet
    statistics (0.5/0.5 for grayscale). The number of classes comes from the label column's
    ``ClassLabel`` names, else from its largest value.

    Args:
        path: Hub name, ``save_to_disk`` folder, or ignored when ``data_files`` is given.
        data_files: ``{"train": "train.parquet", "validation": "val.parquet"}`` (Parquet or Arrow files).
        train_split, val_split: split names.
        image_column, label_column: column names (``label_column=None``: no labels, -1).
        channels: 3 or 1.
        cache_dir: ``datasets``' cache folder.
        batch_size, num_workers, views, val_batch_size, image_size, seed, batched_views: see
            :class:`~ssl_lightning.data.base.SSLDataModule`.
    """

    native_size = None

    def __init__(
        self,
        path: str = "",
        data_files: dict[str, str] | None = None,
        train_split: str = "train",
        val_split: str = "validation",
        image_column: str = "image",
        label_column: str | None = "label",
        channels: int = 3,
        image_size: int = 224,
        batch_size: int = 256,
        num_workers: int = 2,
        views: ViewRecipe | None = None,
        val_batch_size: int | None = None,
        seed: int | None = None,
        batched_views: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        if not path and data_files is None:
            raise ConfigurationError("HFImages needs path (a Hub name or a save_to_disk folder) or data_files.")
        self.mode, self.mean, self.std = image_format(channels)
        self.channels = channels
        self.path, self.data_files, self.cache_dir = path, data_files, cache_dir
        self.train_split, self.val_split = train_split, val_split
        self.image_column, self.label_column = image_column, label_column
        super().__init__(
            data_dir=path or ".",
            batch_size=batch_size,
            num_workers=num_workers,
            views=views,
            val_batch_size=val_batch_size,
            download=False,
            image_size=image_size,
            seed=seed,
            batched_views=batched_views,
        )
        self.splits: dict[str, Any] = {}
        self.num_classes = self.count_classes()

    def split(self, name: str):
        if name not in self.splits:
            rows = load_split(self.path, name, self.data_files, self.cache_dir)
            wanted = [self.image_column] + ([self.label_column] if self.label_column else [])
            missing = [column for column in wanted if column not in rows.column_names]
            if missing:
                raise ConfigurationError(
                    f"The {name!r} split of {self.path or self.data_files} has no column {', '.join(map(repr, missing))}; "
                    f"its columns are {rows.column_names}. Set image_column / label_column."
                )
            self.splits[name] = rows
        return self.splits[name]

    def count_classes(self) -> int:
        if self.label_column is None:
            return 0
        rows = self.split(self.train_split)
        names = getattr(rows.features[self.label_column], "names", None)
        return len(names) if names else int(max(rows[self.label_column])) + 1

    def search_dirs(self) -> list[Path]:
        return [Path(".")]

    def find_data(self) -> Path:
        return Path(".")  # datasets finds (or fails to find) the data itself

    def how_to_get_data(self) -> str:
        return "Give a Hub name (online), a save_to_disk folder or data_files."

    def build_datasets(self, root, train_transform, val_transform) -> tuple[Dataset, Dataset]:
        return (
            HFImageDataset(
                self.split(self.train_split), self.image_column, self.label_column, self.mode, train_transform
            ),
            HFImageDataset(self.split(self.val_split), self.image_column, self.label_column, self.mode, val_transform),
        )
