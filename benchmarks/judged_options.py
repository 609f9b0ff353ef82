"""The command-line options the judged-generation benchmarks share (``fair_generation``,
``code_lines``, ``code_repair``): the common ones, another layer than the benchmark's, and the
checks that end a bad invocation with one line and status 2."""
from __future__ import annotations

import argparse
import sys

import torch

from pcdiff.app.allocator import keep_heap_pages
from pcdiff.codd.adapters import ADAPTERS

from .judged_models import Sizes

__all__ = ["judged_parser", "layer_options", "layer_sizes", "ready"]


def judged_parser(module: str, doc: str, work: str, samples_help: str) -> argparse.ArgumentParser:
    """The options both judged-generation benchmarks take; a benchmark adds its own."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models and samples: a smoke test, not a measurement")
    p.add_argument("--samples", type=int, help=samples_help)
    p.add_argument("--work", default=work, help="folder that keeps the trained models")
    p.add_argument("--out", default="docs/results.md", help="markdown file whose section is replaced")
    p.add_argument("--seeds", default="0", help="comma list of seeds; with several, mean ± sd over them")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--adapter", choices=sorted(ADAPTERS), default="static",
                   help="the layer's adapter (default: the demo's, static; another gets a section of its own)")
    return p


def layer_options(parser: argparse.ArgumentParser, default: Sizes) -> None:
    """``--num-states`` and ``--layer-steps``: another layer than the benchmark's (its section apart)."""
    parser.add_argument("--num-states", type=int, help=f"the layer's states (default {default.num_states})")
    parser.add_argument("--layer-steps", type=int, help=f"the layer's training steps (default {default.layer})")
    dependence_option(parser)


def dependence_option(parser: argparse.ArgumentParser) -> None:
    """``--dependence-only``, the one spelling every benchmark of the layer takes."""
    parser.add_argument("--dependence-only", action="store_true",
                        help="the layer's product keeps the circuit's coupling alone (pcdiff.codd.dependence)")


def layer_sizes(args: argparse.Namespace, default: Sizes) -> dict:
    """The layer from :func:`layer_options`' options: ``{"num_states", "layer", "dependence_only"}``."""
    return {"num_states": default.num_states if args.num_states is None else args.num_states,
            "layer": default.layer if args.layer_steps is None else args.layer_steps,
            "dependence_only": args.dependence_only}


def ready(module: str, args: argparse.Namespace, counts: dict[str, int]) -> bool:
    """True, with the process set up (heap pages kept, torch threads set) and ``args.seeds`` parsed to
    a list, when every count (option → value) and ``--threads`` are >= 1 and ``--seeds`` is a comma
    list of distinct integers >= 0; else one line on stderr and False."""
    try:
        seeds = [int(s) for s in str(args.seeds).split(",")]
    except ValueError:
        seeds = []
    if min(counts.values()) < 1 or args.threads < 1 or not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        print(f"python -m {module}: error: {', '.join(counts)} and --threads must be >= 1, --seeds a comma list "
              f"of distinct integers >= 0 (got {args.seeds!r})", file=sys.stderr)
        return False
    args.seeds = seeds
    keep_heap_pages()
    torch.set_num_threads(args.threads)
    return True

