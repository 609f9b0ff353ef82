"""``python -m benchmarks.code_repair [--seeds 0,1,2] [--num-states K] [--layer-steps N] [--quick]``: how
much the CoDD layer repairs the backbone's conditionals, against how far the backbone was trained (issue 13).

At one masked token one-step and sequential decoding are the same prediction, so a layer that beats
the backbone there is not closing a factorization gap: it is a second model of the conditionals. The
issue expects that gain to vanish for a converged backbone. This benchmark follows it along one
backbone's training: the code-lines backbones of 2,000 and 12,000 steps (trained per seed) and the
shipped one, trained to a plateau (56,000 steps), each coupled to the code benchmarks' layer (512
states, 3,000 steps; :mod:`benchmarks.code_lines` trains and keeps the same models under ``--work``).
For each, on training lines and unseen lines: the backbone's NLL at one masked token, CoDD's gain
there, and gap closed at 50% and 90% masked (:func:`pcdiff.app.controls.control_table`, without the
circuits fit alone); mean over seeds ± their sd.
"""
from __future__ import annotations

import pathlib
import statistics
import sys
import time
from dataclasses import replace

from pcdiff.app.controls import ONE_TOKEN, ControlSettings, control_table

from .code_lines import FULL, MAX_LENGTH, QUICK
from .fair_generation import RESULTS_HEADER
from .judged_models import header, spread_text, trained
from .judged_options import judged_parser, layer_options, layer_sizes, ready
from .report import Section, invocation, write_sections

FRACTIONS = (0.5, 0.9)
#: (label, backbone sizes over the code benchmarks' default): per-seed backbones, then the shipped one
BACKBONES = (("2,000 steps", {"backbone": 2000, "shipped": None}),
             ("12,000 steps", {"backbone": 12000, "shipped": None}),
             ("56,000 steps (shipped, plateau)", {}))
QUICK_BACKBONES = (("5 steps", {"backbone": 5}), ("10 steps", {"backbone": 10}))
COLUMNS = ["backbone", "items", "backbone NLL, 1 token", "CoDD NLL, 1 token", "CoDD gain, 1 token",
           "gap closed, 50%", "gap closed, 90%"]


def measure(models, items: int, seed: int, num_states: int) -> dict[str, dict]:
    """Item set → the figures of one seed's models (a layer of ``num_states`` states)."""
    settings = ControlSettings(items=items, seed=seed, fractions=FRACTIONS, circuits_alone=False)
    table = control_table(models.backbone, models.layer, models.data, num_states, settings, progress=False)
    out = {}
    for name, item_set in table["sets"].items():
        rows = item_set["rows"]
        out[name] = {"one_step": rows[ONE_TOKEN]["one_step"]["mean"], "codd": rows[ONE_TOKEN]["codd"]["mean"],
                     "gain": rows[ONE_TOKEN]["codd_gain"]["mean"],
                     **{f"closed_{f}": rows[str(f)]["gap_closed"] for f in FRACTIONS}}
    return out


def mean_sd(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def markdown(results: dict[str, list[dict]], info: dict) -> str:
    lines = [f"Command: `{info['command']}`{' (--quick: smoke-test sizes, not a measurement)' if info['quick'] else ''}"
             f"; {info['seconds']:.0f} s.", "",
             f"Python lines (blocks of 32); the layer: {info['layer']}; {info['items']} items per set and masked "
             f"count, 2 mask draws each; {spread_text(info['seeds'])}. Nats per masked token.", "",
             *header(COLUMNS)]
    for label, runs in results.items():
        for name in runs[0]:
            cells = [mean_sd([r[name][key] for r in runs])
                     for key in ("one_step", "codd", "gain", *(f"closed_{f}" for f in FRACTIONS))]
            lines.append(f"| {label} | {name.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    module = "benchmarks.code_repair"
    parser = judged_parser(module, __doc__, "pcdiff-runs/code-lines", "items per set and masked count (default 300)")
    layer_options(parser, FULL)
    args = parser.parse_args(argv)
    items = args.samples if args.samples is not None else (8 if args.quick else 300)
    default = QUICK if args.quick else FULL
    layer = layer_sizes(args, default)
    if not ready(module, args, {"--samples": items, "--num-states": layer["num_states"],
                                "--layer-steps": layer["layer"]}):
        return 2
    start, results = time.perf_counter(), {}
    for label, backbone in QUICK_BACKBONES if args.quick else BACKBONES:
        sizes = replace(default, adapter=args.adapter, **layer, **backbone)
        results[label] = []
        for seed in args.seeds:
            print(f"{label}, seed {seed}:", flush=True)
            models = trained("python", pathlib.Path(args.work), sizes, seed, max_length=MAX_LENGTH)
            results[label].append(measure(models, items, seed, sizes.num_states))
    info = dict(command=invocation(module, argv), quick=args.quick, seconds=time.perf_counter() - start,
                layer=sizes.layer_text, items=items, seeds=args.seeds)
    body = markdown(results, info)
    print("\n" + body)
    # the last backbone is the default one: the key and title name the adapter and layer alone
    key, title = sizes.section("code-repair", "Python lines: the layer's repair against the backbone's training "
                               "(issue 13)", default)
    write_sections(pathlib.Path(args.out), [Section(key, title, body)], header=RESULTS_HEADER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
