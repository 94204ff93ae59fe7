"""ssl_lightning dropped into a plain Lightning project: your DataModule, your Trainer, our method
and callbacks.

Your DataModule only has to yield ``(views, labels)`` training batches (a list of augmented
views, labels −1 when unknown) and ``(images, labels)`` validation batches. Here the data are the
Fashion-MNIST IDX files of Debian's ``dataset-fashion-mnist`` package, read with numpy.

    python examples/drop_in.py                 # a short real run: online linear probe, kNN, RankMe
    python examples/drop_in.py --fast-dev-run  # one batch, to check the wiring
"""

from __future__ import annotations

import argparse
import functools
import gzip
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader, Dataset

from ssl_lightning import VICReg
from ssl_lightning.callbacks import OnlineKNN, OnlineLinearProbe, RankMe
from ssl_lightning.data import JointEmbeddingViews

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
MEAN, STD = (0.2860,), (0.3530,)


def read_idx_gz(path: Path) -> torch.Tensor:
    """An IDX file (gzip) as a uint8 tensor: the 4-byte magic's last byte is the number of dims."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4")
    return torch.from_numpy(np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(shape).copy())


class LabelledImages(Dataset):
    def __init__(self, split: str, transform) -> None:
        self.images = read_idx_gz(FASHION_MNIST / f"{split}-images-idx3-ubyte.gz").unsqueeze(1)
        self.labels = read_idx_gz(FASHION_MNIST / f"{split}-labels-idx1-ubyte.gz").long()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), int(self.labels[index])


def to_normalized_float(image: torch.Tensor) -> torch.Tensor:
    return (image.float() / 255 - MEAN[0]) / STD[0]


class MyFashionMNIST(LightningDataModule):
    num_classes = 10  # read by OnlineLinearProbe

    def __init__(self, batch_size: int = 128) -> None:
        super().__init__()
        self.batch_size = batch_size
        # ssl_lightning's two-view VICReg recipe, adapted to 28 px grayscale images.
        self.two_views = JointEmbeddingViews().train_transform(28, 1, MEAN, STD)

    def train_dataloader(self) -> DataLoader:
        data = LabelledImages("train", self.two_views)
        return DataLoader(data, batch_size=self.batch_size, shuffle=True, drop_last=True, num_workers=2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(LabelledImages("t10k", to_normalized_float), batch_size=512, num_workers=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fast-dev-run", action="store_true")
    args = parser.parse_args()

    model = VICReg(
        backbone="resnet18",  # any timm name, or your own nn.Module returning (B, D) features
        backbone_kwargs={"channels": [16, 32, 64, 128]},
        projector_dims=[512, 512, 512],
        in_chans=1,
        image_size=28,  # ≤ 64 px: the small-image ResNet stem is used
        optimizer=functools.partial(torch.optim.AdamW, lr=2e-3, weight_decay=1e-4),
        warmup_epochs=0.1,
    )
    trainer = Trainer(
        max_steps=args.steps,
        max_epochs=1,
        callbacks=[OnlineLinearProbe(lr=0.01), OnlineKNN(k=20), RankMe()],
        fast_dev_run=args.fast_dev_run,
        default_root_dir="logs/drop_in",
    )
    trainer.fit(model, MyFashionMNIST())
    print({name: round(float(value), 4) for name, value in trainer.callback_metrics.items()})


if __name__ == "__main__":
    main()
