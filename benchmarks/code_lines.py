"""``python -m benchmarks.code_lines [--quick]``: generated Python source lines judged by an oracle
nobody here wrote, the interpreter's own :mod:`tokenize`, and by bracket / quote balance.

Data: distinct short lines of the standard library's source (:func:`pcdiff.data.sources.load_python_lines`,
at most 31 characters: blocks of 32 with the end symbol). The backbone shipped for this split, trained
once to a plateau (``pcdiff/pretrained/python-mask``; ``--backbone-steps`` / ``--backbone-size``: one
trained per seed instead), and a learned CoDD HMM layer trained for fixed step counts
(:mod:`benchmarks.judged_models`) generate whole lines from nothing at
2, 4, 8 and 32 (one token per step) steps per block with low-confidence remasking, and 4 and 32 steps in a
random order (the control: at one token per step no two tokens are drawn together; the pair's difference is
the factorization loss alone), factorized vs CoDD (its joint draw, and the any-order draw, CoDD+AO).
Each cell is judged by :func:`pcdiff.app.judge.judge_code_lines`: the tokenizable-line rate (the exact rule is
:func:`pcdiff.app.code_oracle.tokenizes`), the balance rate, the rate of real stdlib lines and of novel ones,
each ± its standard error, and the tokenizable rate among well-formed lines at the held-out lines'
lengths (a short line tokenizes more easily, and the decoders' lines differ in length); the held-out
lines' own rates are the ceiling (a real line may open a bracket that a later line closes). With
several ``--seeds`` (one data split), each seed trains its own layer (and backbone, when one is
trained) and every cell is the mean over seeds ± their sd. The issue's
target: tokenizable at 4 steps ≥ 1.5× factorized.
"""
from __future__ import annotations

import pathlib
import re
import sys
import time
from dataclasses import replace

import torch

from pcdiff.app.judge import LENGTH_BINS, code_reference_rates, judge_code_lines
from pcdiff.data.sources import PYTHON_MAX_LENGTH
from pcdiff.train import heldout_objective

from .fair_generation import RESULTS_HEADER, ratio_of
from .judged_models import Sizes, cell, generate_rows, header, over_seeds, spread_text, standard_error, trained
from .judged_options import judged_parser, layer_options, layer_sizes, ready
from .report import Section, invocation, write_sections

MAX_LENGTH = PYTHON_MAX_LENGTH                             # + the end symbol: blocks of 32
ONE_PER_STEP = MAX_LENGTH + 1
# (steps per block, remasking rule); the random-order pair measures the factorization loss alone
CELLS = ((2, "low_confidence"), (4, "low_confidence"), (8, "low_confidence"), (ONE_PER_STEP, "low_confidence"),
         (4, "random"), (ONE_PER_STEP, "random"))
# (label, the generator's codd mode): CoDD's joint draw, and the paper's any-order variant (CoDD+AO), which
# draws each step's positions one at a time from the layer's exact conditionals, at no extra backbone call
DECODERS = (("factorized", "off"), ("CoDD", "joint"), ("CoDD, any order", "any_order"))
SHIPPED_NAME = "python-mask"                               # pcdiff/pretrained/python-mask, trained to a plateau
# the layer's size: code_layer_sizes; backbone: the steps of a per-seed backbone (--backbone-steps / -size)
FULL = Sizes(backbone=2000, layer=3000, num_states=512, dim=64, depth=2, cache_backbone=False, shipped=SHIPPED_NAME,
             layer_draw="time")        # chosen with the time draw on held-out lines (code_layer_sizes)
QUICK = Sizes(backbone=10, layer=3, num_states=8, dim=32, depth=1, cache_backbone=False,     # trains its backbone
              layer_draw="time")
REPORT_SEED = 30_000
HELDOUT_LINES = 2000                                       # as LayerTrainingConfig.eval_items
COLUMNS = ["steps per block", "decoder", "tokenizable", "balanced", "real stdlib line", "novel", "well-formed",
           "tokenizable among well-formed", "the same at held-out lengths", "mean length (well-formed)",
           "distinct tokenizable"]
KEYS = ("tokenizable", "balanced", "valid", "novel", "well_formed", "tokenizable_among_well_formed",
        "tokenizable_length_matched", "mean_length", "distinct_tokenizable")


def draw_seed(seed: int, steps: int) -> int:
    """The generator seed of one cell's lines: every decoder of a cell draws from the same one."""
    return REPORT_SEED + seed + steps


def measure(models, samples: int, seed: int, log=print) -> list[dict]:
    rows = []
    # lines of different lengths are compared as if they were as long as the held-out lines
    shares = code_reference_rates(models.data.heldout_items)["length_shares"]
    for steps, remasking in CELLS:
        for label, codd in DECODERS:
            judged = judge_code_lines(generate_rows(models, steps, samples, draw_seed(seed, steps),
                                                    remasking=remasking, codd=codd), models.data, shares)
            rows.append({"steps": steps, "remasking": remasking, "decoder": label, **judged})
            log(f"  {steps} steps, {remasking}, {label:<10} tokenizable {judged['tokenizable']:.3f}, balanced "
                f"{judged['balanced']:.3f}, real {judged['valid']:.3f}")
    return rows


