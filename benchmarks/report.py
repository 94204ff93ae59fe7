"""Shared by the benchmark scripts: describe the machine and append a section to RESULTS.md."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import lightning
import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = "# Benchmark results\n\nEach section is appended by the benchmark script it names.\n"


def machine(device: torch.device) -> str:
    """CPU model, core count and, on x86 Linux, whether it has AVX-512 (machines of one model name differ
    by 3× in ViT steps per minute with and without it), plus the GPU when ``device`` is one."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cores = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    avx512 = ("AVX-512" if "avx512f" in flags else "no AVX-512") if flags else None
    details = ", ".join(filter(None, [f"{len(cores) or '?'} cores", avx512]))
    cpu = f"{cores[0] if cores else platform.processor()} ({details})"
    return f"{torch.cuda.get_device_name(device)}, {cpu}" if device.type == "cuda" else cpu


def header_lines(title: str, device: torch.device, *notes: str) -> list[str]:
    """Section title, date, machine and versions, then one bullet per note."""
    return [
        f"## {title}",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {machine(device)}",
        f"- torch {torch.__version__}, lightning {lightning.__version__}, CPU threads: {torch.get_num_threads()}",
        *[f"- {note}" for note in notes],
        "",
    ]


def markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table; columns after the first are right-aligned."""
    align = ["---"] + ["---:"] * (len(columns) - 1)
    return [f"| {' | '.join(columns)} |", f"|{'|'.join(align)}|", *[f"| {' | '.join(row)} |" for row in rows]]


def publish(lines: list[str], append: bool = True) -> None:
    """Print a section and, unless ``append`` is false (a benchmark's ``--no-publish``), append it to
    ``benchmarks/RESULTS.md``."""
    section = "\n".join(lines) + "\n"
    print(section)
    if not append:
        return
    if not RESULTS.exists():
        RESULTS.write_text(RESULTS_HEADER)
    with RESULTS.open("a") as results:
        results.write("\n" + section)
