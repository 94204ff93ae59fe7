"""Does pretraining help? Linear-probe accuracy of frozen features after a time-boxed pretraining
on real Fashion-MNIST, next to the same backbone at random initialisation.

Each method is built with the same seed, probed at initialisation, pretrained for ``--minutes``
(at most ``--epochs``; the learning-rate schedule spans ``--epochs``), and probed again. The probe
is a logistic regression (L-BFGS, full batch) on standardised frozen features of
``--probe-train`` training images (no augmentation), scored on the 10k test images. Dict features
(blockwise methods) get one probe per key.

    python benchmarks/quality.py --methods vicreg --minutes 5
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer, seed_everything
from methods import METHODS
from report import header_lines, markdown_table, publish
from torch.utils.data import DataLoader

from ssl_lightning.data import FashionMNIST
from ssl_lightning.data.datasets import TensorImageDataset


@torch.no_grad()
def frozen_features(module: LightningModule, loader: DataLoader) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``module(images)`` in eval mode for every batch, as a dict of ``(N, D)`` tensors, and the labels.
    The module's training mode is restored afterwards: Lightning keeps the mode it finds at the
    start of ``fit``, so a module left in eval mode would pretrain with frozen BatchNorm statistics."""
    was_training = module.training
    module.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    labels = []
    for images, batch_labels in loader:
        features = module(images.to(module.device))
        named = features if isinstance(features, dict) else {"features": features}
        for key, value in named.items():
            chunks.setdefault(key, []).append(value.float().cpu())
        labels.append(batch_labels)
    module.train(was_training)
    return {key: torch.cat(parts) for key, parts in chunks.items()}, torch.cat(labels)


def linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes: int, weight_decay: float = 1e-4) -> float:
    """Top-1 test accuracy of a multinomial logistic regression fit to convergence with L-BFGS."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    head = torch.nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(head(train_x), train_y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (head(test_x).argmax(1) == test_y).float().mean().item()


def probe(module: LightningModule, datamodule: FashionMNIST, probe_train: int) -> dict[str, float]:
    """Linear-probe accuracy per feature key on frozen features (train subset → test set)."""
    train = datamodule.train_dataset
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:probe_train]
    plain_train = TensorImageDataset(train.images[subset], train.labels[subset], datamodule.val_dataset.transform)
    train_x, train_y = frozen_features(module, DataLoader(plain_train, batch_size=512))
    test_x, test_y = frozen_features(module, datamodule.val_dataloader())
    return {
        key: linear_probe_accuracy(train_x[key], train_y, test_x[key], test_y, datamodule.num_classes)
        for key in train_x
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--minutes", type=float, default=5.0, help="pretraining budget per method")
    parser.add_argument("--epochs", type=int, default=3, help="schedule length; stops earlier at --minutes")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--probe-train", type=int, default=10_000, help="training images for the probe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()

    rows = []
    for name in args.methods:
        seed_everything(args.seed)
        case = METHODS[name](FashionMNIST.native_size, FashionMNIST.channels, None)
        datamodule = FashionMNIST(args.data_dir, batch_size=args.batch_size, views=case.views, num_workers=2)
        datamodule.prepare_data()
        datamodule.setup("fit")
        before = probe(case.module, datamodule, args.probe_train)
        trainer = Trainer(
            max_epochs=args.epochs,
            max_time={"minutes": args.minutes},
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        start = time.perf_counter()
        trainer.fit(case.module, datamodule)
        minutes = (time.perf_counter() - start) / 60
        after = probe(case.module, datamodule, args.probe_train)
        for key in before:
            label = name if key == "features" else f"{name} [{key}]"
            rows.append(
                [
                    label,
                    f"{trainer.global_step}",
                    f"{minutes:.1f}",
                    f"{100 * before[key]:.2f}",
                    f"{100 * after[key]:.2f}",
                    f"{100 * (after[key] - before[key]):+.2f}",
                ]
            )
            print("| " + " | ".join(rows[-1]) + " |", flush=True)  # partial results survive an interrupted run

    lines = header_lines(
        f"Linear probe after a {args.minutes:g}-minute pretraining on Fashion-MNIST",
        torch.device("cuda" if torch.cuda.is_available() else "cpu"),
        f"seed {args.seed}, batch {args.batch_size}, schedule over {args.epochs} epochs, stopped by the time budget",
        f"probe: L-BFGS logistic regression on {args.probe_train} frozen training images, scored on 10k test images",
    )
    columns = ["method", "steps", "minutes", "random init acc %", "pretrained acc %", "gain (pt)"]
    publish(lines + markdown_table(columns, rows))


if __name__ == "__main__":
    main()