def target(rows: list[dict]) -> str:
    def pair(steps: int, remasking: str, codd: str = "CoDD") -> tuple[dict, dict]:
        return tuple(next(r for r in rows if (r["steps"], r["remasking"], r["decoder"]) == (steps, remasking, d))
                     for d in ("factorized", codd))

    def versus(f: dict, c: dict) -> str:
        return (f"tokenizable CoDD {c['tokenizable']:.3f} ± {standard_error(c, 'tokenizable'):.3f} vs factorized "
                f"{f['tokenizable']:.3f} ± {standard_error(f, 'tokenizable'):.3f} (standard errors)")

    f, c = pair(4, "low_confidence")
    ratio = ratio_of(c["tokenizable"], f["tokenizable"])
    verdict = "met" if ratio >= 1.5 else "missed"
    lines = [f"- 4 steps per block: {versus(f, c)}, ratio {ratio:.2f} (target ≥ 1.5: {verdict})"]
    f, ao = pair(4, "low_confidence", "CoDD, any order")
    ao_ratio = ratio_of(ao["tokenizable"], f["tokenizable"])
    lines.append(f"- the same with CoDD's any-order draw (the paper's CoDD+AO; the same backbone calls): "
                 f"tokenizable {ao['tokenizable']:.3f} ± {standard_error(ao, 'tokenizable'):.3f}, ratio "
                 f"{ao_ratio:.2f} (target ≥ 1.5: {'met' if ao_ratio >= 1.5 else 'missed'})")
    among = "tokenizable_among_well_formed"
    lines.append(f"- the same lines, among the well-formed ones alone: CoDD {c[among]:.3f} ± "
                 f"{standard_error(c, among):.3f} vs factorized {f[among]:.3f} ± {standard_error(f, among):.3f}, "
                 f"ratio {ratio_of(c[among], f[among]):.2f}; the two decoders' lines differ in length, so read this "
                 "beside the next figure")
    matched = "tokenizable_length_matched"
    lines.append(f"- the same, at the held-out lines' lengths (each length bin's rate among well-formed lines, "
                 f"weighed by the held-out lines' share of that bin: {', '.join(map(str, LENGTH_BINS))} characters "
                 f"at most): CoDD {c[matched]:.3f} ± {standard_error(c, matched):.3f} vs factorized {f[matched]:.3f} "
                 f"± {standard_error(f, matched):.3f}, ratio {ratio_of(c[matched], f[matched]):.2f}; a short line "
                 "tokenizes more easily, so this compares lines of equal length")
    f, c = pair(ONE_PER_STEP, "random")
    lines.append(f"- control, one token per step in a random order, where no two tokens are drawn together: "
                 f"{versus(f, c)}; a CoDD lead here is the layer repairing the backbone's conditionals, not coupling "
                 "tokens")
    # each decoder against itself under one order rule, so the layer's repair is held fixed: what changes is
    # drawing 8 tokens at once
    fast, slow = pair(4, "random"), pair(ONE_PER_STEP, "random")
    losses = [f"{a['tokenizable'] - b['tokenizable']:+.3f} ({b['tokenizable']:.3f} → {a['tokenizable']:.3f})"
              for a, b in zip(fast, slow)]
    lines.append(f"- factorization loss, both in a random order: one token per step → 4 steps per block changes the "
                 f"tokenizable rate by {losses[0]} factorized, {losses[1]} CoDD; coupling shows as CoDD's smaller "
                 "loss")
    return "\n".join(lines)


def size_choice(sizes: Sizes) -> str:
    """Whether the layer's size is the one chosen on held-out lines, in words."""
    chosen = f"{FULL.num_states} states × {FULL.layer:,} steps, the size `python -m benchmarks.code_layer_sizes` " \
        "chose on this objective for the paper's product with the shipped backbone"
    if (sizes.num_states, sizes.layer) == (FULL.num_states, FULL.layer) and not sizes.dependence_only:
        return f"its size is {chosen}"
    return f"its size was set by the command, not chosen on this objective (the default is {chosen})"


