"""Readers for the datasets' published on-disk formats, straight into uint8 tensors.

Reading the files ourselves (rather than through torchvision's dataset classes) lets the
DataModules accept several layouts and offline copies (e.g. Debian's Fashion-MNIST package),
with no checksum gate and no PIL round trip per sample.
"""

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ssl_lightning.errors import DataError

IDX_UBYTE = 0x08


def idx_file(directory: Path, name: str) -> Path | None:
    """``directory/name`` or its gzipped twin ``directory/name.gz``, whichever exists."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> Tensor:
    """Read an unsigned-byte IDX file (LeCun et al.'s MNIST format), raw or gzipped.

    Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, each
    dimension as a big-endian int32, then the data in row-major order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        content = bytearray(file.read())
    if content[0] != 0 or content[1] != 0 or content[2] != IDX_UBYTE:
        raise DataError(f"{path} is not an unsigned-byte IDX file (header {bytes(content[:4])!r})")
    ndim = content[3]
    shape = [int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(content) - offset != expected:
        raise DataError(f"{path}: header promises {expected} bytes, found {len(content) - offset}")
    return torch.frombuffer(content, dtype=torch.uint8, offset=offset).view(shape)


def read_cifar_batches(paths: list[Path], label_key: str) -> tuple[Tensor, Tensor]:
    """Read CIFAR python-pickle batches (Krizhevsky 2009) into ``(N, 3, 32, 32)`` uint8 images
    and ``(N,)`` long labels.

    Each batch is a pickled dict with ``data`` (N x 3072, channel-major rows) and the labels under
    ``label_key`` (``labels`` for CIFAR-10, ``fine_labels`` for CIFAR-100). The official files are
    pickles: only read copies you trust.
    """
    images, labels = [], []
    for path in paths:
        with open(path, "rb") as file:
            batch = pickle.load(file, encoding="latin1")
        images.append(torch.from_numpy(np.asarray(batch["data"], dtype=np.uint8)))
        labels.append(torch.as_tensor(batch[label_key], dtype=torch.long))
    return torch.cat(images).view(-1, 3, 32, 32), torch.cat(labels)


STL10_SHAPE = (3, 96, 96)


def read_stl10_images(path: Path) -> Tensor:
    """Memory-map an STL-10 ``*_X.bin`` file (Coates et al. 2011) as ``(N, 3, 96, 96)`` uint8.

    Each image is stored channel by channel, each channel column-major, so the file is read as
    ``(N, C, W, H)`` and the last two axes are swapped. Mapping (copy-on-write) instead of
    reading keeps the 2.7 GB unlabeled split out of memory until samples are touched.
    """
    image_bytes = int(np.prod(STL10_SHAPE))
    size = path.stat().st_size
    if size % image_bytes:
        raise DataError(f"{path}: {size} bytes is not a whole number of 3x96x96 images")
    flat = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
    return flat.view(-1, *STL10_SHAPE).transpose(2, 3)


def read_stl10_labels(path: Path) -> Tensor:
    """Read an STL-10 ``*_y.bin`` file: one byte per image, classes 1..10, returned as 0..9."""
    return torch.from_numpy(np.fromfile(path, dtype=np.uint8).astype(np.int64)) - 1
