"""Top-k CoDD at large vocabularies: the restricted layer's cost against the full one.

At LLaDA's vocabulary (V = 126,464) the full leaves cost a [L, V] @ [V, H] product per step. With
``top_k`` the layer keeps each masked position's k most likely tokens and is exact on that support
(:mod:`pcdiff.codd.evidence`; the core's :class:`structures.CandidateEvidence` gathers k emission
columns per position, L·H·k); a decoding step on it is the decoder's own
(``BlockDecoder(layer, codd="joint").step``: an exact joint sample of the restricted p̂ and its exact
marginals, from one upward pass), as in the LLaDA-shaped GPU row (:mod:`benchmarks.gpu`). This module
measures full against top-k, time and peak memory, for a decoding step and a training step
(``python -m benchmarks.topk`` from the repository root).
"""
from __future__ import annotations

import argparse
import time

import torch

from pcdiff.app.allocator import keep_heap_pages
from pcdiff.codd import CoDDLayer
from pcdiff.decode import BlockDecoder

from .common import MEMORY_HOW, markdown_table, mib, peak_memory, torch_threads, warm_then_time
from .layer_overhead import half_masked_block

__all__ = ["workloads", "measure", "report", "main", "DEFAULT_SIZE"]

#: the CPU measurement's sizes: latent states, block length, vocabulary, batch, candidates
DEFAULT_SIZE = dict(H=256, L=32, V=32768, B=8, k=1024)


# ------------------------------------------------------------------------------ full vs top-k
def workloads(size: dict, seed: int = 0, device="cpu") -> dict:
    """Zero-argument calls: decode and train, full and top-k, on one half-masked block batch."""
    H, L, V, B, k = (size[a] for a in ("H", "L", "V", "B", "k"))
    full = CoDDLayer.from_structure("hmm", L, V, num_states=H, mask_id=V, seed=seed, device=device)
    restricted = CoDDLayer(full.circuit, mask_id=V, top_k=k)                    # the same circuit
    tokens, masked = (t.to(device) for t in half_masked_block(L, V, B, seed))
    gen = torch.Generator(device=device).manual_seed(seed)
    logits = 3 * torch.randn(B, L, V, generator=gen, device=device)
    x0 = torch.where(masked, torch.randint(0, V, (B, L), generator=gen, device=device), tokens)
    count = -(-L // 4)
    params = [p for p in full.parameters() if p.requires_grad]
    fns = {}
    for name, layer in (("full", full), ("top-k", restricted)):
        decoder = BlockDecoder(layer, mask_id=V, codd="joint", generator=gen)

        def decode(decoder=decoder):
            with torch.no_grad():
                return decoder.step(logits, logits[..., :1], tokens, masked, count)   # static: hidden unused

        def train(layer=layer):
            return torch.autograd.grad(layer.nll(logits, None, x0, masked).sum(), params)
        fns[f"{name} decode"], fns[f"{name} train"] = decode, train
    return fns


def measure(size: dict = DEFAULT_SIZE, budget: float = 10.0, seed: int = 0, device="cpu") -> dict:
    fns = workloads(size, seed, device)
    seconds, rounds = warm_then_time(fns, budget, 2, 20, device)
    return {"size": dict(size), "rounds": rounds, "seconds": seconds,
            "peak": {name: peak_memory(fn, device) for name, fn in fns.items()}, "device": str(device)}


def report(row: dict) -> str:
    s, peak, size = row["seconds"], row["peak"], row["size"]
    head = ["workload", "full ms", "top-k ms", "top-k / full time", "full peak MiB", "top-k peak MiB",
            "top-k / full memory"]
    cells = [[w, f"{1e3 * s[f'full {w}']:.1f}", f"{1e3 * s[f'top-k {w}']:.1f}",
              f"{s[f'top-k {w}'] / s[f'full {w}']:.2f}", mib(peak[f"full {w}"]), mib(peak[f"top-k {w}"]),
              f"{peak[f'top-k {w}'] / max(1, peak[f'full {w}']):.2f}"] for w in ("decode", "train")]
    sizes = ", ".join(f"{a}={size[a]}" for a in ("H", "L", "V", "B", "k"))
    notes = [f"- Static HMM layer, float32, random parameters and logits; {sizes}; {row['rounds']} interleaved rounds.",
             "- decode: `BlockDecoder.step(codd=\"joint\")` on a half-masked block (exact joint sample + exact "
             "marginals from one upward pass); train: `layer.nll` (top-k: ground truth forced into the "
             "candidates) and its gradient w.r.t. the circuit's parameters.",
             f"- One float32 [B, L, V] tensor (the logits) is {mib(4 * size['B'] * size['L'] * size['V'])} MiB.",
             f"- Peak memory on {row['device']}: {MEMORY_HOW[torch.device(row['device']).type]}."]
    return "\n".join([markdown_table(head, cells), "", *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.topk", description=__doc__.split("\n")[0])
    for name, value in DEFAULT_SIZE.items():
        parser.add_argument(f"--{name}", type=int, default=value)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timed rounds")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    keep_heap_pages()
    start = time.perf_counter()
    with torch_threads(args.threads):
        row = measure({a: getattr(args, a) for a in DEFAULT_SIZE}, args.budget, device=args.device)
    print(report(row))
    print(f"\n(torch threads {args.threads}; took {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
