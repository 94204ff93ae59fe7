"""Quick recipe tuning: train a configuration for a few steps and print, every ``--every`` steps, a
linear probe and RankMe of its frozen representation, without stopping the run.

The probe is ``reproduce.py``'s on fewer images and a looser tolerance, so one check costs seconds:
L-BFGS logistic regression (gradient tolerance 1e-3) on the first ``--probe-train`` training images
(validation transform), scored on the validation images. Use it to compare settings at equal steps;
publish with ``reproduce.py``. Extra arguments are LightningCLI overrides:

    python benchmarks/recipe_probe.py examples/ijepa_fashion_mnist.yaml --steps 300 --every 100 \\
        --model.init_args.full_context=false
"""

from __future__ import annotations

import argparse
import time

from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, Subset

from ssl_lightning.callbacks.rankme import rankme
from ssl_lightning.cli import build
from ssl_lightning.evaluation.frozen_probes import encode, linear_probe_accuracy
from ssl_lightning.evaluation.pretrained import representation


class ProbeEvery(Callback):
    """Prints ``step, training minutes (probing excluded), probe %, RankMe / dim, loss`` at step 0 and
    every ``every`` steps."""

    def __init__(self, every: int, probe_train: int) -> None:
        self.every, self.probe_train = every, probe_train
        self.start = 0.0

    def report(self, trainer: Trainer, module: LightningModule) -> None:
        began = time.perf_counter()
        datamodule = trainer.datamodule
        images = datamodule.train_eval_dataloader()
        subset = DataLoader(Subset(images.dataset, range(self.probe_train)), batch_size=512, num_workers=2)
        encoder = representation(module)
        train_x, train_y = encode(encoder, subset, module.device)
        val_x, val_y = encode(encoder, datamodule.val_dataloader(), module.device)
        accuracy = linear_probe_accuracy(train_x, train_y, val_x, val_y, tolerance=1e-3)
        loss = trainer.callback_metrics.get("train/loss")
        print(
            f"step {trainer.global_step:5d}  train {(began - self.start) / 60:5.1f} min  probe {100 * accuracy:.2f}%  "
            f"RankMe {float(rankme(val_x)):.1f}/{val_x.shape[1]}  loss {'-' if loss is None else f'{float(loss):.4f}'}",
            flush=True,
        )
        self.start += time.perf_counter() - began  # the probe's time is not training time

    def on_train_start(self, trainer: Trainer, module: LightningModule) -> None:
        self.start = time.perf_counter()
        self.report(trainer, module)

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, *args) -> None:
        if trainer.global_step % self.every == 0:
            self.report(trainer, module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="a recipe, e.g. examples/ijepa_fashion_mnist.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--probe-train", type=int, default=10_000)
    args, overrides = parser.parse_known_args()
    quiet = [
        "--trainer.logger=false",
        "--trainer.default_root_dir=logs/recipe_probe",  # where the CLI saves the run's config.yaml
        "--trainer.callbacks=[]",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
    ]
    cli = build(["--config", args.config, *quiet, f"--trainer.max_steps={args.steps}", *overrides])
    cli.trainer.callbacks.append(ProbeEvery(args.every, args.probe_train))
    cli.trainer.fit(cli.model, cli.datamodule)


if __name__ == "__main__":
    main()
