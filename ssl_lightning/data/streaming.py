"""Streaming shards for many nodes, on Lightning's ``litdata``: ``ssl-lightning prepare`` turns an
ImageNet-layout folder into shards, :class:`StreamingImages` trains from them.

Each split (``train``, ``val``) becomes a litdata dataset (``<output>/<split>/index.json`` and
``chunk-*.bin``) of items ``{"image": the file's bytes, as stored, "label": class index, "path":
the file's path under the source}``, beside ``<output>/ssl_lightning.json`` (the classes, the image
counts, which images were converted or skipped). litdata's ``StreamingDataset`` reads the shards
from a local disk or object storage (``s3://``, ``gs://``...: ``data_dir`` is any litdata input
dir), splits them between processes and nodes (every image once per epoch), shuffles them with a
seed, and its ``StreamingDataLoader`` saves its position, which Lightning keeps in every
checkpoint, so a run resumes mid-epoch with exactly the unseen images.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from litdata import StreamingDataLoader, StreamingDataset, optimize
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ssl_lightning.data.base import SSLDataModule
from ssl_lightning.data.image_folder import BadImageError, image_format, undecodable
from ssl_lightning.data.views import ViewRecipe
from ssl_lightning.errors import ConfigurationError, DataError
from ssl_lightning.seeding import derive_seed

MANIFEST = "ssl_lightning.json"
MANIFEST_FORMAT = "ssl_lightning.shards/1"
SPLITS = ("train", "val")


class ForeignShardsError(DataError):
    """A shard directory that ``ssl-lightning prepare`` did not write."""


def shard_item(sample: tuple[str, int, str]) -> dict[str, Any]:
    """One litdata item of a prepared split (runs in ``optimize``'s workers)."""
    path, label, relative = sample
    return {"image": Path(path).read_bytes(), "label": label, "path": relative}


def check_image(path: str) -> str:
    """Decode ``path`` fully; its PIL mode, or :class:`BadImageError` naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.mode
    except OSError as error:
        raise undecodable(path, error, "Replace it or delete it, or prepare with bad_images='skip'.") from error


def split_samples(folder: Path, classes: list[str], bad_images: str) -> tuple[list[tuple[str, int, str]], dict]:
    """The decodable images of one split folder as ``(path, label, relative path)``, and what was
    found: ``{"images", "skipped": [paths], "converted": {mode: count}}``."""
    class_index = {name: index for index, name in enumerate(classes)}
    samples, skipped, converted = [], [], {}
    for path, label in make_dataset(str(folder), class_index, IMG_EXTENSIONS, allow_empty=True):
        try:
            mode = check_image(path)
        except BadImageError:
            if bad_images == "error":
                raise
            skipped.append(path)
            continue
        if mode != "RGB":
            converted[mode] = converted.get(mode, 0) + 1
        samples.append((path, label, str(Path(path).relative_to(folder))))
    return samples, {"images": len(samples), "skipped": skipped, "converted": converted}


def prepare_image_folder(
    source: str | Path,
    output: str | Path,
    splits: Sequence[str] = SPLITS,
    chunk_bytes: str = "64MB",
    num_workers: int | None = None,
    bad_images: Literal["error", "skip"] = "error",
) -> Path:
    """Write the shards of an ImageNet-layout folder (``source/<split>/<class>/<image>``).

    Every image is decoded once to check it (a corrupt one stops with its path, or with
    ``bad_images="skip"`` is left out and listed); images that are not RGB are counted (the
    loader converts them). Classes are those of ``source/train`` (or the first split).

    Args:
        source: the folder holding the split folders.
        output: the shard folder to write (``<output>/<split>/`` and ``ssl_lightning.json``).
        splits: the split folders to convert.
        chunk_bytes: litdata's target chunk size.
        num_workers: processes writing the shards (``None``: litdata's choice).
        bad_images: ``"error"`` or ``"skip"``.

    Returns:
        ``output``.
    """
    source, output = Path(source).expanduser(), Path(output).expanduser()
    if bad_images not in ("error", "skip"):
        raise ConfigurationError(f"bad_images must be 'error' or 'skip', got {bad_images!r}")
    missing = [split for split in splits if not (source / split).is_dir()]
    if missing:
        raise ConfigurationError(
            f"{source} has no {', '.join(missing)} folder: expected {source}/<split>/<class>/<image>."
        )
    classes = find_classes(str(source / ("train" if "train" in splits else splits[0])))[0]
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "source": str(source.resolve()),
        "classes": classes,
        "splits": {},
    }
    for split in splits:
        samples, found = split_samples(source / split, classes, bad_images)
        if not samples:
            raise ConfigurationError(f"{source / split} holds no decodable image ({', '.join(IMG_EXTENSIONS)}).")
        optimize(
            fn=shard_item,
            inputs=samples,
            output_dir=str(output / split),
            chunk_bytes=chunk_bytes,
            num_workers=num_workers or 1,
            mode="overwrite",
            start_method="fork",
            verbose=False,
        )
        manifest["splits"][split] = found
        if found["skipped"]:
            warnings.warn(
                f"prepare: skipped {len(found['skipped'])} undecodable image(s) of {source / split}.", stacklevel=2
            )
    (output / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return output


def read_manifest(root: Path) -> dict[str, Any]:
    """``ssl_lightning.json`` of a shard folder, with a clear error for shards of another tool."""
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        raise ForeignShardsError(
            f"{root} has no {MANIFEST}: these shards were not written by `ssl-lightning prepare` (litdata or another "
            "tool?), so their items' layout is unknown. Run `ssl-lightning prepare --source <ImageFolder root> "
            f"--output {root}`."
        )
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ForeignShardsError(
            f"{manifest_file} is not a manifest of `ssl-lightning prepare` ({manifest.get('format')!r})."
        )
    return manifest


class ImageShards(StreamingDataset):
    """A prepared split: each item decoded (as ``mode``: ``"RGB"`` or ``"L"``) and transformed into
    ``(transform(image), label)``. The transform draws from torch's RNG seeded by ``(seed, epoch,
    sample index)``, so an image's views do not depend on the process or worker that reads it."""

    def __init__(self, input_dir: str, transform, mode: str, shuffle: bool, seed: int, **kwargs: Any) -> None:
        super().__init__(input_dir, shuffle=shuffle, seed=seed, **kwargs)
        self.image_transform = transform
        self.mode = mode

    def __getitem__(self, index):
        item = super().__getitem__(index)
        try:
            image = Image.open(io.BytesIO(item["image"])).convert(self.mode)
        except OSError as error:
            raise BadImageError(
                f"Cannot decode {item['path']} from the shards in {self.input_dir.path}: {error}"
            ) from error
        key = getattr(index, "index", index)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(derive_seed(self.seed, self.current_epoch, int(key)))
            return self.image_transform(image), item["label"]


class StreamingImages(SSLDataModule):
    """Images streamed from the shards of ``ssl-lightning prepare`` (litdata), normalised with the
    ImageNet statistics: for data on object storage or too large for one disk, and for many nodes.

    ``data_dir`` is the prepared folder (``<data_dir>/train``, ``<data_dir>/val``, ``ssl_lightning.json``)
    on a local disk; the same layout on object storage is read with ``input_dir`` URLs
    (``remote_dir="s3://bucket/imagenet-shards"``, the manifest then read from ``data_dir``).
    litdata splits the shards between every process of every node and shuffles them with the
    DataModule's seed; the loader's position is in every checkpoint (exact mid-epoch resume).

    Args:
        data_dir: the prepared folder.
        remote_dir: where the shards are read from, when not from ``data_dir`` (an object-storage URL).
        cache_dir: local cache of downloaded chunks (litdata's default when ``None``).
        channels: 3 (RGB) or 1 (grayscale): images are converted on decoding.
        batch_size, num_workers, views, val_batch_size, image_size, seed, batched_views: see
            :class:`~ssl_lightning.data.base.SSLDataModule`.
    """

    required_files = (MANIFEST,)

    def __init__(
        self,
        data_dir: str = "data/shards",
        batch_size: int = 256,
        num_workers: int = 2,
        views: ViewRecipe | None = None,
        val_batch_size: int | None = None,
        image_size: int = 224,
        seed: int | None = None,
        batched_views: bool = False,
        remote_dir: str | None = None,
        cache_dir: str | None = None,
        channels: int = 3,
    ) -> None:
        self.mode, self.mean, self.std = image_format(channels)
        self.channels = channels
        self.remote_dir = remote_dir
        self.cache_dir = cache_dir
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
        self.manifest = read_manifest(self.data_dir) if (self.data_dir / MANIFEST).exists() else None
        self.num_classes = len(self.manifest["classes"]) if self.manifest else 0

    def search_dirs(self) -> list[Path]:
        return [self.data_dir]

    def contains_data(self, directory: Path) -> bool:
        if not (directory / "train" / "index.json").is_file() and self.remote_dir is None:
            return False
        read_manifest(directory)
        return True

    def how_to_get_data(self) -> str:
        return f"Write the shards with `ssl-lightning prepare --source <ImageFolder root> --output {self.data_dir}`."

    def build_datasets(self, root, train_transform, val_transform):
        base = self.remote_dir or str(root)
        options = {"cache_dir": self.cache_dir} if self.cache_dir else {}
        train = ImageShards(f"{base}/train", train_transform, self.mode, shuffle=True, seed=self.seed or 0, **options)
        val = ImageShards(f"{base}/val", val_transform, self.mode, shuffle=False, seed=0, **options)
        return train, val

    def train_dataloader(self) -> StreamingDataLoader:
        self.train_dataset.seed = self.training_seed() % 2**32  # litdata seeds numpy's RNG with it
        return StreamingDataLoader(
            self.train_dataset, batch_size=self.batch_size, drop_last=True, **self.streaming_options()
        )

    def val_dataloader(self) -> StreamingDataLoader:
        return StreamingDataLoader(self.val_dataset, batch_size=self.val_batch_size, **self.streaming_options())

    def train_eval_dataloader(self) -> StreamingDataLoader:
        transform = self.evaluation_transform()
        train, _ = self.build_datasets(self.data_root(), transform, transform)
        train.shuffle = False
        return StreamingDataLoader(train, batch_size=self.val_batch_size, **self.streaming_options())

    def streaming_options(self) -> dict:
        return {"num_workers": self.num_workers, "pin_memory": torch.cuda.is_available()}

    def state_dict(self) -> dict:
        """The shuffle seed (litdata refuses to resume with another one), and the batched views' state."""
        return {**super().state_dict(), "seed": self.seed}
