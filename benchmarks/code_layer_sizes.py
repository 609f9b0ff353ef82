"""Which CoDD layer the code-lines benchmark trains, chosen on held-out data and not on the judged rates.

``python -m benchmarks.code_layer_sizes [--states 64,128,256,512] [--steps 600,1500,3000] [--out docs/results.md]``

On the backbone of :mod:`benchmarks.code_lines` (the shipped code backbone; ``--backbone-steps N``: its
seed-0 backbone trained N steps, :func:`benchmarks.judged_models.trained_backbone`, the one kept in the
same work folder or trained here alike, with a section of its own), one static HMM layer per state count
trains at the benchmark's learning rate, resumed from its own checkpoint at each step count (one run
per state count, measured on the way). Each row is the layer's held-out objective (nats per token, the
training objective on 2,000 unseen lines with fixed noise; the factorized backbone's beside it) and
the seconds it took.
Nothing here generates a line or runs ``tokenize``: the judged figures play no part in the choice.
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile
import time
from dataclasses import replace

import torch

from pcdiff.train import train_codd_layer

from .code_lines import FULL, MAX_LENGTH, QUICK, SHIPPED_NAME
from .judged_models import Sizes, frozen_backbone, prepared
from .report import invocation, publish


def measure(work: pathlib.Path, states: list[int], step_counts: list[int], sizes: Sizes) -> list[dict]:
    backbone = None
    rows = []
    for num_states in states:
        run = prepared("python", sizes, 0, MAX_LENGTH, num_states)
        if backbone is None:                                    # one frozen backbone for every layer
            backbone = frozen_backbone(run, work, sizes, 0, MAX_LENGTH)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as checkpoints:
            for steps in step_counts:
                summary = train_codd_layer(run.layer, backbone, run.data, steps=steps, lr=sizes.layer_lr, seed=0,
                                           progress=False, eval_every=None, cache_backbone=False,
                                           checkpoint_dir=checkpoints, resume=True)
                rows.append({"states": num_states, "steps": steps, "heldout": summary["heldout"],
                             "seconds": time.perf_counter() - start})
                print(f"{num_states} states, {steps} steps: held-out {summary['heldout']['codd']:.4f} "
                      f"({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def markdown(rows: list[dict], command: str, sizes_text: str) -> str:
    lines = [f"Command: `{command}`; {sizes_text}; {torch.get_num_threads()} torch threads.", "",
             "| HMM states | layer steps | held-out objective, CoDD | factorized | training seconds (cumulative) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['states']} | {r['steps']:,} | {r['heldout']['codd']:.4f} | "
                     f"{r['heldout']['factorized']:.4f} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.code_layer_sizes", description=__doc__.splitlines()[0])
    parser.add_argument("--states", default="64,128,256,512", help="comma list of HMM state counts")
    parser.add_argument("--steps", default="600,1500,3000", help="comma list of increasing layer step counts")
    parser.add_argument("--work", default="pcdiff-runs/code-lines", help="code_lines' folder of trained models")
    parser.add_argument("--out", help="markdown file to put the section in (e.g. docs/results.md)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
    parser.add_argument("--backbone-steps", type=int,
                        help=f"on code_lines' seed-0 backbone trained this many steps, not the shipped {SHIPPED_NAME}")
    args = parser.parse_args(argv)
    try:
        states = [int(s) for s in args.states.split(",")]
        step_counts = [int(s) for s in args.steps.split(",")]
    except ValueError:
        parser.error(f"--states and --steps must be comma lists of integers, got {args.states!r}, {args.steps!r}")
    if min(states) < 1 or step_counts != sorted(set(step_counts)) or step_counts[0] < 1 or args.threads < 1 or \
            (args.backbone_steps is not None and args.backbone_steps < 1):
        parser.error("--states must be >= 1, --steps increasing positive counts, --threads and --backbone-steps >= 1")
    torch.set_num_threads(args.threads)
    default = QUICK if args.quick else FULL
    sizes = default if args.backbone_steps is None else replace(default, shipped=None, backbone=args.backbone_steps)
    rows = measure(pathlib.Path(args.work), states, step_counts, sizes)
    sizes_text = (f"seed 0, the code-lines {sizes.backbone_text}, static layers at learning rate {sizes.layer_lr:g} "
                  "(the frozen backbone run on each layer batch)")
    publish(markdown(rows, invocation("benchmarks.code_layer_sizes", argv), sizes_text), args.out,
            *sizes.section("code-layer-sizes", "Python lines: the layer's size, chosen on held-out lines (issue 13)",
                           default))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
