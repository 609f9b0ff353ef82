"""Ground truth known exactly: one-step, sequential and CoDD NLL against the true conditional entropy.

``python -m benchmarks.known_truth [--quick] [--seeds 0,1,2] [--adapter A] [--em-init-epochs E] [--out FILE]``

The data are samples of a reference distribution whose conditionals are exact: a random HMM built
with ``structures.hmm`` (sticky, peaked transitions and peaked emissions, so a token is evidence
about the hidden state many positions away: strong long-range coupling) over ``LENGTH`` positions
of a small alphabet. The tiny backbone (a fixed number of steps) and a CoDD layer (arXiv:2510.22510)
train on its samples; on held-out samples, for each masked fraction (exact mask counts), the
per-masked-token NLL of one-step, sequential (left-to-right and a random order; the better is the
floor) and CoDD scoring is set beside the truth, −log p_true(x_M | x_O) = log p(x_O) − log p(x) from
two exact marginal queries, whose mean over held-out samples is the true conditional entropy
H(X_M | X_O) (± its sampling error). "Truth, one-step" scores each masked token by its exact marginal
under the reference: the best any factorized prediction can do, so its excess over the truth is the
data's own factorization gap. "CoDD within x%" is (CoDD − truth) / (one-step − truth) at 50%.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

import structures
from pcdiff.app.controls import ONE_TOKEN
from pcdiff.app.scoring import backbone_scores, circuit_scores, fixed_masks, left_to_right, marginal_scores, mean_ci
from pcdiff.backbones import TinyDiffusionTransformer
from pcdiff.backbones.noise import corrupt
from pcdiff.codd import ADAPTERS, CoDDLayer
from pcdiff.data import ItemData, Vocabulary
from pcdiff.train import train_backbone, train_codd_layer

from .report import Section, invocation, write_sections

LENGTH, VOCAB = 16, 6
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Sizes:
    truth_states: int = 8
    stay: float = 0.95                  # P(z_{t+1} = z_t): the coupling reaches ~1 / (1 − stay) positions
    train: int = 20000
    heldout: int = 600
    backbone_dim: int = 64
    backbone_depth: int = 2
    backbone_steps: int = 1500
    layer_states: int = 32
    layer_steps: int = 400
    layer_lr: float = 1e-2
    adapter: str = "static"
    adapter_lr: float | None = None     # None: the trainer's default, layer_lr / 10
    em_init_epochs: int = 0             # EM epochs fitting the layer's circuit alone before its training


QUICK = Sizes(train=400, heldout=40, backbone_dim=16, backbone_depth=1, backbone_steps=20,
              layer_states=4, layer_steps=5)


def reference(states: int, stay: float, seed: int) -> structures.Circuit:
    """A random HMM over LENGTH positions of VOCAB tokens: transitions ``stay``·I + (1 − stay)·a random
    row, emissions drawn from a sparse Dirichlet (each state prefers a few tokens, shared with others)."""
    rng = np.random.default_rng(seed)
    transition = stay * np.eye(states) + (1 - stay) * rng.dirichlet(np.ones(states), size=states)
    emission = rng.dirichlet(np.full(VOCAB, 0.3), size=states)
    initial = rng.dirichlet(np.ones(states))
    return structures.hmm(LENGTH, states, VOCAB, initial=initial, transition=transition, emission=emission)


class SampledData(ItemData):
    """Items of exactly ``block_length`` tokens with no end symbol: each item's letters are its token ids."""

    def _encode(self, items: list[str]) -> torch.Tensor:
        ids = [[self.vocab.tokens.index(c) for c in item] for item in items]
        return torch.tensor(ids, dtype=torch.long).reshape(len(items), self.block_length)


def draw(truth: structures.CompiledCircuit, count: int, generator: torch.Generator) -> torch.Tensor:
    """``[count, LENGTH]`` exact samples of the reference (in chunks, within the sampler's size limit)."""
    pieces = [truth.sample(num_samples=min(4096, count - start), generator=generator)[:, 0]
              for start in range(0, count, 4096)]
    return torch.cat(pieces)