def markdown(rows: list[dict], ceiling: dict, info: dict) -> str:
    sizes = info["sizes"]
    lines = [f"Command: `{info['command']}`{' (--quick: smoke-test sizes, not a measurement)' if info['quick'] else ''}"
             f"; took {info['seconds']:.0f} s on {torch.get_num_threads()} torch threads.", "",
             f"Data: {info['data']}. The {sizes.backbone_text}, {sizes.layer_text} "
             "(the frozen backbone run on each layer batch, no cache), "
             f"{spread_text(info['seeds'])}; {info['samples']} lines per cell, "
             "low-confidence remasking except in the random-order rows (the control). Tokenizable: Python's `tokenize."
             "generate_tokens` on the line alone raises no TokenError / IndentationError / SyntaxError and yields no "
             "ERRORTOKEN (a line that opens a bracket fails: EOF in a multi-line statement). Balanced: brackets "
             "matched in order and strings closed, outside comments. A malformed or empty block fails both. Real = "
             "a line of the standard library; novel = real and not a training line.", "",
             f"The layer's held-out objective (its training objective on {HELDOUT_LINES:,} unseen lines with fixed "
             f"noise, nats per token; {size_choice(sizes)}): CoDD "
             f"{cell(info['heldout'], 'codd')}, factorized backbone {cell(info['heldout'], 'factorized')}.", "",
             f"The held-out lines themselves: tokenizable {cell(ceiling, 'tokenizable')}, balanced "
             f"{cell(ceiling, 'balanced')}, mean length {ceiling['mean_length']:.1f} characters ({ceiling['num']} "
             "lines); a short line tokenizes more easily, so read each rate beside its lines' mean length.", "",
             *header(COLUMNS)]
    for r in rows:
        steps = str(r["steps"]) + (" (random order)" if r["remasking"] == "random" else "")
        lines.append("| " + " | ".join([steps, r["decoder"], *(cell(r, k) for k in KEYS)]) + " |")
    return "\n".join(lines + ["", "Target (issue 13):", "", target(rows)]) + "\n"


def run(work: pathlib.Path, out: pathlib.Path | None, samples: int, quick: bool, seeds: list[int], command: str,
        log=print, adapter: str = "static", backbone: dict | None = None) -> str:
    """``backbone``: {"backbone": steps, "dim": width, "depth": layers, "shipped": a name in
    :data:`pcdiff.app.pretrained.SHIPPED`, "num_states", "layer": the layer's states and steps}, any of
    them, to change the default models (and their section apart)."""
    start = time.perf_counter()
    default = QUICK if quick else FULL
    sizes = replace(default, adapter=adapter, **(backbone or {}))
    runs, objectives = [], []
    for seed in seeds:
        log(f"seed {seed}:")
        models = trained("python", work, sizes, seed, max_length=MAX_LENGTH, log=log)
        # the layer's training objective on unseen lines, as its training evaluates it (what its size is chosen on)
        objectives.append(heldout_objective(models.layer, models.backbone, models.data.encode_heldout()[:HELDOUT_LINES],
                                            seed=seed + 2))
        runs.append(measure(models, samples, seed, log))
    ceiling = {**code_reference_rates(models.data.heldout_items), "num": len(models.data.heldout_items)}
    rows = over_seeds(runs, ("steps", "remasking", "decoder"))
    info = dict(command=command, quick=quick, seconds=time.perf_counter() - start, data=repr(models.data),
                sizes=sizes, seeds=seeds, samples=samples,
                heldout=over_seeds([[o] for o in objectives], ())[0])
    body = markdown(rows, ceiling, info)
    log("\n" + body)
    if out is not None:
        key, title = sizes.section("code-lines", "Python lines: generation judged by tokenize (issue 13)", default)
        write_sections(out, [Section(key, title, body)], header=RESULTS_HEADER)
        log(f"wrote {out}")
    return body


def main(argv: list[str] | None = None) -> int:
    module = "benchmarks.code_lines"
    parser = judged_parser(module, __doc__, "pcdiff-runs/code-lines",
                           "generated lines per cell (default 500; --quick 16)")
    parser.add_argument("--backbone-steps", type=int,
                        help=f"train each seed's backbone this many steps instead of coupling to the shipped one "
                             f"(pcdiff/pretrained/{SHIPPED_NAME}); another backbone gets models and a section of its "
                             "own")
    parser.add_argument("--backbone-size", help=f"likewise, at this width x depth (default {FULL.dim}x{FULL.depth}; "
                                                f"{FULL.backbone} steps unless --backbone-steps)")
    layer_options(parser, FULL)
    args = parser.parse_args(argv)
    samples = args.samples if args.samples is not None else (16 if args.quick else 500)
    layer = layer_sizes(args, QUICK if args.quick else FULL)
    backbone = {} if args.backbone_steps is None else {"backbone": args.backbone_steps, "shipped": None}
    if args.backbone_size is not None:
        size = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", args.backbone_size)
        if size is None:
            print(f"python -m {module}: error: --backbone-size must be WIDTHxDEPTH, e.g. 128x4 (got "
                  f"{args.backbone_size!r})", file=sys.stderr)
            return 2
        backbone |= {"dim": int(size[1]), "depth": int(size[2]), "shipped": None}
    if not ready(module, args, {"--samples": samples, "--backbone-steps": backbone.get("backbone", 1),
                                "--num-states": layer["num_states"], "--layer-steps": layer["layer"]}):
        return 2
    run(pathlib.Path(args.work), pathlib.Path(args.out), samples, args.quick, args.seeds, invocation(module, argv),
        adapter=args.adapter, backbone={**backbone, **layer})
    return 0


if __name__ == "__main__":
    sys.exit(main())
