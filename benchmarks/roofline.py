"""Share of roofline: how much of the machine's matmul throughput each method's training step achieves.

One run first measures the roofline, the best FLOP/s of large square matrix products in the
dtype the steps compute in (float32 on a CPU, 2048²; bfloat16 on a GPU, 8192²; on a CPU the best of
``torch.mm``, which runs in the BLAS, and the same product as a 1×1 convolution, which runs in
oneDNN: on AMD Zen 5 cores the second is twice the first); then, for every method of ``methods.py``,
eager (on a CPU also with its linear layers through oneDNN, :mod:`ssl_lightning.nn.onednn_linear`)
and with ``compile=True``, it counts the model FLOPs of one
training step with ``FlopCounterMode`` (the matmuls, convolutions and attention of forward and
backward, over the first, untimed, eager step; the compiled rows reuse that count), times the
full Lightning step (``training_step.images_per_second``) and reports the achieved FLOP/s =
FLOPs per step × steps per second as a share of the roofline. Elementwise work, normalisation,
the optimizer and the EMA update cost time but count no FLOPs: they are what keeps the share
below 1, and ``--profile METHOD`` shows them (``torch.profiler`` over a few steps; the ops by
self CPU time, on a GPU by self CUDA time, split into matmul/conv/attention and everything else).

Shapes: the joint-embedding methods at ``methods.py``'s defaults (narrow ResNet-18, 512-d
projector), channels-last, on 32 px images, batch 64; I-JEPA and FlexPredict on ViT-Tiny (embed 192, depth 12,
3 heads) at 64 px with patch 8, batch 32, predictor 96-d × 2 blocks, with ``methods.py``'s masks
for small grids (targets of 10-15% of the 8×8 grid; ``--jepa-shape vit-tiny``); ``quickstart``:
``methods.py``'s small ViT at 32 px, batch 64. ``--image-size`` and ``--batch-size`` override both.
Every method trains with fused AdamW (its own hyper-parameters); the images are generated on the
device, so no host-to-device copy is timed.

    python benchmarks/roofline.py                                   # every method, eager and compiled
    python benchmarks/roofline.py --methods vicreg ijepa --no-compile --no-publish
    python benchmarks/roofline.py --profile ijepa                   # where the I-JEPA step's time goes
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, field

import torch
from lightning.pytorch import Callback
from methods import METHODS
from report import header_lines, markdown_table, publish
from training_step import (
    StepFlops,
    benchmark_device,
    compute_dtype,
    fresh_module,
    images_per_second,
    matmul_flops_per_second,
    use_fused_adamw,
)

from ssl_lightning.nn.onednn_linear import use_onednn_linears

VIT_TINY = {"patch_size": 8, "embed_dim": 192, "depth": 12, "num_heads": 3, "pred_dim": 96, "pred_depth": 2}
JEPA_METHODS = ("ijepa", "flexpredict")
ROOFLINE_KERNELS = {"blas": "torch.mm (BLAS)", "onednn": "as a 1×1 convolution (oneDNN)"}
# The ops counted as matrix products: matmuls, convolutions and attention, forward and backward.
MATMUL_OPS = re.compile(r"(aten|mkldnn)::(\w*mm\w*|matmul|linear|addmv|mv|dot|\w*convolution\w*|\w*attention\w*)")


@dataclass
class Shape:
    """Images, batch and method options of one method's benchmark case."""

    image_size: int
    batch_size: int
    options: dict = field(default_factory=dict)
    label: str = "methods.py defaults"


def method_shape(name: str, args: argparse.Namespace) -> Shape:
    """The case ``name`` is measured at (see the module docstring), with ``--image-size``/``--batch-size``."""
    if name in JEPA_METHODS and args.jepa_shape == "vit-tiny":
        shape = Shape(64, 32, VIT_TINY, "ViT-Tiny, patch 8, predictor 96 × 2")
    else:  # channels-last convolutions, as the ResNet recipes train (1.4× for VICReg's eager step on 2 cores)
        shape = Shape(32, 64, {"channels_last": True}, "methods.py defaults, channels-last")
    shape.image_size = args.image_size or shape.image_size
    shape.batch_size = args.batch_size or shape.batch_size
    return shape


def step_args(args: argparse.Namespace, shape: Shape) -> argparse.Namespace:
    """What ``training_step`` reads, for one case."""
    sizes = {"image_size": shape.image_size, "batch_size": shape.batch_size}
    return argparse.Namespace(**{**vars(args), "backbone": None, "in_chans": 3, **sizes})


