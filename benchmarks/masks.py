"""Throughput of the vectorized I-JEPA mask sampler against a per-image Python loop.

The loop follows the official algorithm as SPEC.md §1 describes it (Assran et al., arXiv
2301.08243; facebookresearch/ijepa), one image at a time as a DataLoader collate function would:
per batch one block size for the targets and one for the context (one uniform draw sets both
scale and aspect); per image, target corners from [0, H - h), then context corners until the
context minus the targets keeps more than ``min_keep`` patches (after every 20 failures one more
target is allowed to overlap); contexts cut to the batch's shortest by keeping the first indices.

Run ``python benchmarks/masks.py``: prints a markdown table and appends it to
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from report import header_lines, markdown_table, publish

from ssl_lightning.masks import MultiBlockMaskSampler
from ssl_lightning.masks.block_size import block_size, lerp


def per_image_loop(
    sampler: MultiBlockMaskSampler, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The official algorithm, one image at a time; ``sampler`` only supplies the configuration."""
    height, width = sampler.grid
    target_u, context_u = torch.rand(2, generator=generator).tolist()
    th, tw = block_size(sampler.grid, lerp(sampler.target_scale, target_u), lerp(sampler.target_aspect, target_u))
    ch, cw = block_size(
        sampler.grid,
        lerp(sampler.context_scale, context_u),
        lerp(sampler.context_aspect, context_u),
    )

    def random_block(h: int, w: int) -> torch.Tensor:
        top = int(torch.randint(0, height - h, (1,), generator=generator))
        left = int(torch.randint(0, width - w, (1,), generator=generator))
        block = torch.zeros(height, width, dtype=torch.int32)
        block[top : top + h, left : left + w] = 1
        return block

    contexts, targets = [], []
    for _ in range(batch_size):
        blocks = [random_block(th, tw) for _ in range(sampler.num_targets)]
        targets.append([torch.nonzero(block.flatten()).squeeze(1) for block in blocks])
        failures, ignored = 0, 0
        while True:
            context = random_block(ch, cw)
            for block in blocks[: len(blocks) - ignored]:
                context *= 1 - block
            context_idx = torch.nonzero(context.flatten()).squeeze(1)
            if len(context_idx) > sampler.min_keep:
                break
            failures += 1
            if failures % 20 == 0:
                ignored += 1
        contexts.append(context_idx)
    keep = min(len(c) for c in contexts)
    context_idx = torch.stack([c[:keep] for c in contexts])
    return context_idx, [torch.stack(t) for t in zip(*targets)]


def seconds_per_batch(sample, batches: int, device: torch.device) -> float:
    """Median wall time of one call of ``sample()`` after one warm-up call."""
    sample()
    times = []
    for _ in range(batches):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        sample()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=50, help="timed batches (loop: a fifth)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: as in a DataLoader worker)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cpu = torch.device("cpu")
    batch_size = args.batch_size

    def sampler(**kwargs) -> MultiBlockMaskSampler:
        return MultiBlockMaskSampler.from_image_size(args.image_size, args.patch_size, **kwargs)

    def generator(on: torch.device) -> torch.Generator:
        return torch.Generator(device=on).manual_seed(0)

    reference, default = sampler(reference=True), sampler()
    loop_gen, ref_gen, default_gen = generator(cpu), generator(device), generator(device)
    rows = [
        (
            "per-image Python loop (official algorithm)",
            "cpu",
            seconds_per_batch(lambda: per_image_loop(reference, batch_size, loop_gen), args.batches // 5, cpu),
        ),
        (
            "MultiBlockMaskSampler(reference=True)",
            device.type,
            seconds_per_batch(lambda: reference(batch_size, generator=ref_gen), args.batches, device),
        ),
        (
            "MultiBlockMaskSampler() (default)",
            device.type,
            seconds_per_batch(lambda: default(batch_size, generator=default_gen), args.batches, device),
        ),
    ]
    baseline = rows[0][2]
    grid = f"{reference.grid[0]}×{reference.grid[1]}"
    title = f"{args.image_size}/{args.patch_size} = {grid} grid, batch {batch_size}"
    lines = header_lines(
        f"I-JEPA multi-block masks ({title})",
        device,
        "masks/s: images per second, each with one context and 4 target masks; median batch",
    )
    lines += markdown_table(
        ["sampler", "device", "ms / batch", "masks/s", "speed-up vs loop"],
        [
            [name, on, f"{seconds * 1e3:.2f}", f"{batch_size / seconds:,.0f}", f"{baseline / seconds:.1f}×"]
            for name, on, seconds in rows
        ],
    )
    publish(lines)


if __name__ == "__main__":
    main()
