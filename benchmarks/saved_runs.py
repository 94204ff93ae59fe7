"""The checkpoints of a ``reproduce.py`` run read back, for the scripts that analyse them
(``vit_pooling.py``, ``vit_readouts.py``)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from reproduce import DATASETS, ROOT, recipe_args, run_folder, run_label, saved_checkpoints

from ssl_lightning.cli import build
from ssl_lightning.methods.base import SSLMethod


def run_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every analysis of saved runs takes: which recipes' runs, on which dataset, where.
    Read them with ``reproduce.parse_with_overrides``: the recipe overrides a ``reproduce.py`` run was given
    name that run (``--trainer.max_steps=10800`` reads the run made with it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--methods", nargs="+", default=["ijepa", "flexpredict"])
    parser.add_argument("--dataset", default="fashion_mnist", choices=list(DATASETS))
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default="logs/reproduce", help="reproduce.py's --out")
    # what recipe_args reads of a reproduce.py command line: the recipe as it is, on the CPU
    parser.set_defaults(device="cpu", minutes=1.0, seed=0, steps=None, epochs=None)
    return parser


def saved_run(method: str, args: argparse.Namespace, log_dir: Path) -> tuple[SSLMethod, object, list[Path]]:
    """The recipe's method (to load the checkpoints into) and DataModule, set up, and the checkpoint files
    of its ``reproduce.py`` run (the recipe with ``args.overrides``) in step order; exits with the command to
    run when there are none."""
    folder = ROOT / args.out / args.dataset / "checkpoints" / run_folder(run_label(method, args.overrides))
    paths = saved_checkpoints(folder)
    if not paths:
        command = shlex.join(["python", "benchmarks/reproduce.py", "--methods", method, *args.overrides])
        raise SystemExit(f"No checkpoints in {folder}: run `{command}` first.")
    cli = build(recipe_args(args, method, log_dir))
    cli.datamodule.setup("fit")
    return cli.model, cli.datamodule, paths