def make_data(truth, sizes: Sizes, seed: int) -> SampledData:
    generator = torch.Generator().manual_seed(seed)
    letters = [chr(ord("a") + v) for v in range(VOCAB)]
    as_items = lambda rows: ["".join(letters[v] for v in row) for row in rows.tolist()]   # noqa: E731
    return SampledData(train_items=as_items(draw(truth, sizes.train, generator)),
                       heldout_items=as_items(draw(truth, sizes.heldout, generator)),
                       vocab=Vocabulary(letters), block_length=LENGTH, name="known-truth")


def table(truth, backbone, layer, x0: torch.Tensor, seed: int) -> dict[str, dict[str, dict]]:
    """``{"1 token" or fraction: {method: mean ± CI}}`` per masked token, the truth on the same masks."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    # one masked token (no factorization gap there: whatever CoDD gains is a repair of the backbone) is drawn
    # last, so the fractions' masks are those of the runs published before it had a row; it is listed first
    for label, count in {**{str(f): round(f * LENGTH) for f in FRACTIONS}, ONE_TOKEN: 1}.items():
        masked = fixed_masks(x0, count, generator)
        orders = {"left_to_right": left_to_right(x0), "random": torch.rand(x0.shape, generator=generator)}
        scores = backbone_scores(backbone, layer, x0, masked, orders)
        scores["truth"] = circuit_scores(truth, x0, masked)
        scores["truth_one_step"] = marginal_scores(truth, x0, masked)     # the best factorized prediction
        scores["circuit_alone"] = circuit_scores(layer.circuit, x0, masked)       # the layer's circuit, no backbone
        row = {name: mean_ci(value.double() / count) for name, value in scores.items()}
        best = min(("sequential:left_to_right", "sequential:random"), key=lambda k: row[k]["mean"])
        row["sequential"] = {**row[best], "order": best.removeprefix("sequential:")}
        row["backbone_weight"] = mean_backbone_weight(backbone, layer, x0, masked)
        row["codd_gain"] = mean_ci((scores["one_step"] - scores["codd"]).double() / count)
        out[label] = row
    return {ONE_TOKEN: out.pop(ONE_TOKEN), **out}


def mean_backbone_weight(backbone, layer, x0: torch.Tensor, masked: torch.Tensor) -> float | None:
    """The mean of the exponent β the layer's adapter puts on the backbone over these blocks (None
    when the adapter sets none): how far the trained product trusts the backbone at this fraction."""
    hidden = backbone(corrupt(x0, masked, backbone)).hidden if layer.needs_hidden else None
    weight = layer.adapter(layer.circuit, hidden).backbone_weight
    return None if weight is None else float(weight.double().mean())


def run(sizes: Sizes, seed: int, progress: bool) -> tuple[dict, dict]:
    truth = structures.compile(reference(sizes.truth_states, sizes.stay, seed), dtype=torch.float64)
    data = make_data(truth, sizes, seed)
    torch.manual_seed(seed)
    backbone = TinyDiffusionTransformer(data.vocab.size, data.vocab.mask_id, LENGTH, dim=sizes.backbone_dim,
                                        depth=sizes.backbone_depth)
    started = time.perf_counter()
    trained = train_backbone(backbone, data, steps=sizes.backbone_steps, seed=seed, progress=progress)
    backbone.eval().requires_grad_(False)
    layer = CoDDLayer.from_structure("hmm", LENGTH, data.vocab.size, num_states=sizes.layer_states, seed=seed,
                                     adapter=sizes.adapter,
                                     mask_id=data.vocab.mask_id, backbone_hidden_size=backbone.hidden_size)
    layer_run = train_codd_layer(layer, backbone, data, steps=sizes.layer_steps, lr=sizes.layer_lr, seed=seed,
                                 progress=progress, em_init_epochs=sizes.em_init_epochs, adapter_lr=sizes.adapter_lr,
                                 eval_every=max(1, sizes.layer_steps // 5))
    with torch.no_grad():
        rows = table(truth, backbone, layer, data.encode_heldout(), seed)
    # the layer's held-out objective (CoDD) at each fifth of its run: is it still falling?
    curve = [(r["steps"], r["heldout"]["codd"]) for r in layer_run["history"] if r.get("heldout")]
    info = {"seconds": time.perf_counter() - started, "backbone_heldout_loss": trained["heldout_loss"],
            "layer_curve": curve}
    return rows, info


def within(row: dict, method: str = "codd") -> float:
    """(method − truth) / (one-step − truth): 0 = exact, 1 = no better than one-step. For "sequential"
    it is where the backbone's own exact chain rule stands: a layer that corrects the factorization
    and not the backbone's conditionals gets no closer to the truth than that."""
    truth = row["truth"]["mean"]
    return (row[method]["mean"] - truth) / (row["one_step"]["mean"] - truth)


