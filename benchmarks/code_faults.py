"""``python -m benchmarks.code_faults [--seeds 0,1,2] [--steps 4,32] [--quick]``: why generated Python
lines fail to tokenize, by cause (issue 13).

:mod:`benchmarks.code_lines` reports one rate per decoder; this reads the same lines by cause. It
loads (or trains) the same models from ``--work`` and draws with the same seeds, so each step count's
lines are exactly the ones that benchmark judged (low-confidence remasking): its tokenizable rate is
this table's "tokenizes" share. Each line is a malformed block (not a line at all) or falls in exactly
one of :data:`pcdiff.app.code_oracle.FAULTS`; the held-out lines, sorted alike, are the data's own
shares. Every share is of all lines, mean over seeds ± their sd.
"""
from __future__ import annotations

import pathlib
import sys
import time
from collections import Counter
from dataclasses import replace

from pcdiff.app.code_oracle import FAULTS, line_fault
from pcdiff.app.judge import decode_items

from .code_lines import DECODERS, FULL, MAX_LENGTH, QUICK, draw_seed
from .fair_generation import RESULTS_HEADER
from .judged_models import cell, generate_rows, header, over_seeds, spread_text, trained
from .judged_options import judged_parser, layer_options, layer_sizes, ready
from .report import Section, invocation, write_sections

KINDS = ("malformed", *FAULTS)


def fault_shares(items: list[str | None]) -> dict[str, float]:
    """Each of :data:`KINDS`' share of ``items`` (None: a malformed block); the shares sum to 1."""
    if not items:
        raise ValueError("items must not be empty")
    counts = Counter("malformed" if item is None else line_fault(item) for item in items)
    return {kind: counts[kind] / len(items) for kind in KINDS}


def measure(models, samples: int, seed: int, step_counts: list[int], log=print) -> list[dict]:
    rows = []
    for steps in step_counts:
        for label, codd in DECODERS:
            # code_lines.measure's seed for this cell: the very lines it judged
            tokens = generate_rows(models, steps, samples, draw_seed(seed, steps), codd=codd)
            shares = fault_shares(decode_items(tokens, models.data.vocab))
            rows.append({"steps": steps, "decoder": label, **shares})
            log(f"  {steps} steps, {label:<16} " + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()))
    return rows


def markdown(rows: list[dict], heldout: dict, info: dict) -> str:
    sizes = info["sizes"]
    lines = [f"Command: `{info['command']}`{' (--quick: smoke-test sizes, not a measurement)' if info['quick'] else ''}"
             f"; took {info['seconds']:.0f} s.", "",
             f"The models and lines of `benchmarks.code_lines` with the same options: the {sizes.backbone_text}, "
             f"{sizes.layer_text}, {spread_text(info['seeds'])}; {info['samples']} lines per cell, "
             "low-confidence remasking. Each line falls in one column; shares of all lines. Open bracket: the line "
             "ends inside a bracket; open string: inside a string (reported before brackets); mismatched: a "
             "closing bracket with no open one of its kind; other: tokenize refuses it for another reason (a "
             "stray character, a trailing backslash).", "",
             *header(["steps per block", "decoder", *KINDS]),
             "| – | held-out lines | " + " | ".join(f"{heldout[k]:.3f}" for k in KINDS) + " |"]
    for r in rows:
        lines.append("| " + " | ".join([str(r["steps"]), r["decoder"], *(cell(r, k) for k in KINDS)]) + " |")
    return "\n".join(lines) + "\n"


def run(work: pathlib.Path, out: pathlib.Path | None, samples: int, quick: bool, seeds: list[int],
        step_counts: list[int], command: str, layer: dict, adapter: str = "static", log=print) -> str:
    """``layer``: :func:`benchmarks.judged_options.layer_sizes`' dict; the shipped backbone always."""
    start = time.perf_counter()
    default = QUICK if quick else FULL
    sizes = replace(default, adapter=adapter, **layer)
    runs = []
    for seed in seeds:
        log(f"seed {seed}:")
        models = trained("python", work, sizes, seed, max_length=MAX_LENGTH, log=log)
        runs.append(measure(models, samples, seed, step_counts, log))
    heldout = fault_shares(list(models.data.heldout_items))
    info = dict(command=command, quick=quick, seconds=time.perf_counter() - start, sizes=sizes, seeds=seeds,
                samples=samples)
    body = markdown(over_seeds(runs, ("steps", "decoder")), heldout, info)
    log("\n" + body)
    if out is not None:
        key, title = sizes.section("code-faults", "Python lines: why generated lines fail to tokenize (issue 13)",
                                   default)
        write_sections(out, [Section(key, title, body)], header=RESULTS_HEADER)
        log(f"wrote {out}")
    return body


def main(argv: list[str] | None = None) -> int:
    module = "benchmarks.code_faults"
    parser = judged_parser(module, __doc__, "pcdiff-runs/code-lines", "generated lines per cell (default 500; "
                                                                       "--quick 16)")
    parser.add_argument("--steps", default="4,32", help="comma list of steps per block (code_lines': 2, 4, 8, 32)")
    layer_options(parser, FULL)
    args = parser.parse_args(argv)
    samples = args.samples if args.samples is not None else (16 if args.quick else 500)
    layer = layer_sizes(args, QUICK if args.quick else FULL)
    try:
        step_counts = [int(s) for s in args.steps.split(",")]
    except ValueError:
        step_counts = [0]                                         # refused below, with the other counts
    if not ready(module, args, {"--samples": samples, "--steps": min(step_counts),
                                "--num-states": layer["num_states"], "--layer-steps": layer["layer"]}):
        return 2
    run(pathlib.Path(args.work), pathlib.Path(args.out), samples, args.quick, args.seeds, step_counts,
        invocation(module, argv), layer, adapter=args.adapter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
