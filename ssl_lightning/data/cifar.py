"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009): 32x32 RGB, 50k training / 10k test images."""

from pathlib import Path

from torch.utils.data import Dataset

from ssl_lightning.data.archive import ArchiveDataModule
from ssl_lightning.data.datasets import TensorImageDataset
from ssl_lightning.data.readers import read_cifar_batches


class CIFARDataModule(ArchiveDataModule):
    """Shared logic of the CIFAR datasets, read from the official python-pickle batches."""

    channels = 3
    native_size = 32
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    label_key: str

    @property
    def required_files(self) -> tuple[str, ...]:
        return self.train_files + self.val_files

    def build_datasets(self, root, train_transform, val_transform) -> tuple[Dataset, Dataset]:
        return (
            self._split(root, self.train_files, train_transform),
            self._split(root, self.val_files, val_transform),
        )

    def _split(self, root: Path, files: tuple[str, ...], transform) -> TensorImageDataset:
        images, labels = read_cifar_batches([root / name for name in files], self.label_key)
        return TensorImageDataset(images, labels, transform)


class CIFAR10(CIFARDataModule):
    """CIFAR-10: 10 classes; training on ``data_batch_1..5``, validation on ``test_batch``."""

    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    val_files = ("test_batch",)
    label_key = "labels"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"


class CIFAR100(CIFARDataModule):
    """CIFAR-100: 100 fine classes; training on ``train``, validation on ``test``."""

    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    folder = "cifar-100-python"
    train_files = ("train",)
    val_files = ("test",)
    label_key = "fine_labels"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    md5 = "eb9058c3a382ffc7106e4002c42a8d85"
