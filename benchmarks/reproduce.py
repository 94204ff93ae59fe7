"""Proof of learning: every method's frozen features against raw pixels, the random-init encoder and a
supervised encoder, on real data, with learning curves.

For each method, the small-data recipe ``examples/<method>_fashion_mnist.yaml`` is pretrained (its own
step count, or ``--steps``/``--epochs``; at most ``--minutes`` of training), with a checkpoint at step
0 (the random-init encoder) and ``--checkpoints`` more along the way. Every checkpoint is then scored
on its frozen encoder: linear probe (logistic regression fit to convergence by L-BFGS on standardised
features of all training images, scikit-learn's default L2), weighted kNN (k = 20 and 200) and RankMe,
on the test images. In the same table: the raw pixels, and the same encoder (same initial weights)
trained with labels for the same number of steps. Results go to ``<out>/<dataset>/results.json``
(kept between runs: a method already there is not trained again unless ``--fresh``), a section of
``benchmarks/RESULTS.md`` and a plot ``benchmarks/reproduce_<dataset>.png``.

    python benchmarks/reproduce.py                                   # every method, CPU budget
    python benchmarks/reproduce.py --methods vicreg --minutes 10     # one method, shorter
    python benchmarks/reproduce.py --dataset mnist
    python benchmarks/reproduce.py --device cuda --epochs 100 --minutes 600   # GPU budget
    python benchmarks/reproduce.py --methods ijepa --model.init_args.full_context=false   # an ablation

Further arguments override the recipe (LightningCLI syntax); such a run is recorded under the method's
name with the overrides in brackets, next to the recipe's own. On a GPU machine without internet,
carry the data with the repository: copy the four IDX files into ``data/FashionMNIST/raw/`` (or pass
``--data-dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from curves import plot_curves
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from report import header_lines, machine, markdown_table, publish

from ssl_lightning.callbacks import OneDNNLinears
from ssl_lightning.callbacks.rankme import rankme
from ssl_lightning.cli import build
from ssl_lightning.data import LinearEvalViews
from ssl_lightning.evaluation.frozen_probes import encode, knn_accuracies, linear_probe_accuracy
from ssl_lightning.evaluation.pretrained import representation
from ssl_lightning.evaluation.supervised import SupervisedBaseline
from ssl_lightning.nn.backbone import probe_feature_dim

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("vicreg", "barlow", "blockwise", "ijepa", "flexpredict", "lejepa")  # examples/<name>_fashion_mnist.yaml
DATASETS = {"fashion_mnist": "ssl_lightning.data.FashionMNIST", "mnist": "ssl_lightning.data.MNIST"}
KNN_K = (20, 200)


@dataclass
class Score:
    """One row of the results: an encoder's frozen-feature scores on the test images."""

    method: str
    kind: str  # "pretrained", "random init", "supervised" or "pixels"
    step: int
    train_seconds: float
    linear: float
    knn20: float
    knn200: float
    rankme: float
    dim: int
    architecture: str = ""  # hash of the encoder's weight names and shapes: supervised runs are shared by equal ones
    machine: str = ""  # where it was trained and scored (results.json can gather runs from several machines)
    scheduled_steps: int = 0  # the run's length; above its last step where --minutes cut it (0: not recorded)


class CheckpointEvery(Callback):
    """Saves the weights and the training time so far at step 0 (before any update: the random-init
    encoder), every ``every_n_steps`` optimizer steps and at the end, as ``step=<N>.pt`` files."""

    def __init__(self, directory: Path, every_n_steps: int) -> None:
        self.directory, self.every_n_steps = directory, max(1, every_n_steps)
        self.start = 0.0

    def save(self, trainer: Trainer, module: LightningModule) -> None:
        path = self.directory / f"step={trainer.global_step}.pt"
        if not path.exists():
            seconds = time.perf_counter() - self.start
            torch.save({"state_dict": module.state_dict(), "step": trainer.global_step, "seconds": seconds}, path)

    def on_train_start(self, trainer: Trainer, module: LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("step=*.pt"):  # an earlier run's (e.g. before --fresh): not this curve
            stale.unlink()
        self.start = time.perf_counter()
        self.save(trainer, module)

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, *args) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.save(trainer, module)

    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        self.save(trainer, module)


def checkpoint_step(path: Path) -> int:
    """The step of a ``step=<N>.pt`` file written by :class:`CheckpointEvery`."""
    return int(path.stem.split("=")[1])


