"""Why a small ViT's average-pooled features start weak, and whether pretraining moves them: how much
of them the image's mean patch explains, at every checkpoint of a JEPA run of ``reproduce.py``.

The patch embedding is linear, so before the transformer blocks mix the tokens, the average of an
image's patch tokens is the embedding of its *mean patch* (the average of its ``p × p × C`` patches)
plus the average position, the same for every image. Only what the blocks (and the final LayerNorm)
add can make the pooled features depend on where things are in the image. This script measures that
on the first ``--images`` test images, for every checkpoint of ``logs/reproduce/<dataset>/checkpoints/
<method>``: the R² of the pooled features regressed (least squares with an intercept) on the mean
patch, the share of their energy in the vector common to all images, RankMe of the features as the
probes see them and of the centred features. It prints the table and appends it to RESULTS.md.

    python benchmarks/reproduce.py --methods ijepa        # first: the checkpoints
    python benchmarks/vit_pooling.py --methods ijepa flexpredict
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from report import header_lines, markdown_table, publish
from reproduce import parse_with_overrides, run_label
from saved_runs import run_parser, saved_run
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ssl_lightning.callbacks.rankme import rankme
from ssl_lightning.evaluation.frozen_probes import encode
from ssl_lightning.evaluation.pretrained import representation


def mean_patch(images: Tensor, patch: int) -> Tensor:
    """``(B, C, H, W)`` images → ``(B, C·patch²)``: the average of each image's non-overlapping patches."""
    patches = images.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, C, H/p, W/p, p, p)
    return patches.mean(dim=(2, 3)).flatten(1)


def explained_variance(features: Tensor, regressors: Tensor) -> float:
    """R² of the least-squares fit of ``features`` ``(N, D)`` on ``regressors`` ``(N, K)`` and an
    intercept: 1 − residual sum of squares / total sum of squares around the features' mean."""
    design = torch.cat([regressors, torch.ones(len(regressors), 1, dtype=regressors.dtype)], dim=1).double()
    target = features.double()
    residual = target - design @ torch.linalg.lstsq(design, target).solution
    return float(1 - residual.pow(2).sum() / (target - target.mean(0)).pow(2).sum())


def common_share(features: Tensor) -> float:
    """Share of the features' mean squared norm that is the squared norm of their mean vector."""
    return float(features.mean(0).pow(2).sum() / features.pow(2).sum(1).mean())


def checkpoint_rows(method: str, args: argparse.Namespace) -> list[list[str]]:
    label = run_label(method, args.overrides)
    module, datamodule, paths = saved_run(method, args, Path("/tmp") / "vit_pooling")
    first = Subset(datamodule.val_dataloader().dataset, range(args.images))
    loader = [next(iter(DataLoader(first, batch_size=args.images)))]  # one batch: features and regressors align
    images = loader[0][0]
    regressors = mean_patch(images, module.context_encoder.vit.patch_embed.patch_size[0])
    rows = []
    for path in paths:
        saved = torch.load(path, weights_only=True)
        module.load_state_dict(saved["state_dict"])
        features, _ = encode(representation(module), loader, "cpu")
        rows.append([
            label, str(saved["step"]), f"{explained_variance(features, regressors):.3f}",
            f"{common_share(features):.3f}", f"{float(rankme(features)):.1f}",
            f"{float(rankme(features - features.mean(0))):.1f}", str(features.shape[1]),
        ])  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = run_parser(__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="test images to measure on")
    args = parse_with_overrides(parser)
    rows = [row for method in args.methods for row in checkpoint_rows(method, args)]
    columns = ["method", "step", "R² from the mean patch", "common-vector share", "RankMe", "RankMe centred", "dim"]
    lines = header_lines(
        f"What the mean patch explains of the pooled ViT features ({args.dataset}, benchmarks/vit_pooling.py)",
        torch.device("cpu"),
        f"command: `python benchmarks/vit_pooling.py --methods {' '.join(args.methods + args.overrides)}` "
        f"on the checkpoints of benchmarks/reproduce.py; first {args.images} test images",
        "R²: least-squares fit (with intercept) of the average-pooled target-encoder features on the image's mean "
        "patch; common-vector share: squared norm of the features' mean over their mean squared norm",
    )
    publish(lines + markdown_table(columns, rows))


if __name__ == "__main__":
    main()