def markdown(rows: dict, sizes: Sizes, seed: int, info: dict) -> str:
    pm = lambda cell: f"{cell['mean']:.4f} ± {cell['ci95']:.4f}"                  # noqa: E731
    lines = [f"Known truth: random sticky HMM ({sizes.truth_states} states, stay {sizes.stay}) over {LENGTH} "
             f"positions of {VOCAB} tokens; {sizes.train} training / {sizes.heldout} held-out samples; backbone "
             f"dim {sizes.backbone_dim} depth {sizes.backbone_depth}, {sizes.backbone_steps} steps (held-out "
             f"diffusion loss {info['backbone_heldout_loss']:.3f}); CoDD HMM layer {sizes.layer_states} states, "
             f"{sizes.layer_steps} steps at lr {sizes.layer_lr:g}, adapter {sizes.adapter}"
             + (f" at lr {sizes.adapter_lr:g}" if sizes.adapter_lr is not None else "")
             + (f", circuit first fit alone by {sizes.em_init_epochs} EM epochs" if sizes.em_init_epochs else "")
             + f"; seed {seed}; {info['seconds']:.0f} s.", "",
             "The layer's held-out CoDD objective by step: "
             + ", ".join(f"{step}: {value:.4f}" for step, value in info["layer_curve"]) + ".", "",
             "Nats per masked token, mean ± 95% CI over held-out samples (truth: exact −log p(x_M | x_O)).", "",
             "| masked | truth | truth, one-step | sequential (best order) | CoDD | one-step | the layer's circuit "
             "alone | sequential, % of the way truth→one-step | CoDD, % of the way |", "|---" * 9 + "|"]
    for fraction, row in rows.items():
        lines.append(f"| {fraction} | {pm(row['truth'])} | {pm(row['truth_one_step'])} | "
                     f"{pm(row['sequential'])} ({row['sequential']['order']}) | "
                     f"{pm(row['codd'])} | {pm(row['one_step'])} | {pm(row['circuit_alone'])} | "
                     f"{100 * within(row, 'sequential'):.1f}% | "
                     f"{100 * within(row):.1f}% |")
    weights = {fraction: row["backbone_weight"] for fraction, row in rows.items()}
    if all(value is not None for value in weights.values()):
        lines += ["", "The exponent β the layer puts on the backbone (p̂ ∝ C · Π q_i^β), mean over the blocks: "
                  + ", ".join(f"{fraction}: {value:.3f}" for fraction, value in weights.items()) + "."]
    one = rows[ONE_TOKEN]
    lines += ["", f"At one masked token CoDD gains {pm(one['codd_gain'])} nats over one-step, where the backbone "
                  f"is {one['one_step']['mean'] - one['truth']['mean']:.4f} nats above the truth."]
    lines += ["", f"At 50% masked CoDD is within {100 * within(rows['0.5']):.1f}% of the way from the true "
                  f"conditional entropy to one-step (target: ≤ 25%); the backbone's own sequential score is at "
                  f"{100 * within(rows['0.5'], 'sequential'):.1f}%."]
    return "\n".join(lines) + "\n"


