"""Which features of a JEPA run's ViT the probes should read, on the checkpoints of reproduce.py.

The same checkpoints are scored by its linear probe, kNN and RankMe under several readouts:

- ``target:avg``: the target (EMA) encoder's final patch tokens, average-pooled, ``D`` features: what
  ``reproduce.py`` and the exported encoder give;
- ``target:last4``: the output of each of its last four blocks through the final LayerNorm, each
  average-pooled and concatenated, ``4·D`` features: the I-JEPA paper's linear-probe features for its
  largest models (:class:`~ssl_lightning.evaluation.features.ViTFeatures`);
- ``context:avg``: the context (student) encoder's average-pooled tokens.

The probes are ``reproduce.py``'s (logistic regression to convergence on all training images, kNN with
k = 20 and 200, on the test images). It prints the table and appends it to RESULTS.md.

    python benchmarks/reproduce.py --methods ijepa flexpredict       # first: the checkpoints
    python benchmarks/vit_readouts.py --methods ijepa flexpredict     # their last checkpoints
    python benchmarks/vit_readouts.py --methods ijepa --trainer.max_steps=10800   # the run made with that override
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from report import header_lines, markdown_table, publish
from reproduce import checkpoint_step, parse_with_overrides, percent, run_label, score_encoder
from saved_runs import run_parser, saved_run
from torch import nn

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.evaluation.pretrained import JEPA
from ssl_lightning.methods.ijepa import IJEPA

READOUTS = ("target:avg", "target:last4", "context:avg")


def readout(method: IJEPA, name: str) -> nn.Module:
    """The module mapping images to the ``"<encoder>:<pool>"`` features of a JEPA ``method``: the
    evaluation modules' own (:data:`~ssl_lightning.evaluation.pretrained.JEPA`)."""
    encoder, _, pool = name.partition(":")
    if encoder not in JEPA.encoders or pool not in JEPA.pools:
        encoders, pools = (" or ".join(map(repr, names)) for names in (JEPA.encoders, JEPA.pools))
        raise ConfigurationError(f"a readout is {encoders}, ':', then {pools}; got {name!r}")
    return JEPA.features(method, encoder, pool, None)


def checkpoint_rows(method: str, args: argparse.Namespace) -> list[list[str]]:
    label = run_label(method, args.overrides)
    module, datamodule, paths = saved_run(method, args, Path("/tmp") / "vit_readouts")
    saved_steps = [checkpoint_step(p) for p in paths]
    missing = sorted(set(args.at_steps or ()) - set(saved_steps))
    if missing:
        raise SystemExit(f"{label}'s run has no checkpoint at step {missing}; its steps are {saved_steps}.")
    chosen = [p for p in paths if checkpoint_step(p) in args.at_steps] if args.at_steps else paths[-1:]
    rows = []
    for path in chosen:
        saved = torch.load(path, weights_only=True)
        module.load_state_dict(saved["state_dict"])
        for name in args.readouts:
            score = score_encoder(
                readout(module, name), datamodule, "cpu", method, name, saved["step"], saved["seconds"]
            )
            rows.append([
                label, str(score.step), name, str(score.dim), percent(score.linear), percent(score.knn20),
                percent(score.knn200), f"{score.rankme:.1f}",
            ])  # fmt: skip
            print(" | ".join(rows[-1]), flush=True)
    return rows


def parse_args() -> argparse.Namespace:
    parser = run_parser(__doc__.split("\n")[0])
    parser.add_argument("--at-steps", nargs="+", type=int, help="checkpoint steps to score (default: each run's last)")
    parser.add_argument("--readouts", nargs="+", default=list(READOUTS), choices=READOUTS)
    return parse_with_overrides(parser)


def main() -> None:
    args = parse_args()
    rows = [row for method in args.methods for row in checkpoint_rows(method, args)]
    columns = ["method", "step", "readout", "dim", "linear %", "kNN-20 %", "kNN-200 %", "RankMe"]
    lines = header_lines(
        f"Which ViT features the probes should read ({args.dataset}, benchmarks/vit_readouts.py)",
        torch.device("cpu"),
        f"command: `python benchmarks/vit_readouts.py --methods {' '.join(args.methods + args.overrides)}` "
        "on the checkpoints of the benchmarks/reproduce.py runs these arguments name (the recipes, with the overrides)",
        "probes: reproduce.py's (linear: L-BFGS logistic regression to convergence on the standardised features of "
        "all training images; kNN: cosine, temperature 0.07; RankMe on the test features), scored on the test images",
    )
    publish(lines + markdown_table(columns, rows))


if __name__ == "__main__":
    main()
