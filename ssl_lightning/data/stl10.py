"""STL-10 (Coates et al. 2011): 96x96 RGB, 10 classes, 5k labelled + 100k unlabeled training
images and 8k test images, made for unsupervised feature learning."""

import torch
from torch.utils.data import ConcatDataset, Dataset

from ssl_lightning.data.archive import ArchiveDataModule
from ssl_lightning.data.datasets import TensorImageDataset
from ssl_lightning.data.readers import read_stl10_images, read_stl10_labels


class STL10(ArchiveDataModule):
    """STL-10 from the official binary files: pretraining on ``train`` + ``unlabeled`` (label -1
    for the unlabeled images), validation on ``test``. The images are memory-mapped, not loaded.
    ``image_size`` defaults to the native 96 px.
    """

    num_classes = 10
    channels = 3
    native_size = 96
    mean = (0.4467, 0.4398, 0.4066)
    std = (0.2603, 0.2566, 0.2713)
    required_files = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin")
    folder = "stl10_binary"
    url = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
    md5 = "91f7769df0f17e558f3565bffb0c7dfb"

    def build_datasets(self, root, train_transform, val_transform) -> tuple[Dataset, Dataset]:
        unlabeled_images = read_stl10_images(root / "unlabeled_X.bin")
        unknown = torch.full((len(unlabeled_images),), -1, dtype=torch.long)
        train = ConcatDataset(
            [
                self._labelled(root, "train", train_transform),
                TensorImageDataset(unlabeled_images, unknown, train_transform),
            ]
        )
        return train, self._labelled(root, "test", val_transform)

    @staticmethod
    def _labelled(root, split: str, transform) -> TensorImageDataset:
        images = read_stl10_images(root / f"{split}_X.bin")
        return TensorImageDataset(images, read_stl10_labels(root / f"{split}_y.bin"), transform)
