"""Map-style dataset over images already held (or memory-mapped) as one uint8 tensor."""

from collections.abc import Callable

from torch import Tensor
from torch.utils.data import Dataset

from ssl_lightning.errors import ConfigurationError


class TensorImageDataset(Dataset):
    """``(transform(images[i]), int(labels[i]))`` for ``(N, C, H, W)`` uint8 images.

    With a view recipe's transform an item is ``(list_of_views, label)``, which the default
    collate turns into ``(list of (B, C, H, W) tensors, (B,) long tensor)``.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable) -> None:
        if len(images) != len(labels):
            raise ConfigurationError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), int(self.labels[index])
