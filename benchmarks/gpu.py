"""The GPU measurements of issue #18 in one command: throughput, MFU, memory and host syncs.

Everything runs on generated random data (no download, no dataset); the images are generated on
the GPU, so no host-to-device copy is timed. Each part runs on its own: one that fails (out of
memory, a compiler error) is recorded with its error and the next one starts. After every part
``--out DIR`` gets ``gpu_results.json`` (all parts so far) and ``gpu_results.md`` (their table),
and the part's result is printed.

Parts (``--parts``; the default runs them all, in this order, the compiled ones last):

- ``matmul``: the roofline, the best FLOP/s of 8192 × 8192 bfloat16 matmuls (10 per timed run,
  best of 5 runs): the measured peak;
- ``data``: the data pipeline alone: batched on-device views (``ssl_lightning.data.batched``,
  ``data_throughput.batched``) of the two-view (VICReg) and the I-JEPA recipe at 224 px, batch
  256, images/s;
- ``vicreg``: VICReg ResNet-50 with the paper's 8192-8192-8192 projector, ``channels_last``,
  bf16-mixed, 224 px, batch 128 (two views each), eager;
- ``ijepa``: I-JEPA ViT-B/16 (``vit_base_patch16_224``; predictor 384 × 6) at 224 px, batch 128,
  bf16-mixed, eager;
- ``fsdp``: I-JEPA ViT-H/14 (``vit_huge_patch14_224``; predictor 384 × 12) under FSDP2 on one
  device (Lightning's ``ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)``: the
  method shards its three networks block by block in ``configure_model``), bf16-mixed, batch 128;
- ``ijepa_compiled``, ``vicreg_compiled``: the ``ijepa`` and ``vicreg`` parts with ``compile=True``
  (inductor; ``--compile-warmup`` untimed steps, which include the compilation).

Each training part times ``--steps`` full Lightning training steps (forward, loss, backward,
fused AdamW, schedules, EMA) after ``--warmup`` untimed ones and reports images/s, the peak
memory the part allocated (``torch.cuda.max_memory_allocated``, reset before each part) and the
model FLOPs of one step: ``FlopCounterMode`` over the first (untimed, eager) step, counting the
matmuls, convolutions and attention of forward and backward (I-JEPA's target encoder: forward
only); the compiled parts reuse the eager part's count. I-JEPA's count is of that step's masks,
whose lengths vary from step to step. Then

    achieved FLOP/s = FLOPs per step × steps per second (images/s ÷ batch),
    MFU = achieved ÷ peak,

once against the bf16 matmul throughput measured by ``matmul`` in the same run, once against the
datasheet's dense bf16 peak (``training_step.PEAK_BF16_FLOPS``: 989 TFLOP/s for H100 SXM and
H200). ``--sync-debug`` sets ``torch.cuda.set_sync_debug_mode("warn")`` during the timed steps of
the I-JEPA parts and counts the warnings: host syncs per step (Lightning's included), with the
source lines that cause most of them in the JSON.

    python benchmarks/gpu.py --out gpu_results --sync-debug     # on the GPU machine, a few minutes
    python benchmarks/gpu.py --smoke --out /tmp/gpu_smoke         # tiny sizes, any machine (< 1 min on a CPU)
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from data_throughput import RECIPES, batched
from lightning.pytorch import Callback
from lightning.pytorch.strategies import ModelParallelStrategy
from report import header_lines, markdown_table
from training_step import (
    StepFlops,
    benchmark_device,
    compute_dtype,
    datasheet_peak,
    fresh_module,
    images_per_second,
    matmul_flops_per_second,
    use_fused_adamw,
)

PARTS = ["matmul", "data", "vicreg", "ijepa", "fsdp", "ijepa_compiled", "vicreg_compiled"]
TINY_VIT = {"patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 2, "pred_dim": 32, "pred_depth": 1}


@dataclass(frozen=True)
class Network:
    """A method's backbone (a timm name, or None for the method's own small one) and further
    options, and its name in the table."""

    label: str
    backbone: str | None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run: the GPU run's (:data:`FULL`) or ``--smoke``'s (:data:`SMOKE`)."""

    image_size: int
    batch_size: int
    vit_b: Network  # of the ``ijepa`` parts
    vit_h: Network  # of the ``fsdp`` part
    resnet: Network  # of the ``vicreg`` parts
    matmul_size: int
    data_batch_size: int
    steps: int
    warmup: int
    compile_warmup: int
    compile_backend: str


