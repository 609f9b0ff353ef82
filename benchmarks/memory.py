"""How the CoDD layer's time and peak memory grow with H, L, V and the batch, one axis at a time.

From a base configuration, each axis is swept with the others held: the latent states H of the
static HMM layer, the block length L, the vocabulary V and the batch B. Two workloads per point:

* ``decode``: one decoding step's proposal, ``BlockDecoder.step`` with ``codd="joint"`` (exact joint
  sample + exact marginals) on a half-masked block, under ``torch.no_grad``;
* ``train``: the layer's training loss, exact −log p̂ of the masked tokens (``layer.nll``), and its
  backward pass into the circuit's parameters (backbone logits fixed, as in the paper's training).

Peak memory is measured (see :data:`benchmarks.common.MEMORY_HOW`) and set against one
[B, L, V] float32 tensor, the size of the soft evidence, the layer's unavoidable input.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from pcdiff.codd import CoDDLayer
from pcdiff.decode import BlockDecoder

from .common import MEMORY_HOW, MIB, markdown_table, mib, peak_memory, warm_then_time
from .layer_overhead import half_masked_block
from .report import Section

KEY, TITLE = "memory", "CoDD layer time and peak memory vs H, L, V and batch"
AXES = ("H", "L", "V", "B")
WORKLOADS = ("decode", "train")
DEFAULT_BUDGET = 2.0
# L stops at 64: structures.compile deep-copies the circuit recursively and hits Python's recursion
# limit for HMMs of about 96 positions or more.
FULL = dict(base=dict(H=128, L=32, V=1024, B=64),
            sweep=dict(H=(32, 128, 512), L=(8, 32, 64), V=(64, 1024, 16384), B=(8, 64, 256)))
QUICK = dict(base=dict(H=16, L=8, V=32, B=8), sweep=dict(H=(8, 16), L=(4, 8), V=(32, 128), B=(4, 8)))


@dataclass
class Point:
    device: str
    size: dict                          # H, L, V, B
    rounds: int
    seconds: dict[str, float]           # workload -> median seconds
    peak: dict[str, int]                # workload -> peak bytes during one call

    @property
    def evidence_bytes(self) -> int:
        return 4 * self.size["B"] * self.size["L"] * self.size["V"]


def workloads(size: dict, device: str, seed: int) -> dict:
    H, L, V, B = (size[a] for a in AXES)
    layer = CoDDLayer.from_structure("hmm", L, V, num_states=H, mask_id=V, seed=seed, device=device)
    tokens, masked = (t.to(device) for t in half_masked_block(L, V, B, seed))
    gen = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(B, L, V, generator=gen, device=device)
    x0 = torch.where(masked, torch.randint(0, V, (B, L), generator=gen, device=device), tokens)
    decoder = BlockDecoder(layer, mask_id=V, codd="joint", generator=gen)
    count = -(-L // 4)
    params = [p for p in layer.parameters() if p.requires_grad]

    def decode():
        with torch.no_grad():
            return decoder.step(logits, logits[..., :1], tokens, masked, count)   # static: hidden unused

    def train():
        return torch.autograd.grad(layer.nll(logits, None, x0, masked).sum(), params)
    return {"decode": decode, "train": train}


def measure(size: dict, device: str, budget: float, seed: int) -> Point:
    fns = workloads(size, device, seed)
    seconds, rounds = warm_then_time(fns, budget, 2, 10, device)
    return Point(device, dict(size), rounds, seconds, {w: peak_memory(fns[w], device) for w in WORKLOADS})


def configurations(plan: dict) -> list[dict]:
    """The base, then each axis's other values with the rest at the base (no duplicates)."""
    out = [dict(plan["base"])]
    for axis in AXES:
        out += [{**plan["base"], axis: v} for v in plan["sweep"][axis] if v != plan["base"][axis]]
    return out


def report(points: list[Point], plan: dict) -> str:
    head = ["device", "H", "L", "V", "B", "rounds", "decode ms", "train ms", "decode peak MiB",
            "train peak MiB", "[B,L,V] f32 MiB", "decode peak / [B,L,V]", "train peak / [B,L,V]"]
    cells = [[p.device, *(str(p.size[a]) for a in AXES), str(p.rounds),
              f"{1e3 * p.seconds['decode']:.1f}", f"{1e3 * p.seconds['train']:.1f}", mib(p.peak["decode"]),
              mib(p.peak["train"]), mib(p.evidence_bytes), f"{p.peak['decode'] / p.evidence_bytes:.1f}",
              f"{p.peak['train'] / p.evidence_bytes:.1f}"] for p in points]
    base = ", ".join(f"{a}={plan['base'][a]}" for a in AXES)
    hows = sorted({p.device for p in points})
    notes = [f"- Base {base}; one axis varied at a time. Static HMM layer, float32, random parameters and logits.",
             "- decode: `BlockDecoder.step(codd=\"joint\")` on a half-masked block (sample + marginals); "
             "train: `layer.nll` and its gradient w.r.t. the circuit's parameters.",
             *[f"- Peak memory on {d}: {MEMORY_HOW[d]}." for d in hows],
             "- `peak / [B,L,V]`: the peak in units of one float32 [B, L, V] tensor (the soft evidence)."]
    return "\n".join([markdown_table(head, cells), "", *notes])


def plot(points: list[Point], plan: dict, fig) -> None:
    fig.set_size_inches(15, 6.5)
    axes = fig.subplots(2, len(AXES))
    for col, axis in enumerate(AXES):
        for device_index, device in enumerate(sorted({p.device for p in points})):
            others = {a: plan["base"][a] for a in AXES if a != axis}
            sel = sorted((p for p in points if p.device == device and all(p.size[a] == v for a, v in others.items())),
                         key=lambda p: p.size[axis])
            xs = [p.size[axis] for p in sel]
            for i, w in enumerate(WORKLOADS):
                style = "os"[device_index % 2] + "-"
                axes[0, col].plot(xs, [1e3 * p.seconds[w] for p in sel], style, color=f"C{i}", label=f"{device} {w}")
                axes[1, col].plot(xs, [p.peak[w] / MIB for p in sel], style, color=f"C{i}", label=f"{device} {w}")
            axes[1, col].plot(xs, [p.evidence_bytes / MIB for p in sel], "k:", label=f"{device} one [B,L,V] f32")
        axes[0, col].set(title=f"time vs {axis}", ylabel="ms")
        axes[1, col].set(title=f"peak memory vs {axis}", ylabel="MiB", xlabel=axis)
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.legend(fontsize=6)


def run(devices: list[str], quick: bool = False, budget: float | None = None, seed: int = 0,
        log=print) -> Section:
    plan = QUICK if quick else FULL
    budget = 0.2 if quick else (budget or DEFAULT_BUDGET)
    points = []
    for device in devices:
        for size in configurations(plan):
            start = time.perf_counter()
            points.append(measure(size, device, budget, seed))
            log(f"  memory {device} " + " ".join(f"{a}={size[a]}" for a in AXES) +
                f": {points[-1].rounds} rounds, {time.perf_counter() - start:.1f} s")
    return Section(KEY, TITLE, report(points, plan), [lambda fig: plot(points, plan, fig)])