def built(name: str, case: argparse.Namespace, shape: Shape, compiled: bool, onednn: bool = False):
    """The method, with fused AdamW and, when ``compiled``, ``compile=True``; with ``onednn``, its
    linear layers run as 1×1 convolutions (:func:`~ssl_lightning.nn.onednn_linear.use_onednn_linears`)."""
    options = dict(shape.options)
    if compiled:
        options |= {"compile": True, "compile_options": {"backend": case.compile_backend}}
    module, num_views = fresh_module(name, case, **options)
    if onednn:
        use_onednn_linears(module)
    return use_fused_adamw(module), num_views


def variants(args: argparse.Namespace, device: torch.device) -> list[tuple[str, bool, bool]]:
    """``(label, compiled, oneDNN linears)`` of the rows measured per method: eager, on a CPU also with
    the linear layers through oneDNN, and compiled (where inductor picks the kernels itself)."""
    rows = [("eager", False, False)]
    if device.type == "cpu":
        rows.append(("eager, oneDNN linears", False, True))
    if not args.no_compile:
        rows.append(("torch.compile", True, False))
    return rows


def roofline_rows(args: argparse.Namespace, roofline: float, device: torch.device) -> list[list[str]]:
    """One row per method and variant: FLOPs per step, images/s, FLOP/s and share of ``roofline``."""
    rows = []
    for name in args.methods:
        shape = method_shape(name, args)
        case = step_args(args, shape)
        counter = StepFlops()
        speeds = {}
        for label, compiled, onednn in variants(args, device):
            callbacks = [] if speeds else [counter]  # the FLOPs of the first (eager) variant's first step
            module, num_views = built(name, case, shape, compiled, onednn)
            speeds[label] = images_per_second(module, num_views, case, callbacks, on_device=True)
        for variant, speed in speeds.items():
            achieved = counter.flops * speed / shape.batch_size
            size = f"{shape.image_size} px, batch {shape.batch_size}"
            rows.append(
                [name, variant, size, f"{counter.flops / 1e9:,.4g}", f"{speed:,.1f}", f"{achieved / 1e9:,.1f}"]
                + [f"{achieved / roofline:.1%}"]
            )
            print(rows[-1], flush=True)
    return rows


class StepProfiler(Callback):
    """``torch.profiler`` over the training batches after ``warmup`` untimed ones, and their wall
    time (``seconds``, up to the last batch's end, before the profiler processes its events)."""

    def __init__(self, warmup: int, cuda: bool) -> None:
        self.warmup = warmup
        self.cuda = cuda
        activities = [torch.profiler.ProfilerActivity.CPU]
        self.activities = activities + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        self.profiler: torch.profiler.profile | None = None
        self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.profiler = torch.profiler.profile(activities=self.activities)
            self.profiler.__enter__()
            self.seconds = -self.now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= trainer.max_steps:
            self.seconds += self.now()
            self.profiler.__exit__(None, None, None)

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def op_rows(events, cuda: bool, steps: int) -> list[tuple[str, str, float, float]]:
    """``(op, group, calls per step, self ms per step)`` of the profiled host-side ops, longest
    first; the time is the ops' own (children excluded) CPU time, on a GPU their kernels' time."""
    rows = []
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue  # kernels: their time is in the self device time of the op that launched them
        micros = event.self_device_time_total if cuda else event.self_cpu_time_total
        group = "matmul/conv/attention" if MATMUL_OPS.fullmatch(event.key) else "everything else"
        rows.append((event.key, group, event.count / steps, micros / 1e3 / steps))
    return sorted(rows, key=lambda row: -row[3])


