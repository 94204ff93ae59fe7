"""Data pipeline throughput: images/s of the view pipelines alone, per-sample in DataLoader workers
vs batched (ssl_lightning.data.batched) on the CPU, on the GPU when there is one, and kornia's
batched augmentations for the same two-view recipe; next to a model's training-step rate, so you
see whether the data keeps up.

    python benchmarks/data_throughput.py                 # two-view recipe at 32, 96, 224 px; StoP and I-JEPA at 224
    python benchmarks/data_throughput.py --sizes 96 --batches 3 --no-publish

The images are generated uint8 tensors held in memory, stored at the size the DataModules hand the
workers (the view size; 256 for 224 px views, as ``batched_load_transform`` brings ImageNet images
to), so no decoding is measured: the numbers are the augmentation's own cost. Each row is the
source images turned into all their views per second (one image, two views = one image).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
from report import header_lines, markdown_table, publish
from torch.utils.data import DataLoader

from ssl_lightning.data import IJEPAViews, JointEmbeddingViews, StoPViews
from ssl_lightning.data.batched import BatchedViews
from ssl_lightning.data.datasets import TensorImageDataset
from ssl_lightning.data.transforms import ViewSpec, batched_load_size, blur_kernel_size
from ssl_lightning.methods import VICReg

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
RECIPES = {"two-view": JointEmbeddingViews, "StoP": StoPViews, "I-JEPA": IJEPAViews}


def images(count: int, image_size: int) -> torch.Tensor:
    side = batched_load_size(image_size)
    return torch.randint(0, 256, (count, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def timed(batches, consume, warmup: int = 1) -> float:
    """Seconds per batch of ``consume`` over an iterator, after ``warmup`` batches."""
    iterator = iter(batches)
    for _ in range(warmup):
        consume(next(iterator))
    start, count = time.perf_counter(), 0
    for batch in iterator:
        consume(batch)
        count += 1
    return (time.perf_counter() - start) / max(count, 1)


def per_sample(recipe, image_size: int, args) -> float:
    transform = recipe.train_transform(image_size, 3, MEAN, STD)
    stored = images(args.batch_size * (args.batches + 1), image_size)
    dataset = TensorImageDataset(stored, torch.zeros(len(stored), dtype=torch.long), transform)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, persistent_workers=False)
    return args.batch_size / timed(loader, lambda batch: None)


def batched(recipe, image_size: int, args, device: torch.device) -> float:
    views = BatchedViews(recipe.view_specs(image_size, 3), MEAN, STD)
    generator = torch.Generator(device).manual_seed(0)
    batches = [images(args.batch_size, image_size).to(device) for _ in range(args.batches + 1)]

    def consume(batch):
        views(batch, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return args.batch_size / timed(batches, consume)


def kornia_pipeline(spec: ViewSpec):
    """kornia's augmentations for one view of the two-view recipe (same operations and probabilities)."""
    import kornia.augmentation as K

    brightness, contrast, saturation, hue = spec.jitter
    kernel = blur_kernel_size(spec.size)
    ops = [
        K.RandomResizedCrop((spec.size, spec.size), scale=spec.crop_scale, ratio=spec.crop_ratio, p=1.0),
        K.RandomHorizontalFlip(p=spec.hflip_prob),
        K.ColorJitter(brightness, contrast, saturation, hue, p=spec.jitter_prob),
        K.RandomGrayscale(p=spec.grayscale_prob),
    ]
    if spec.blur_prob > 0:
        ops.append(K.RandomGaussianBlur((kernel, kernel), sigma=spec.blur_sigma, p=spec.blur_prob))
    if spec.solarize_prob > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=spec.solarize_prob))
    ops.append(K.Normalize(mean=torch.tensor(MEAN), std=torch.tensor(STD)))
    return K.AugmentationSequential(*ops)


def kornia_batched(recipe, image_size: int, args, device: torch.device) -> float:
    pipelines = [kornia_pipeline(spec).to(device) for spec in recipe.view_specs(image_size, 3)]
    batches = [images(args.batch_size, image_size).to(device) for _ in range(args.batches + 1)]

    def consume(batch):
        floats = batch.float() / 255
        for pipeline in pipelines:
            pipeline(floats)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return args.batch_size / timed(batches, consume)


def model_rate(image_size: int, args, device: torch.device) -> float:
    """Images/s of a VICReg ResNet-18 training step (two views, forward + backward + AdamW)."""
    model = VICReg(backbone="resnet18", projector_dims=[2048, 2048], image_size=image_size).to(device)
    optimizer = torch.optim.AdamW(model.parameters())
    batch = args.model_batch_size
    views = [torch.randn(batch, 3, image_size, image_size, device=device) for _ in range(2)]

    def step(_):
        loss, _terms = model.loss_fn(
            model.projector(model.backbone(views[0])), model.projector(model.backbone(views[1]))
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return batch / timed(range(args.model_steps + 1), step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96, 224], help="two-view recipe sizes")
    parser.add_argument("--jepa-size", type=int, default=224, help="size of the StoP and I-JEPA rows (0: none)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=4, help="timed batches (after one warmup batch)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the per-sample rows")
    parser.add_argument("--model-batch-size", type=int, default=16)
    parser.add_argument("--model-steps", type=int, default=2)
    parser.add_argument("--no-kornia", action="store_true")
    parser.add_argument("--no-publish", action="store_true")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    use_kornia = not args.no_kornia and importlib.util.find_spec("kornia") is not None
    cases = [("two-view", size) for size in args.sizes]
    cases += [(name, args.jepa_size) for name in ("StoP", "I-JEPA") if args.jepa_size]

    rows = []
    for name, size in cases:
        recipe = RECIPES[name]()
        speeds = {f"per-sample, {args.workers} workers": per_sample(recipe, size, args)}
        for device in devices:
            speeds[f"batched, {device.type}"] = batched(recipe, size, args, device)
            if use_kornia and name == "two-view":
                speeds[f"kornia, {device.type}"] = kornia_batched(recipe, size, args, device)
        step = {device.type: model_rate(size, args, device) for device in devices} if name == "two-view" else {}
        base = speeds[f"per-sample, {args.workers} workers"]
        for variant, speed in speeds.items():
            model = ", ".join(f"{d} {r:,.0f}" for d, r in step.items()) if variant.startswith("per-sample") else ""
            rows.append([f"{name} {size} px", variant, f"{speed:,.0f}", f"{speed / base:.2f}×", model])
        print(rows[-len(speeds) :], flush=True)

    notes = [
        (
            f"batches of {args.batch_size} generated uint8 images in memory, stored at the view size (256 px for "
            f"224 px views); {args.batches} timed batches after one warmup batch; no decoding"
        ),
        "images/s = source images per second, each turned into all its views (two-view: 2, StoP/I-JEPA: 1)",
        f"model: VICReg ResNet-18 training step (2 views, fwd+bwd+AdamW), batch {args.model_batch_size}, images/s",
        "kornia: " + ("kornia " + __import__("kornia").__version__ if use_kornia else "not installed, no comparison"),
    ]
    columns = ["recipe", "pipeline", "images/s", "vs per-sample", "model step images/s"]
    lines = header_lines("Data pipeline throughput (benchmarks/data_throughput.py)", devices[-1], *notes)
    table = lines + markdown_table(columns, rows)
    publish(table, append=not args.no_publish)


if __name__ == "__main__":
    main()