RESNET50_8192 = {"projector_dims": [8192, 8192, 8192], "channels_last": True}
FULL = Sizes(
    image_size=224,
    batch_size=128,
    vit_b=Network("I-JEPA ViT-B/16", "vit_base_patch16_224"),
    vit_h=Network("I-JEPA ViT-H/14, FSDP2", "vit_huge_patch14_224", {"pred_depth": 12}),
    resnet=Network("VICReg ResNet-50 8192³", "resnet50", RESNET50_8192),
    matmul_size=8192,
    data_batch_size=256,
    steps=10,
    warmup=3,
    compile_warmup=5,
    compile_backend="inductor",
)
SMOKE = Sizes(
    image_size=32,
    batch_size=4,
    vit_b=Network("I-JEPA tiny ViT", None, TINY_VIT),
    vit_h=Network("I-JEPA tiny ViT, FSDP2", None, TINY_VIT),
    # NCHW: channels-last convolutions this narrow can take seconds per step on some CPUs (AMD EPYC).
    resnet=Network("VICReg narrow ResNet-18", None, {"projector_dims": [64, 64, 64]}),
    matmul_size=256,
    data_batch_size=4,
    steps=2,
    warmup=1,
    compile_warmup=2,
    compile_backend="aot_eager",
)


class HostSyncs(Callback):
    """Host syncs of the timed steps: CUDA's sync debug mode is "warn" from the start of the first
    timed batch to the end of the epoch (the steps and what Lightning does between them; the step
    timer's own syncs are hidden from it), and its warnings are recorded."""

    MESSAGE = "called a synchronizing CUDA operation"

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.catcher: warnings.catch_warnings | None = None
        self.records: list = []
        self.count = 0
        self.sites: list[tuple[str, int]] = []  # (file:line, syncs there), most first

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.catcher = warnings.catch_warnings(record=True)
            self.records = self.catcher.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.close()

    def on_train_end(self, trainer, pl_module) -> None:
        self.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.close()

    def close(self) -> None:
        if self.catcher is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self.catcher.__exit__(None, None, None)
        self.catcher = None
        syncs = [record for record in self.records if self.MESSAGE in str(record.message)]
        self.count = len(syncs)
        self.sites = Counter(f"{record.filename}:{record.lineno}" for record in syncs).most_common(5)


def train(
    args: argparse.Namespace,
    method: str,
    network: Network,
    compiled: bool = False,
    strategy="auto",
    sync_debug: bool = False,
) -> dict:
    """Time ``method`` built with ``network`` at the run's image size and batch: images/s, GFLOP per
    step (eager only), parameters, host syncs per step (``sync_debug``)."""
    options = dict(network.options)
    if compiled:
        options |= {"compile": True, "compile_options": {"backend": args.compile_backend}}
    step_args = argparse.Namespace(
        image_size=args.sizes.image_size,
        in_chans=3,
        backbone=network.backbone,
        batch_size=args.sizes.batch_size,
        steps=args.steps,
        warmup=args.compile_warmup if compiled else args.warmup,
        accelerator=args.accelerator,
        precision=args.precision,
    )
    module, num_views = fresh_module(method, step_args, **options)
    use_fused_adamw(module)
    flops = None if compiled else StepFlops()
    syncs = HostSyncs(step_args.warmup) if sync_debug else None
    callbacks = [callback for callback in (flops, syncs) if callback is not None]
    speed = images_per_second(module, num_views, step_args, callbacks, strategy, on_device=True)
    result = {"batch_size": step_args.batch_size, "images_per_second": speed}
    result["parameters_millions"] = sum(param.numel() for param in module.parameters()) / 1e6
    if flops is not None:
        result["gflop_per_step"] = flops.flops / 1e9
    if syncs is not None:
        result |= {"host_syncs_per_step": syncs.count / args.steps, "host_sync_sites": syncs.sites}
    return result


def compiled_part(
    args: argparse.Namespace, results: dict, eager: str, method: str, network: Network, **options
) -> dict:
    """``train`` with ``compile=True``; the FLOPs per step are the eager part's, when it ran."""
    result = train(args, method, network, compiled=True, **options)
    if "gflop_per_step" in results.get(eager, {}):
        result["gflop_per_step"] = results[eager]["gflop_per_step"]
    return result


