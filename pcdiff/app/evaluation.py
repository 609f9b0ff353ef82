"""The demo's measurements: perplexity vs masked fraction, generation quality, one-step infill.

Three ways to score the masked tokens of a held-out item x0 given the rest:
  one_step    the backbone's factorized prediction, every masked token scored from one forward pass;
  sequential  the chain rule with the backbone: reveal the masked tokens one at a time in random
              order, scoring each from a fresh forward pass (the factorization barrier's floor);
  codd        the CoDD layer's exact joint log-likelihood of all masked tokens at once.
"""
from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from ..codd.rules import draw
from ..data import ItemData
from ..decode import generate
from ..train.noise import corrupt
from .judge import judge_items
from .scoring import backbone_scores, batches, fixed_masks


def _masks(x0: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """``[N, L]`` bool, True at exactly ``max(1, round(fraction · L))`` random positions per row."""
    return fixed_masks(x0, round(fraction * x0.shape[1]), generator)


def masked_nll(backbone, layer, x0: torch.Tensor, fraction: float, seed: int = 0,
               batch_size: int = 512) -> dict[str, float]:
    """Per-masked-token NLL (nats) of one-step, sequential (one random order) and CoDD scoring at one
    masked fraction."""
    generator = torch.Generator().manual_seed(seed)
    masked = _masks(x0, fraction, generator)
    order_keys = torch.rand(x0.shape, generator=generator)
    scores = backbone_scores(backbone, layer, x0, masked, {"random": order_keys}, batch_size, generator)
    count = int(masked.sum())
    return {("sequential" if k.startswith("sequential") else k): float(v.double().sum()) / count
            for k, v in scores.items()}


def perplexity_table(backbone, layer, x0, fractions=(0.25, 0.5, 0.75, 1.0), seed: int = 0,
                     progress: bool = True) -> dict[str, dict[str, float]]:
    """``{"one_step"|"sequential"|"codd": {fraction: perplexity}}`` and the gap closed by CoDD."""
    table: dict[str, dict[str, float]] = {"one_step": {}, "sequential": {}, "codd": {}}
    for fraction in tqdm(fractions, desc="perplexity", disable=not progress):
        nll = masked_nll(backbone, layer, x0, fraction, seed=seed)
        for method, value in nll.items():
            table[method][str(fraction)] = math.exp(value)
    return table


def gap_closed(perplexity: dict[str, dict[str, float]]) -> dict[str, float]:
    """``(NLL_one_step − NLL_codd) / (NLL_one_step − NLL_sequential)`` per fraction."""
    out = {}
    for frac in perplexity["one_step"]:
        one, seq, codd = (math.log(perplexity[k][frac]) for k in ("one_step", "sequential", "codd"))
        out[frac] = (one - codd) / (one - seq) if abs(one - seq) > 1e-12 else float("nan")
    return out


@torch.no_grad()
def generation_table(backbone, layer, data: ItemData, steps_list, num_samples: int = 2000, seed: int = 0,
                     batch_size: int = 500, temperature: float = 1.0, remasking: str = "low_confidence",
                     progress: bool = True) -> dict[str, dict[str, dict]]:
    """Unconditional generation of whole items at several step counts, factorized vs CoDD."""
    length = data.block_length
    table: dict[str, dict[str, dict]] = {"factorized": {}, "codd": {}}
    jobs = [(mode, steps) for steps in steps_list for mode in ("factorized", "codd")]
    for mode, steps in tqdm(jobs, desc="generation", disable=not progress):
        generator = torch.Generator().manual_seed(seed + steps)
        pieces = []
        for rows in batches(num_samples, batch_size):
            prompt = torch.empty(rows.stop - rows.start, 0, dtype=torch.long)
            pieces.append(generate(backbone, prompt, layer=layer if mode == "codd" else None, gen_length=length,
                                   block_length=length, steps=steps, remasking=remasking, temperature=temperature,
                                   codd="joint" if mode == "codd" else "off", generator=generator))
        table[mode][str(steps)] = judge_items(torch.cat(pieces), data)
    return table


@torch.no_grad()
def infill_table(backbone, layer, data: ItemData, fractions=(0.25, 0.5, 0.75), seed: int = 0,
                 batch_size: int = 512) -> dict[str, dict[str, float]]:
    """Held-out items with a fraction masked, filled in one step; fraction of results that are real items."""
    x0 = data.encode_heldout()
    table: dict[str, dict[str, float]] = {"factorized": {}, "codd": {}}
    for fraction in fractions:
        generator = torch.Generator().manual_seed(seed)
        masked = _masks(x0, fraction, generator)
        filled = {"factorized": [], "codd": []}
        for rows in batches(len(x0), batch_size):
            x, m = x0[rows], masked[rows]
            out = backbone(corrupt(x, m, backbone, generator))
            dist = layer.distribution(out.logits, out.hidden, x, m)
            independent = draw(dist.factorized().probs, generator=generator)
            filled["factorized"].append(torch.where(m, independent, x))
            filled["codd"].append(dist.sample(generator=generator))
        for mode, pieces in filled.items():
            table[mode][str(fraction)] = judge_items(torch.cat(pieces), data)["valid"]
    return table


@torch.no_grad()
def sampling_overhead(backbone, layer, data: ItemData, steps: int, num_samples: int = 500,
                      seed: int = 0) -> dict[str, float]:
    """Seconds per sampled block with and without the layer, and their ratio."""
    length = data.block_length
    prompt = torch.empty(num_samples, 0, dtype=torch.long)
    seconds = {}
    for mode in ("factorized", "codd"):
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        generate(backbone, prompt, layer=layer if mode == "codd" else None, gen_length=length, block_length=length,
                 steps=steps, codd="joint" if mode == "codd" else "off", generator=generator)
        seconds[mode] = (time.perf_counter() - start) / num_samples
    return {"seconds_per_block_factorized": seconds["factorized"], "seconds_per_block_codd": seconds["codd"],
            "overhead_ratio": seconds["codd"] / seconds["factorized"]}
