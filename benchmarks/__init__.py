"""``pcdiff bench`` (``python -m benchmarks`` from the checkout): the engine and the CoDD layer measured in
one run, as ratios. Not part of the installed package; see ``benchmarks/README.md``.

Parts (``--only`` picks some):

  hmm     the compiled HMM vs a hand-written dense torch forward (the limit) and hmmlearn (CPU; CUDA too)
  layer   the layer's overhead per decoding step of the demo model, backbones of 1M, 10M, 100M parameters
  memory  the layer's time and peak memory vs H, L, V and batch
  gpu     ours vs pyjuice, and the layer's share of a step at LLaDA-8B shapes (CUDA only)

Each part prints its table and replaces its own section of the markdown report (``--out``), with
its plot next to it; every section states the machine and the command it came from.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import gpu, hmm, layer_overhead, memory
from .common import machine_info, torch_threads
from .report import Section, write_sections

__all__ = ["PARTS", "parse_parts", "run_bench"]

PARTS = ("hmm", "layer", "memory", "gpu")


def parse_parts(only: list[str] | None) -> list[str]:
    """``--only`` values (repeated and/or comma-separated) -> parts in canonical order; None = all."""
    if not only:
        return list(PARTS)
    chosen = {p.strip() for item in only for p in item.split(",") if p.strip()}
    unknown = sorted(chosen - set(PARTS))
    if unknown or not chosen:
        raise ValueError(f"--only: unknown part(s) {unknown or only}; choose from {', '.join(PARTS)}")
    return [p for p in PARTS if p in chosen]


def _devices(device: str) -> list[str]:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    if device == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [device]


def _gpu_missing(cuda: bool, quick: bool) -> str | None:
    """Why the GPU rows cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if not cuda:
        return "--device cpu"
    return "--quick" if quick else None


def run_bench(quick: bool = False, threads: int = 2, device: str = "auto", out: str | Path | None = None,
              only: list[str] | None = None, budget: float | None = None, seed: int = 0,
              command: str = "pcdiff bench", log=print) -> list[Section]:
    """Run the chosen parts, print each section, write them into ``out`` (None: print only)."""
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be a positive int, got {threads!r}")
    if budget is not None and not budget > 0:
        raise ValueError(f"--budget must be > 0 seconds, got {budget!r}")
    parts, devices = parse_parts(only), _devices(device)
    cuda = "cuda" in devices
    sections = []
    with torch_threads(threads):
        info = machine_info(threads, cuda)
        log(f"pcdiff bench: {info}")
        for part in parts:
            start = time.perf_counter()
            log(f"[{part}]")
            if part == "hmm":
                section = hmm.run(devices, quick, budget, seed, log)
            elif part == "layer":
                section = layer_overhead.run(quick, budget, seed, log)
            elif part == "memory":
                section = memory.run(devices, quick, budget, seed, log)
            else:
                section = gpu.run(_gpu_missing(cuda, quick), budget, seed, log)
            elapsed = time.perf_counter() - start
            if not section.placeholder:
                size = " (--quick: smoke-test sizes, not a measurement)" if quick else ""
                section.body = (f"Machine: {info}\n\nCommand: `{command}`{size}; this part took {elapsed:.0f} s.\n\n"
                                + section.body)
            log("\n" + section.body + "\n")
            sections.append(section)
    if out is not None:
        log("wrote " + ", ".join(map(str, write_sections(Path(out), sections))))
    return sections
