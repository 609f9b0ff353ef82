"""The demo's likelihood figures and their controls over several seeds: mean ± sd (issue 13).

``python -m benchmarks.demo_seeds [--dataset words|python] [--seeds 0,1,2] [--layer-steps N] [--adapter A]
[--num-states K] [--em-init-epochs E] [--layer-draw time|count] [--cache-maskings M] [--backbone-checkpoint STEM]
[--out docs/results.md] [--quick]``

Every seed runs the demo's own pipeline (:func:`pcdiff.app.demo.prepare_run` →
:func:`~pcdiff.app.demo.train_prepared` → the controls of :func:`pcdiff.app.controls.control_table`)
on one data split (data seed 0) and the backbone shipped for it (``pcdiff train-backbone``, trained to
a plateau), so the seeds vary the layer's initialization and training, the masks and the sampled
orders. Without a shipped backbone for the split (``--quick``), each seed trains its own. Python lines
(``--dataset python``, blocks of 32) couple to the code backbone shipped for them;
``--backbone-checkpoint STEM`` couples every seed to a backbone `pcdiff train-backbone` wrote instead.

For each item set (in-distribution occurrences, unseen word types) and masked count, in nats per
masked token: one-step, the best sequential order (the floor), CoDD, and the two circuits alone (an
EM-fit HMM, the layer's circuit fit by Adam), and on in-distribution items the exact NLL under the
training distribution they are drawn from (the true floor) and its own one-step score (each masked
token from its exact marginal: the best factorized score); CoDD's gain at one masked token; gap closed
(one-step − CoDD) / (one-step − floor). Each figure is the mean over seeds ± their standard deviation.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import torch

from pcdiff.app.controls import ControlSettings, control_table
from pcdiff.app.demo import prepare_run, train_prepared
from pcdiff.app.defaults import (LAYER_DRAW, LAYER_LR, LAYER_MASKINGS, LAYER_STATES, LAYER_STEPS, fill_layer_options,
                                  layer_recipe)
from pcdiff.codd.adapters import ADAPTERS
from pcdiff.train.noise import ELBO_DRAWS

from .judged_options import dependence_option
from .report import invocation, publish

COLUMNS = ("one_step", "sequential_best", "codd", "hmm_em", "circuit_alone", "training_distribution",
           "training_distribution_one_step")
FRACTIONS = (0.25, 0.5, 0.75, 0.9, 1.0)
DEPENDENCE_TEXT = "; dependence only: the circuit's conditionals divided out"
# nats: two mean figures this close are one number in float32. With one token masked the dependence-only
# product is the backbone exactly; computed, its items differ by up to 8e-6 and their mean by up to 5e-7.
ROUNDING = 1e-5


def one_seed(seed: int, layer_steps: int, items: int, quick: bool, adapter: str = "static",
             num_states: int = LAYER_STATES, em_init_epochs: int = 0, dataset: str = "words",
             checkpoint: str | None = None, layer_draw: str = LAYER_DRAW, cache_maskings: int = LAYER_MASKINGS,
             dependence_only: bool = False) -> dict:
    """The controls of one seed's run (the demo's sizes, or tiny ones with ``quick``; the backbone at
    ``checkpoint`` when given, else the shipped one)."""
    sizes = dict(num_states=8) if quick else dict(num_states=num_states)
    if quick and checkpoint is None:                  # a checkpoint brings its own size
        sizes |= dict(backbone_dim=16, backbone_depth=1)
    run = prepare_run(dataset, seed=seed, data_seed=0, adapter=adapter, **sizes, dependence_only=dependence_only,
                      backbone="shipped" if checkpoint is None else pathlib.Path(checkpoint))
    train_prepared(run, backbone_steps=20 if quick else None, layer_steps=layer_steps, progress=False,
                   em_init_epochs=em_init_epochs, layer_draw=layer_draw, cache_maskings=cache_maskings)
    settings = ControlSettings(items=items, seed=seed, fractions=FRACTIONS, fit_epochs=1 if quick else 3)
    table = control_table(run.backbone, run.layer, run.data, run.settings["num_states"], settings, progress=False)
    return {"backbone": run.settings["backbone"], "sets": table["sets"]}


def mean_sd(values: list[float | None]) -> str:
    """"mean ± sd"; "–" where a seed has no value (gap closed where there is no gap)."""
    if any(v is None for v in values):
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def markdown(runs: dict[int, dict], info: dict) -> str:
    backbone = next(iter(runs.values()))["backbone"]
    made = f"the shipped backbone `{backbone['shipped']}` (" if "shipped" in backbone else \
        (f"the backbone checkpoint `{pathlib.Path(backbone.get('pretrained', '')).name}` "
         f"({backbone['config']['dim']}×{backbone['config']['depth']}, ")
    source = (f"{made}{backbone['steps']:,} steps; "
              f"held-out NLL at one masked token {backbone['heldout_1tok']:.4f}, change over the last fifth "
              f"{100 * backbone['plateau']['heldout_1tok']:.2f}%)" if "pretrained" in backbone
              else f"a backbone trained per seed ({backbone['steps']} steps: no shipped one matches)")
    lines = [f"Command: `{info['command']}`{' (--quick: smoke-test sizes, not a measurement)' if info['quick'] else ''}"
             f"; {info['seconds']:.0f} s on {torch.get_num_threads()} torch threads.", "",
             f"Seeds {', '.join(map(str, runs))} on one split (data seed 0), {source}; the CoDD HMM layer "
             f"({info['num_states']} states, {info['adapter']} adapter"
             f"{DEPENDENCE_TEXT if info['dependence_only'] else ''})"
             f" trained {info['layer_steps']} steps at "
             f"learning rate {LAYER_LR:g} per seed"
             + (f", its circuit first fit alone by {info['em_init_epochs']} EM epochs"
                if info['em_init_epochs'] else "")
             + (", its maskings drawn by count (k ~ U{1..L} masked, weight L/k)" if info['layer_draw'] == "count"
                else ", its maskings drawn by time (t ~ U(0, 1), weight 1/t)")
             + f", the backbone's outputs cached for {info['cache_maskings']} maskings per item"
             + f"; {info['items']} items per set and masked count. Nats per masked "
             "token, mean over seeds ± their standard deviation.", ""]
    first = next(iter(runs.values()))["sets"]
    for name in first:
        lines += [f"**{name.replace('_', ' ')}**", "",
                  "| masked | one-step | sequential (best order) | CoDD | HMM by EM alone | circuit alone | "
                  "training distribution (exact) | its one-step (exact) | CoDD gain over one-step | gap closed |",
                  "|" + "---|" * 10]
        for label in first[name]["rows"]:
            rows = [r["sets"][name]["rows"][label] for r in runs.values()]
            cells = [mean_sd([row[c]["mean"] if c in row else None for row in rows]) for c in COLUMNS]
            gain = mean_sd([row["codd_gain"]["mean"] for row in rows])
            closed = mean_sd([row["gap_closed"] for row in rows])
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {gain} | {closed} |")
        lines.append("")
    lines += ["Targets (issue 13), in distribution (the issue's set):", "", *targets(runs), "",
              "The same targets on unseen types, for comparison (not the issue's set):", "",
              *targets(runs, "unseen_types")]
    return "\n".join(lines) + "\n"


def targets(runs: dict[int, dict], item_set: str = "in_distribution") -> list[str]:
    """Issue 13's likelihood targets read off one item set's mean rows, each with its verdict."""
    rows = lambda label: [r["sets"][item_set]["rows"][label] for r in runs.values()]  # noqa: E731
    mean = lambda label, key: statistics.fmean(  # noqa: E731
        row[key] if isinstance(row[key], float) else row[key]["mean"] for row in rows(label))
    labels = list(next(iter(runs.values()))["sets"][item_set]["rows"])
    # within float32 rounding: at one masked token the three can be one number (the dependence-only product)
    ordered = [label for label in labels if mean(label, "sequential_best") - ROUNDING <= mean(label, "codd")
               <= mean(label, "one_step") + ROUNDING]
    gain = mean(labels[0], "codd_gain")
    verdict = lambda met: "met" if met else "missed"  # noqa: E731
    lines = [f"- sequential ≤ CoDD ≤ one-step at every masked count: {verdict(len(ordered) == len(labels))}"
             f" (holds at {', '.join(ordered) or 'none'})",
             f"- CoDD's gain at one masked token {gain:.4f} nats (target < 0.02: {verdict(abs(gain) < 0.02)})"]
    if "backbone_excess" in rows(labels[0])[0]:
        excess = mean(labels[0], "backbone_excess")
        share = f"; CoDD's gain is {gain / excess:.0%} of it" if excess > 0 else ""
        lines.append(f"  - the backbone's excess over the training distribution there (one-step − the exact floor): "
                     f"{excess:.4f} nats{share}")
    for label, target in (("0.5", 0.8), ("0.9", 0.4)):
        if label in labels:
            value = mean(label, "gap_closed")
            lines.append(f"- gap closed at {label} masked {value:.2f} (target ≥ {target}: "
                         f"{'met' if value >= target else 'missed'})")
            if "data_factorization_gap" in rows(label)[0]:
                lines.append(f"  - the data's own factorization gap there (its exact one-step − its exact joint) "
                             f"{mean(label, 'data_factorization_gap'):.4f} nats; the backbone's (one-step − "
                             f"sequential) {mean(label, 'factorization_gap'):.4f}; CoDD's gain "
                             f"{mean(label, 'codd_gain'):.4f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo_seeds", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("words", "python"), default="words",
                        help="the demo's data: words (default) or Python lines (blocks of 32)")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    parser.add_argument("--layer-steps", type=int,
                        help=f"layer training steps per seed (default: the demo's, {LAYER_STEPS}; 2 with --quick)")
    parser.add_argument("--adapter", choices=sorted(ADAPTERS), default="static",
                        help="the layer's adapter (default: the demo's, static)")
    parser.add_argument("--num-states", type=int,
                        help=f"the layer's latent states (default: the demo's for the data, {LAYER_STATES} for words)")
    parser.add_argument("--em-init-epochs", type=int, default=0,
                        help="EM epochs fitting the layer's circuit alone before its training (default 0: none)")
    parser.add_argument("--layer-draw", choices=ELBO_DRAWS,
                        help=f"how the layer's training maskings are drawn (default: the demo's, {LAYER_DRAW})")
    parser.add_argument("--cache-maskings", type=int,
                        help=f"cached backbone maskings per training item (default: the demo's, {LAYER_MASKINGS})")
    dependence_option(parser)
    parser.add_argument("--items", type=int, default=300, help="items per set and masked count")
    parser.add_argument("--backbone-checkpoint", metavar="STEM",
                        help="couple to this backbone (written by pcdiff train-backbone for the same split) instead "
                             "of the shipped one; its section apart")
    parser.add_argument("--out", help="markdown file to put the section in (e.g. docs/results.md)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
    args = parser.parse_args(argv)
    fill_layer_options(args, args.dataset)           # the demo's layer for this data, where a flag leaves it unset
    recipe = layer_recipe(args.dataset)
    seeds = [int(s) for s in args.seeds.split(",")]
    layer_steps = args.layer_steps or (2 if args.quick else LAYER_STEPS)
    started, runs = time.perf_counter(), {}
    for seed in seeds:
        runs[seed] = one_seed(seed, layer_steps, args.items, args.quick, args.adapter, args.num_states,
                              args.em_init_epochs, args.dataset, args.backbone_checkpoint, args.layer_draw,
                              args.cache_maskings, args.dependence_only)
        print(f"seed {seed}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    info = dict(command=invocation("benchmarks.demo_seeds", argv), quick=args.quick,
                seconds=time.perf_counter() - started, layer_steps=layer_steps, items=args.items,
                adapter=args.adapter, num_states=args.num_states, em_init_epochs=args.em_init_epochs,
                layer_draw=args.layer_draw, cache_maskings=args.cache_maskings, dependence_only=args.dependence_only)
    # the demo's own layer keeps the section the docs cite; any other layer gets a section of its own, named
    # by all of its settings (not by how they differ from the demo's, which changes); --quick's tiny layer
    # is keyed by what was asked for
    requested_steps = args.layer_steps or LAYER_STEPS
    layer = (args.adapter, args.num_states, args.em_init_epochs, args.layer_draw, args.cache_maskings, requested_steps,
             args.dependence_only)
    warm = f"-em{args.em_init_epochs}" if args.em_init_epochs else ""
    key, title = ("demo-seeds", "The demo over three seeds, with its controls (issue 13)") \
        if layer == ("static", recipe.num_states, 0, recipe.draw, recipe.cache_maskings, LAYER_STEPS, False) else (
        f"demo-seeds-{args.adapter}-{args.num_states}{warm}-{args.layer_draw}-m{args.cache_maskings}"
        f"-l{requested_steps}{'-dependence' if args.dependence_only else ''}",
        f"The demo's controls with a {args.adapter} adapter{' (dependence only)' if args.dependence_only else ''} "
        f"and {args.num_states} states"
        + (f", EM warm start ({args.em_init_epochs} epochs)" if args.em_init_epochs else "")
        + f", maskings drawn by {args.layer_draw}, {args.cache_maskings} cached per item,"
        f" {requested_steps:,} layer steps")
    if args.dataset != "words":
        key, title = f"{key}-{args.dataset}", f"Python lines: {title[0].lower()}{title[1:]}"
    if args.backbone_checkpoint is not None:
        name = pathlib.Path(args.backbone_checkpoint).name
        key, title = f"{key}-{name}", f"{title}: backbone {name}"
    publish(markdown(runs, info), args.out, key, title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
