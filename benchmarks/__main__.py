"""``python -m benchmarks [options]`` (what ``pcdiff bench [options]`` runs): the parts of
:func:`benchmarks.run_bench` this machine can run, their tables written into ``--out``.

Run it from the repository root (or with the root on ``PYTHONPATH``): the benchmarks are not part
of the installed package. A bad option ends the run with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from pcdiff.app.allocator import keep_heap_pages

from . import PARTS, run_bench


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pcdiff bench", description="Ratios measured in one run: the circuit engine vs a hand-written "
        "forward and hmmlearn, the layer's overhead per decoding step, its time and memory vs H, L, V, batch; "
        "with CUDA also vs pyjuice and at LLaDA-8B shapes. See benchmarks/README.md.")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (a smoke test, not a measurement)")
    p.add_argument("--threads", type=int, default=2, help="torch threads while timing (default 2)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU rows, plus CUDA rows when a GPU is present")
    p.add_argument("--out", default="docs/benchmarks.md", help="markdown file whose sections are replaced "
                   "(plots go next to it as <stem>_<part>.png)")
    p.add_argument("--only", action="append", metavar="PART",
                   help=f"{', '.join(PARTS[:-1])} or {PARTS[-1]}; repeat or give a comma list (default: all)")
    p.add_argument("--budget", type=float, help="seconds of timed rounds per configuration (default per part)")
    p.add_argument("--seed", type=int, default=0)
    return p


def command_line(args: argparse.Namespace) -> str:
    """The command as the report quotes it: ``pcdiff bench`` and the options that shape the numbers."""
    flags = ["--quick"] * args.quick + [f"--threads {args.threads}", f"--device {args.device}"]
    flags += [f"--only {','.join(args.only)}"] if args.only else []
    flags += [f"--budget {args.budget:g}"] if args.budget is not None else []
    return " ".join(["pcdiff bench", *flags])


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    keep_heap_pages()
    try:
        run_bench(quick=args.quick, threads=args.threads, device=args.device, out=args.out, only=args.only,
                  budget=args.budget, seed=args.seed, command=command_line(args))
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"pcdiff bench: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