def profile_lines(args: argparse.Namespace, device: torch.device) -> list[str]:
    """The profiled step of ``args.profile``: its top ops, and how its wall time splits into
    matmul/conv/attention, the other ops and the time outside any op (Python and Lightning on a
    CPU; on a GPU, the time the device waits for the host)."""
    shape = method_shape(args.profile, args)
    case = step_args(args, shape)
    case.steps = args.profile_steps
    cuda = device.type == "cuda"
    profiler = StepProfiler(case.warmup, cuda)
    onednn = device.type == "cpu"  # the faster eager step there (see variants)
    module, num_views = built(args.profile, case, shape, compiled=False, onednn=onednn)
    images_per_second(module, num_views, case, [profiler], on_device=True)
    wall = profiler.seconds / case.steps * 1e3
    ops = op_rows(profiler.profiler.key_averages(), cuda, case.steps)
    groups = {"matmul/conv/attention": 0.0, "everything else": 0.0}
    for _, group, _, millis in ops:
        groups[group] += millis
    in_ops = sum(groups.values())
    groups["outside the ops"] = max(wall - in_ops, 0.0)
    whole = max(wall, in_ops)
    clock = "self CUDA time" if cuda else "self CPU time"
    notes = [
        (
            f"{args.profile}, eager{', oneDNN linears' if onednn else ''}, {shape.label}, {shape.image_size} px, "
            f"batch {shape.batch_size}, {args.precision}"
        ),
        f"torch.profiler over {case.steps} steps after {case.warmup} warmup steps; {clock} of each op, per step",
        f"step: {wall:,.1f} ms wall (profiled), {in_ops:,.1f} ms of it in the ops; shares of the wall time",
    ]
    top = [
        [name, group, f"{calls:,.1f}", f"{millis:,.2f}", f"{millis / whole:.1%}"] for name, group, calls, millis in ops
    ]
    group_rows = [[group, f"{millis:,.2f}", f"{millis / whole:.1%}"] for group, millis in groups.items()]
    title = f"Where the training step's time goes (benchmarks/roofline.py --profile {args.profile})"
    return (
        header_lines(title, device, *notes)
        + markdown_table(["op", "group", "calls/step", "ms/step", "share"], top[: args.top])
        + [""]
        + markdown_table(["group", "ms/step", "share"], group_rows)
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--jepa-shape", choices=["vit-tiny", "quickstart"], default="vit-tiny")
    parser.add_argument("--image-size", type=int, default=None, help="default: each method's shape")
    parser.add_argument("--batch-size", type=int, default=None, help="default: each method's shape")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (the first one counts the FLOPs)")
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend, e.g. aot_eager")
    parser.add_argument("--precision", default=None, help="default: bf16-mixed on a GPU, 32-true on a CPU")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--matmul-size", type=int, default=None, help="default: 8192 on a GPU, 2048 on a CPU")
    parser.add_argument("--matmul-repeats", type=int, default=5)
    parser.add_argument("--profile", choices=list(METHODS), default=None, help="profile this method instead")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="ops listed by --profile")
    parser.add_argument("--no-publish", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    for name in ("image_size", "batch_size", "matmul_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    for name in ("steps", "warmup", "matmul_repeats", "profile_steps", "top"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1 (warmup: the FLOPs are counted untimed)")
    cuda = benchmark_device(args.accelerator).type == "cuda"
    args.precision = args.precision or ("bf16-mixed" if cuda else "32-true")
    args.matmul_size = args.matmul_size or (8192 if cuda else 2048)
    return args


def main() -> None:
    args = parse_args()
    device = benchmark_device(args.accelerator)
    if args.profile:
        lines = profile_lines(args, device)
    else:
        dtype = compute_dtype(args.precision)
        per_repeat = 10 if device.type == "cuda" else 1
        kernels = ("blas", "onednn") if device.type == "cpu" else ("blas",)
        rates = {
            kernel: matmul_flops_per_second(device, dtype, args.matmul_size, args.matmul_repeats, per_repeat, kernel)
            for kernel in kernels
        }
        roofline = max(rates.values())
        print(f"roofline: {roofline / 1e9:,.1f} GFLOP/s", flush=True)
        rows = roofline_rows(args, roofline, device)
        jepa = method_shape("ijepa", args)
        notes = [
            (
                f"roofline: {roofline / 1e9:,.1f} GFLOP/s, the best of {args.matmul_repeats} timed {str(dtype)[6:]} "
                f"{args.matmul_size}×{args.matmul_size} matmuls on the {device.type.upper()}: "
                + ", ".join(f"{ROOFLINE_KERNELS[kernel]} {rate / 1e9:,.1f}" for kernel, rate in rates.items())
            ),
            (
                f"precision {args.precision}; images/s over {args.steps} steps after {args.warmup} warmup steps, "
                "images generated on the device; fused AdamW with methods.py's hyper-parameters"
            ),
            (
                f"shapes: ijepa/flexpredict {jepa.label}; the others methods.py defaults (narrow ResNet-18, "
                "512-d projector), channels_last=True"
            ),
            (
                "GFLOP/step: FlopCounterMode over the first (eager, untimed) step: matmuls, convolutions and "
                "attention of forward and backward (I-JEPA's target encoder: forward); the compiled row reuses it"
            ),
            f"compile: compile=True, backend {args.compile_backend}"
            if not args.no_compile
            else "compile: not measured",
        ]
        columns = ["method", "variant", "shape", "GFLOP/step", "images/s", "GFLOP/s", "share of roofline"]
        title = "Share of roofline: training-step FLOP/s over matmul FLOP/s (benchmarks/roofline.py)"
        lines = header_lines(title, device, *notes) + markdown_table(columns, rows)
    publish(lines, append=not args.no_publish)


if __name__ == "__main__":
    main()