def fsdp_part(args: argparse.Namespace, sync_debug: bool) -> dict:
    """I-JEPA ViT-H/14 sharded by FSDP2 over a one-device mesh."""
    strategy = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)
    return train(args, "ijepa", args.sizes.vit_h, strategy=strategy, sync_debug=sync_debug)


def data_part(args: argparse.Namespace) -> dict:
    """Images/s of the batched on-device views of the two-view and the I-JEPA recipe."""
    options = argparse.Namespace(batch_size=args.sizes.data_batch_size, batches=args.steps)
    size, device = args.sizes.image_size, args.device
    speeds = {name: batched(RECIPES[name](), size, options, device) for name in ("two-view", "I-JEPA")}
    note = f"I-JEPA views: {speeds['I-JEPA']:,.0f} images/s"
    return {"images_per_second": speeds["two-view"], "ijepa_images_per_second": speeds["I-JEPA"], "note": note}


def matmul_part(args: argparse.Namespace) -> dict:
    """The measured peak: best FLOP/s of square matmuls in the steps' compute dtype."""
    per_repeat = 10 if args.device.type == "cuda" else 1
    flops = matmul_flops_per_second(args.device, args.dtype, args.sizes.matmul_size, 5, per_repeat)
    return {"tflops": flops / 1e12}


def parts(args: argparse.Namespace, results: dict) -> dict[str, tuple[str, Callable[[], dict]]]:
    """Each part's description and the function that measures it."""
    sizes = args.sizes
    sync = args.sync_debug and args.device.type == "cuda"

    def what(network: Network, compiled: bool = False) -> str:
        mode = "compiled" if compiled else "eager"
        return f"{network.label}, {sizes.image_size} px, batch {sizes.batch_size}, {mode}"

    vicreg, ijepa = ("vicreg", sizes.resnet), ("ijepa", sizes.vit_b)
    return {
        "matmul": (f"{sizes.matmul_size}² matmuls, {args.dtype}", partial(matmul_part, args)),
        "data": (f"batched views, {sizes.image_size} px, batch {sizes.data_batch_size}", partial(data_part, args)),
        "vicreg": (what(sizes.resnet), partial(train, args, *vicreg)),
        "ijepa": (what(sizes.vit_b), partial(train, args, *ijepa, sync_debug=sync)),
        "fsdp": (what(sizes.vit_h), partial(fsdp_part, args, sync)),
        "ijepa_compiled": (
            what(sizes.vit_b, True),
            partial(compiled_part, args, results, "ijepa", *ijepa, sync_debug=sync),
        ),
        "vicreg_compiled": (what(sizes.resnet, True), partial(compiled_part, args, results, "vicreg", *vicreg)),
    }