def over_seeds(results: dict[int, dict], command: str) -> str:
    """Mean ± sd over seeds of each column and of "CoDD, % of the way", per masked fraction."""
    sd = lambda values: statistics.stdev(values) if len(values) > 1 else 0.0                # noqa: E731
    ms = lambda values: f"{statistics.fmean(values):.4f} ± {sd(values):.4f}"                 # noqa: E731
    pct = lambda values: f"{100 * statistics.fmean(values):.1f}% ± {100 * sd(values):.1f}"  # noqa: E731
    columns = ("truth", "truth_one_step", "sequential", "codd", "one_step", "circuit_alone")
    lines = [f"Over seeds {', '.join(map(str, results))} (`{command}`): nats per masked token, mean over seeds "
             "± their standard deviation.", "",
             "| masked | truth | truth, one-step | sequential (best order) | CoDD | one-step | the layer's circuit "
             "alone | sequential, % of the way | CoDD, % of the way |", "|---" * 9 + "|"]
    for fraction in next(iter(results.values())):
        rows = [result[fraction] for result in results.values()]
        cells = [ms([row[c]["mean"] for row in rows]) for c in columns]
        lines.append(f"| {fraction} | " + " | ".join(cells) + f" | {pct([within(r, 'sequential') for r in rows])} | "
                     f"{pct([within(r) for r in rows])} |")
    ones = [result[ONE_TOKEN] for result in results.values()]
    lines += ["", f"CoDD's gain over one-step at one masked token (no factorization gap there): "
                  f"{ms([row['codd_gain']['mean'] for row in ones])} nats; the backbone's excess over the truth "
                  f"there {ms([row['one_step']['mean'] - row['truth']['mean'] for row in ones])}."]
    return "\n".join(lines) + "\n"


def report_section(sizes: Sizes, base: Sizes, body: str) -> Section:
    """The run's own section: keyed by its adapter, states, EM warm start and (when not ``base``'s)
    backbone length, so that runs of different layers or backbones sit side by side."""
    longer = sizes.backbone_steps != base.backbone_steps
    warm = f"-em{sizes.em_init_epochs}" if sizes.em_init_epochs else ""
    backbone = f"-b{sizes.backbone_steps}" if longer else ""
    title = (f"Known truth over seeds: {sizes.adapter} adapter, {sizes.layer_states} states"
             + (", EM warm start" if warm else "") + (f", backbone {sizes.backbone_steps:,} steps" if longer else ""))
    return Section(f"known-truth-{sizes.adapter}-{sizes.layer_states}{warm}{backbone}", title, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.known_truth", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
    parser.add_argument("--seeds", default="0", help="comma list of seeds (several: a mean ± sd table too)")
    parser.add_argument("--out", help="markdown file to put the report in as a section of its own")
    parser.add_argument("--backbone-steps", type=int,
                        help=f"the backbone's training steps (default {Sizes.backbone_steps})")
    parser.add_argument("--layer-steps", type=int, help=f"the layer's training steps (default {Sizes.layer_steps})")
    parser.add_argument("--layer-lr", type=float, help=f"the layer's Adam learning rate (default {Sizes.layer_lr:g})")
    parser.add_argument("--layer-states", type=int, help=f"the layer's HMM states (default {Sizes.layer_states})")
    parser.add_argument("--adapter", choices=sorted(ADAPTERS), help="the layer's adapter (default static)")
    parser.add_argument("--adapter-lr", type=float,
                        help="the adapter's Adam learning rate (default: the layer's lr / 10)")
    parser.add_argument("--em-init-epochs", type=int,
                        help="EM epochs fitting the layer's circuit alone before its training (default 0: none)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    sizes = base = QUICK if args.quick else Sizes()
    changes = {"backbone_steps": args.backbone_steps, "layer_steps": args.layer_steps, "layer_lr": args.layer_lr,
               "layer_states": args.layer_states, "adapter": args.adapter, "em_init_epochs": args.em_init_epochs,
               "adapter_lr": args.adapter_lr}
    sizes = replace(sizes, **{key: value for key, value in changes.items() if value is not None})
    seeds = [int(seed) for seed in args.seeds.split(",")]
    results, reports = {}, []
    for seed in seeds:
        results[seed], info = run(sizes, seed, progress=not args.quiet)
        reports.append(markdown(results[seed], sizes, seed, info))
        print(reports[-1], flush=True)
    summary = [over_seeds(results, invocation("benchmarks.known_truth", argv))] if len(seeds) > 1 else []
    print(*summary)
    if args.out:     # the per-seed reports were printed as they came; the file gets the summary first
        write_sections(Path(args.out), [report_section(sizes, base, "\n".join(summary + reports))])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
