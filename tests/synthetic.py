"""Tiny in-memory DataModule for method and callback tests: class-dependent noisy images."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset


class NoisyClassImages(Dataset):
    """Image ``i`` = class pattern (class ``i % num_classes``) + Gaussian noise; ``num_views`` noisy
    copies for training, one image for validation. ``label`` overrides every label (e.g. −1)."""

    def __init__(
        self, size: int, num_views: int, num_classes: int, channels: int, image_size: int, label: int | None = None
    ):
        self.size, self.num_views, self.label = size, num_views, label
        gen = torch.Generator().manual_seed(123)
        self.patterns = torch.randn(num_classes, channels, image_size, image_size, generator=gen)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        gen = torch.Generator().manual_seed(index)
        cls = index % len(self.patterns)
        noisy = [
            self.patterns[cls] + 0.5 * torch.randn(self.patterns[cls].shape, generator=gen)
            for _ in range(max(1, self.num_views))
        ]
        label = cls if self.label is None else self.label
        return (noisy, label) if self.num_views else (noisy[0], label)


class NoisyClassDataModule(LightningDataModule):
    def __init__(
        self,
        num_views: int = 2,
        num_classes: int = 3,
        channels: int = 1,
        image_size: int = 16,
        train_size: int = 64,
        batch_size: int = 16,
        train_label: int | None = None,
    ):
        super().__init__()
        self.num_views, self.num_classes, self.channels, self.image_size = num_views, num_classes, channels, image_size
        self.train_size, self.batch_size, self.train_label = train_size, batch_size, train_label

    def train_dataloader(self):
        data = NoisyClassImages(
            self.train_size, self.num_views, self.num_classes, self.channels, self.image_size, self.train_label
        )
        return DataLoader(data, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self):
        data = NoisyClassImages(32, 0, self.num_classes, self.channels, self.image_size)
        return DataLoader(data, batch_size=self.batch_size)