def cleanup(device: torch.device) -> None:
    """Free what a part left (also after a failure): the process group of FSDP, cached GPU memory."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def with_mfu(result: dict, measured_peak: float | None, datasheet: float | None) -> dict:
    """``result`` with its achieved TFLOP/s and MFU against both peaks, where it has FLOPs."""
    if "gflop_per_step" not in result or "images_per_second" not in result:
        return result
    achieved = result["gflop_per_step"] * 1e9 * result["images_per_second"] / result["batch_size"]
    result = result | {"tflops": achieved / 1e12}
    if measured_peak:
        result["mfu_measured_peak"] = achieved / measured_peak
    if datasheet:
        result["mfu_datasheet_peak"] = achieved / datasheet
    return result


class Results:
    """The run's results, written to ``out/gpu_results.json`` and ``.md`` after every part."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.datasheet = datasheet_peak(args.device)
        self.parts: dict[str, dict] = {}

    def run(self, name: str, what: str, measure: Callable[[], dict]) -> None:
        start = time.perf_counter()
        print(f"== {name}: {what}", flush=True)
        try:
            result = {"status": "ok", **measure()}
            if self.args.device.type == "cuda" and name != "matmul":
                result["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.args.device) / 2**30
        except Exception as error:  # noqa: BLE001 (one part's failure must not stop the others)
            traceback.print_exc()
            result = {"status": "error", "error": f"{type(error).__name__}: {error}"[:2000]}
        finally:
            cleanup(self.args.device)
        measured = self.parts.get("matmul", {}).get("tflops")
        result = with_mfu(result, measured and measured * 1e12, self.datasheet)
        self.parts[name] = {"what": what, **result, "seconds": time.perf_counter() - start}
        print(json.dumps({name: self.parts[name]}), flush=True)
        self.write()

    def write(self) -> None:
        args = self.args
        info = {
            "device": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "precision": args.precision,
            "steps": args.steps,
            "warmup": args.warmup,
            "compile_warmup": args.compile_warmup,
            "compile_backend": args.compile_backend,
            "datasheet_peak_tflops": self.datasheet and self.datasheet / 1e12,
            "sizes": asdict(args.sizes),
        }
        text = json.dumps({"run": info, "parts": self.parts}, indent=2)
        (self.out / "gpu_results.json").write_text(text + "\n")
        (self.out / "gpu_results.md").write_text("\n".join(self.table()) + "\n")

    def table(self) -> list[str]:
        args = self.args
        datasheet = f"{self.datasheet / 1e12:,.0f} TFLOP/s" if self.datasheet else "unknown for this device"
        notes = [
            (
                f"precision {args.precision}; {args.steps} timed steps after {args.warmup} warmup steps (compiled: "
                f"{args.compile_warmup}, backend {args.compile_backend}); images generated on the device"
            ),
            (
                "MFU = GFLOP/step (FlopCounterMode, first eager step) × steps/s ÷ peak: the bf16 matmul peak "
                f"measured by the matmul part, and the datasheet's dense bf16 peak ({datasheet})"
            ),
        ]
        columns = ["part", "what", "status", "images/s", "GFLOP/step", "TFLOP/s", "MFU (measured)"]
        columns += ["MFU (datasheet)", "peak GiB", "syncs/step", "seconds", "note"]
        rows = [[name, part["what"], part["status"]] + cells(part) for name, part in self.parts.items()]
        title = "GPU benchmark (benchmarks/gpu.py" + (" --smoke)" if args.smoke else ")")
        return header_lines(title, args.device, *notes) + markdown_table(columns, rows)


def cells(part: dict) -> list[str]:
    """The table cells of one part's numbers (blank where it has none)."""

    def number(key: str, form: str) -> str:
        return format(part[key], form) if part.get(key) is not None else ""

    note = part.get("error") or part.get("note", "")
    return [
        number("images_per_second", ",.1f"),
        number("gflop_per_step", ",.4g"),
        number("tflops", ",.4g"),
        number("mfu_measured_peak", ".1%"),
        number("mfu_datasheet_peak", ".1%"),
        number("peak_memory_gib", ",.2f"),
        number("host_syncs_per_step", ",.1f"),
        number("seconds", ",.1f"),
        note.replace("|", "/").replace("\n", " ")[:200],
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_results.json and gpu_results.md")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS, help="run in the order given; default: all")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps: checks the script on any machine")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; --smoke: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 3; --smoke: 1)")
    parser.add_argument("--compile-warmup", type=int, default=None, help="of the compiled parts (default 5)")
    parser.add_argument("--compile-backend", default=None, help="default inductor (--smoke: aot_eager)")
    parser.add_argument("--sync-debug", action="store_true", help="count host syncs in the timed I-JEPA steps")
    parser.add_argument("--accelerator", default="auto", help="cpu: run on the CPU (with --smoke)")
    args = parser.parse_args()
    args.sizes = SMOKE if args.smoke else FULL
    for name in ("steps", "warmup", "compile_warmup"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1 (the FLOPs are counted on an untimed step)")
        setattr(args, name, value or getattr(args.sizes, name))
    args.compile_backend = args.compile_backend or args.sizes.compile_backend
    args.device = benchmark_device(args.accelerator)
    if args.device.type != "cuda" and not args.smoke:
        parser.error("no CUDA GPU here: the full sizes need one; use --smoke to check the script on a CPU")
    # bf16-mixed on the GPU; float32 for --smoke on a CPU, where bfloat16 kernels are slow.
    args.precision = "bf16-mixed" if args.device.type == "cuda" else "32-true"
    args.dtype = compute_dtype(args.precision)
    return args


def main() -> None:
    args = parse_args()
    results = Results(args)
    measures = parts(args, results.parts)
    for name in dict.fromkeys(args.parts):
        results.run(name, *measures[name])
    print("\n".join(results.table()), flush=True)
    failed = [name for name, part in results.parts.items() if part["status"] != "ok"]
    if failed:
        raise SystemExit(f"parts that failed: {', '.join(failed)} (errors in {args.out}/gpu_results.json)")


if __name__ == "__main__":
    main()