def saved_checkpoints(directory: Path) -> list[Path]:
    """The ``step=<N>.pt`` files :class:`CheckpointEvery` wrote in ``directory``, in step order."""
    return sorted(directory.glob("step=*.pt"), key=checkpoint_step)


def max_time(minutes: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a number of minutes."""
    seconds = round(60 * minutes)
    return f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def cut_short_warning(label: str, steps: int, scheduled: int, seconds: float) -> str:
    """What to tell when the ``--minutes`` cap stopped a run before the end of its schedule: the run's
    warmup and cosine were laid out over ``scheduled`` steps, so its curve is not the recipe's."""
    if steps == 0:
        return f"WARNING {label}: the --minutes cap stopped pretraining before its first step: pass a larger --minutes."
    rate = 60 * steps / seconds  # steps > 0, so time has passed
    return (
        f"WARNING {label}: the --minutes cap stopped pretraining at step {steps} of the {scheduled} scheduled "
        f"({rate:.1f} steps/min on this machine), before the learning rate finished its decay: these scores are "
        f"below what the recipe reaches. For the whole schedule pass --minutes {math.ceil(1.05 * scheduled / rate)}; "
        f"for a complete shorter schedule, --steps {steps}."
    )


def recipe_args(args: argparse.Namespace, method: str, log_dir: Path) -> list[str]:
    """The recipe's configuration with the benchmark's budget, data and logging on top. The recipes are
    written for Fashion-MNIST and serve every 28 px grayscale dataset (the DataModule is swapped)."""
    recipe = ROOT / "examples" / f"{method}_fashion_mnist.yaml"
    overrides = [
        "--config", str(recipe),
        f"--data.class_path={DATASETS[args.dataset]}",
        f"--data.init_args.data_dir={args.data_dir}",
        f"--trainer.accelerator={args.device}",
        f"--trainer.max_time={max_time(args.minutes)}",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={log_dir}",
        f"--trainer.logger.init_args.name={run_folder(run_label(method, getattr(args, 'overrides', [])))}",
        f"--seed_everything={args.seed}",
    ]  # fmt: skip
    if args.epochs:
        overrides += ["--trainer.max_steps=-1", f"--trainer.max_epochs={args.epochs}"]
    elif args.steps:
        overrides.append(f"--trainer.max_steps={args.steps}")
    return overrides + list(getattr(args, "overrides", []))


def run_label(method: str, overrides: list[str]) -> str:
    """How a run is named in the results: the method, plus the recipe overrides of an ablation."""
    if not overrides:
        return method
    return f"{method} [{', '.join(o.removeprefix('--').removeprefix('model.init_args.') for o in overrides)}]"


def run_folder(label: str) -> str:
    """A file-system-safe name for a run's checkpoints and logs."""
    return label if label.isidentifier() else f"{label.split()[0]}-{hashlib.sha1(label.encode()).hexdigest()[:8]}"


def score_encoder(encoder, datamodule, device, method: str, kind: str, step: int, seconds: float) -> Score:
    """Linear probe, kNN and RankMe of ``encoder`` (``None``: the pixels) on the frozen features."""
    train_x, train_y = encode(encoder, datamodule.train_eval_dataloader(), device)
    test_x, test_y = encode(encoder, datamodule.val_dataloader(), device)
    classes = datamodule.num_classes
    knn = knn_accuracies(train_x, train_y, test_x, test_y, classes, ks=KNN_K)
    return Score(
        method,
        kind,
        step,
        seconds,
        linear=linear_probe_accuracy(train_x, train_y, test_x, test_y, classes),
        knn20=knn[KNN_K[0]],
        knn200=knn[KNN_K[1]],
        rankme=float(rankme(test_x)),
        dim=test_x.shape[1],
        machine=machine(torch.device(device)),
    )


def pretrain(args, method: str, out: Path) -> tuple[list[Score], int]:
    """Pretrain one recipe (with ``args.overrides``), then score every checkpoint; returns the scores
    (named by :func:`run_label`) and the steps trained."""
    label = run_label(method, args.overrides)
    cli = build(recipe_args(args, method, out / "logs"))
    module, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    total = trainer.max_steps
    if total < 0:  # an epoch budget
        datamodule.setup("fit")
        total = trainer.max_epochs * (len(datamodule.train_dataset) // datamodule.batch_size)
    every = total // args.checkpoints
    checkpoints = CheckpointEvery(out / "checkpoints" / run_folder(label), every)
    trainer.callbacks.append(checkpoints)
    trainer.fit(module, datamodule)
    if trainer.global_step < total:
        print(cut_short_warning(label, trainer.global_step, total, time.perf_counter() - checkpoints.start), flush=True)
    scores = []
    for path in saved_checkpoints(checkpoints.directory):
        saved = torch.load(path, weights_only=True)
        module.load_state_dict(saved["state_dict"])
        kind = "random init" if saved["step"] == 0 else "pretrained"
        scores.append(
            score_encoder(
                representation(module), datamodule, module.device, label, kind, saved["step"], saved["seconds"]
            )
        )
        scores[-1].scheduled_steps = total
        print(json.dumps(asdict(scores[-1])), flush=True)
    return scores, trainer.global_step


def architecture(encoder: torch.nn.Module) -> str:
    """A short hash of the encoder's weight names and shapes."""
    layout = [(name, tuple(tensor.shape)) for name, tensor in encoder.state_dict().items()]
    return hashlib.sha1(repr(layout).encode()).hexdigest()[:12]


def supervised(args, method: str, steps: int, out: Path, done: list[Score]) -> Score:
    """The recipe's encoder, from the same initial weights, trained with labels for ``steps`` steps
    (AdamW lr 1e-3, weight decay 0.05, 5% warmup then cosine; crop + flip augmentation). A supervised
    run of an encoder of the same architecture for the same steps in ``done`` is reused (the methods
    are seeded alike, so the initial weights are the same too)."""
    label = run_label(method, args.overrides)
    cli = build(recipe_args(args, method, out / "logs"))
    module, datamodule = cli.model, cli.datamodule
    datamodule.views = LinearEvalViews()
    encoder = representation(module, trainable=True)
    key = architecture(encoder)
    for score in done:
        if score.kind == "supervised" and score.architecture == key and score.step == steps:
            return dataclasses.replace(score, method=label)
    feature_dim = probe_feature_dim(encoder, datamodule.channels, datamodule.image_size)
    baseline = SupervisedBaseline(
        encoder,
        feature_dim,
        datamodule.num_classes,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
        warmup_steps=max(1, steps // 20),
    )
    trainer = Trainer(
        accelerator=args.device,
        max_steps=steps,
        callbacks=[c for c in cli.trainer.callbacks if isinstance(c, OneDNNLinears)],  # the recipe's kernels
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(baseline, datamodule)
    score = score_encoder(encoder, datamodule, baseline.device, label, "supervised", steps, time.perf_counter() - start)
    score.architecture = key
    print(json.dumps(asdict(score)), flush=True)
    return score


def pixels(args) -> Score:
    """The raw pixels (after the DataModule's validation normalisation) as features. The data come from
    the first method's recipe: the overrides given are written for the methods asked for."""
    datamodule = build(recipe_args(args, args.methods[0], Path("/tmp"))).datamodule
    datamodule.setup("fit")
    return score_encoder(None, datamodule, "cpu", "pixels", "pixels", 0, 0.0)


def load_results(path: Path) -> list[Score]:
    return [Score(**row) for row in json.loads(path.read_text())] if path.exists() else []


def percent(fraction: float) -> str:
    """An accuracy as the tables show it: percent, two decimals."""
    return f"{100 * fraction:.2f}"


def summary_rows(scores: list[Score]) -> list[list[str]]:
    """One row per method: its last checkpoint, its random init and its supervised twin."""
    rows = []
    for score in scores:
        if score.kind == "pretrained" and score.step == max(s.step for s in scores if s.method == score.method):
            init = next(s for s in scores if s.method == score.method and s.kind == "random init")
            sup = next((s for s in scores if s.method == score.method and s.kind == "supervised"), None)
            curve_ranks = [s.rankme for s in scores if s.method == score.method and s.kind == "pretrained"]
            cut = score.step < score.scheduled_steps
            steps = f"{score.step} of {score.scheduled_steps}" if cut else str(score.step)
            rows.append([
                score.method, steps, f"{score.train_seconds / 60:.1f}", percent(score.linear),
                percent(score.knn20), percent(score.knn200), f"{min(curve_ranks):.1f} / {score.dim}",
                percent(init.linear), percent(init.knn20), percent(sup.linear) if sup else "—", score.machine,
            ])  # fmt: skip
        elif score.kind == "pixels":
            rows.append([
                "raw pixels", "—", "—", percent(score.linear), percent(score.knn20), percent(score.knn200),
                f"{score.rankme:.1f} / {score.dim}", "—", "—", "—", score.machine,
            ])  # fmt: skip
    return rows


def curve_rows(scores: list[Score]) -> list[list[str]]:
    return [
        [s.method, str(s.step), f"{s.train_seconds / 60:.1f}", percent(s.linear), percent(s.knn20), f"{s.rankme:.1f}"]
        for s in scores
        if s.kind in ("pretrained", "random init")
    ]  # fmt: skip


def parse_with_overrides(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The script's arguments, with the arguments it does not know kept as recipe overrides in
    ``args.overrides`` (LightningCLI syntax, ``--model.init_args.X=V``)."""
    args, args.overrides = parser.parse_known_args()
    if any(not o.startswith("--") for o in args.overrides):
        parser.error(
            f"unrecognised arguments: {' '.join(args.overrides)} (recipe overrides look like --model.init_args.X=V)"
        )
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--dataset", default="fashion_mnist", choices=list(DATASETS))
    parser.add_argument("--minutes", type=float, default=30.0, help="training-time cap per method")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs instead of steps (e.g. 100 on a GPU)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the table and plot from results.json")
    parser.add_argument("--checkpoints", type=int, default=4, help="checkpoints after step 0")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or any Lightning accelerator")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default="logs/reproduce")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-supervised", action="store_true", help="skip the supervised baselines")
    parser.add_argument("--fresh", action="store_true", help="retrain methods already in results.json")
    parser.add_argument("--no-publish", action="store_true", help="print the table, plot into --out, leave RESULTS.md")
    args = parse_with_overrides(parser)
    out = ROOT / args.out / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    fresh = {run_label(method, args.overrides) for method in args.methods} if args.fresh else set()
    scores = [s for s in load_results(results_path) if s.method not in fresh]

    def save() -> None:
        results_path.write_text(json.dumps([asdict(s) for s in scores], indent=1))

    if args.report_only:
        report(args, scores)
        return
    if not any(s.kind == "pixels" for s in scores):
        scores.append(pixels(args))
        save()
    for method in args.methods:
        label = run_label(method, args.overrides)
        trained = [s.step for s in scores if s.method == label and s.kind == "pretrained"]
        if trained:  # pretrained before: only a missing supervised twin is left to run
            steps = max(trained)
        else:
            seed_everything(args.seed)
            method_scores, steps = pretrain(args, method, out)
            scores += method_scores
            save()
        if not args.no_supervised and not any(s.method == label and s.kind == "supervised" for s in scores):
            seed_everything(args.seed)
            scores.append(supervised(args, method, steps, out, scores))
            save()
    report(args, scores)


def report(args, scores: list[Score]) -> None:
    dataset = args.dataset
    folder = ROOT / args.out if args.no_publish else Path(__file__).parent
    plot = folder / f"reproduce_{dataset}.png"
    plot_curves(scores, plot, title=f"{dataset}: linear probe on frozen features vs pretraining time")
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    lines = header_lines(
        f"Proof of learning on {dataset} (benchmarks/reproduce.py)",
        device,
        f"command: `python benchmarks/reproduce.py --dataset {dataset}` (recipes examples/<method>_fashion_mnist.yaml, "
        f"at most {args.minutes:g} min of training each, seed {args.seed})",
        "linear: logistic regression (L-BFGS to convergence, L2 = 1/N, i.e. scikit-learn's C=1) on standardised "
        "frozen features of all training images, no augmentation; kNN: cosine, temperature 0.07; "
        "all scored on the test images; RankMe on the test features (lowest over the checkpoints / feature dim)",
        "random init: the same encoder at step 0; supervised: the same encoder from the same initial weights "
        "trained with labels for the same steps, then probed the same way",
        f"plot: [reproduce_{dataset}.png](reproduce_{dataset}.png)",
        "machine: the one this section was written on; each run's own is in the table's last column",
        "steps: `N of M` where the --minutes cap stopped a run at step N of its M-step schedule (its learning rate "
        "never finished decaying)",
    )
    columns = [
        "method", "steps", "train min", "linear %", "kNN-20 %", "kNN-200 %", "RankMe (min) / dim",
        "random init linear %", "random init kNN-20 %", "supervised linear %", "machine",
    ]  # fmt: skip
    curve = ["method", "step", "train min", "linear %", "kNN-20 %", "RankMe"]
    section = lines + markdown_table(columns, summary_rows(scores))
    section += ["", "Every checkpoint:", "", *markdown_table(curve, curve_rows(scores))]
    publish(section, append=not args.no_publish)


if __name__ == "__main__":
    main()
