"""Turning a results dict into what people look at: a markdown table and three PNG plots."""
from __future__ import annotations

import math
import pathlib

from ..files import atomic_write
from .controls import ONE_TOKEN


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_tables(results: dict) -> str:
    top, draws = results["headline"], results["controls"]["settings"]["mask_draws"]
    lines = [f"## Perplexity per masked token ({top['set'].replace('_', ' ')}: {top['items']} held-out items, "
             f"{draws} mask draws each)", "",
             "Sequential is the floor: the best of its orders. Read off the controls below, which give 95% "
             "intervals, the unseen word types and the one-token row.", "",
             "| masked fraction | one-step | sequential (floor) | CoDD | gap closed |", "|---|---|---|---|---|"]
    ppl = results["perplexity"]
    for frac in ppl["one_step"]:
        lines.append(f"| {frac} | {_fmt(ppl['one_step'][frac])} | {_fmt(ppl['sequential'][frac])} | "
                     f"{_fmt(ppl['codd'][frac])} | {_fmt(results['gap_closed'][frac])} |")
    lines += [f"\n**Red flag:** {flag}" for flag in top.get("red_flags", [])]
    lines += ["", *controls_tables(results["controls"])]
    gen = results["generation"]
    lines += ["", "## Unconditional generation (valid = real items)", "",
              "| steps per block | valid factorized | valid CoDD | distinct valid factorized | distinct valid CoDD "
              "| malformed factorized | malformed CoDD |", "|---|---|---|---|---|---|---|"]
    for steps in gen["factorized"]:
        f, c = gen["factorized"][steps], gen["codd"][steps]
        lines.append(f"| {steps} | {_fmt(f['valid'])} | {_fmt(c['valid'])} | {f['distinct_valid']} | "
                     f"{c['distinct_valid']} | {_fmt(f['malformed'])} | {_fmt(c['malformed'])} |")
    if _judged_as_code(gen):
        lines += ["", *_code_table(gen, results.get("heldout_lines"))]
    infill = results["infill"]
    lines += ["", "## One-step infill of held-out items (fraction of results that are real items)", "",
              "| masked fraction | factorized | CoDD |", "|---|---|---|"]
    for frac in infill["factorized"]:
        lines.append(f"| {frac} | {_fmt(infill['factorized'][frac])} | {_fmt(infill['codd'][frac])} |")
    timing = results.get("timing")
    if timing:
        lines += ["", f"Sampling: {timing['seconds_per_block_factorized'] * 1e3:.3f} ms per block factorized, "
                      f"{timing['seconds_per_block_codd'] * 1e3:.3f} ms with CoDD "
                      f"(overhead ×{timing['overhead_ratio']:.2f})."]
    return "\n".join(lines) + "\n"


def _judged_as_code(gen: dict) -> bool:
    """Whether the generated items carry the code oracle's rates (Python lines)."""
    return "tokenizable" in next(iter(gen["factorized"].values()), {})


def _code_table(gen: dict, heldout: dict | None) -> list[str]:
    """The generated Python lines judged by the interpreter's tokenizer (:func:`.judge.judge_code_lines`)."""
    reference = "" if heldout is None else (f" Held-out lines: tokenizable {_fmt(heldout['tokenizable'])}, mean "
                                            f"length {heldout['mean_length']:.1f}.")
    lines = ["## Generated lines judged by Python's tokenizer", "",
             f"A short line tokenizes more easily: read the rates beside the mean length.{reference}", "",
             "| steps per block | tokenizable factorized | tokenizable CoDD | among well-formed factorized | "
             "among well-formed CoDD | mean length factorized | mean length CoDD |", "|---|---|---|---|---|---|---|"]
    for steps in gen["factorized"]:
        f, c = gen["factorized"][steps], gen["codd"][steps]
        lines.append(f"| {steps} | {_fmt(f['tokenizable'])} | {_fmt(c['tokenizable'])} | "
                     f"{_fmt(f['tokenizable_among_well_formed'])} | {_fmt(c['tokenizable_among_well_formed'])} | "
                     f"{f['mean_length']:.1f} | {c['mean_length']:.1f} |")
    return lines


def _pm(cell: dict | None) -> str:
    """``mean ± ci95``, or "–" for a control that was not run."""
    if cell is None:
        return "–"
    return f"{_fmt(cell['mean'])} ± {_fmt(cell['ci95'])}"


def _control_columns(rows: dict) -> list[tuple[str, str]]:
    """(header, row key) of a controls table: one-step, every sequential order, CoDD, the circuits alone."""
    keys = {key for row in rows.values() for key in row}
    orders = [(f"seq. {key.removeprefix('sequential:').replace('_', ' ')}", key)
              for key in next(iter(rows.values()), {}) if key.startswith("sequential:")]
    return [c for c in [("one-step", "one_step"), *orders, ("CoDD", "codd"), ("CoDD − floor", "codd_minus_floor"),
                        ("HMM alone (EM)", "hmm_em"), ("circuit alone", "circuit_alone"),
                        ("training distribution (exact)", "training_distribution"),
                        ("its one-step (exact)", "training_distribution_one_step")] if c[1] in keys]


def _excess_sentence(controls: dict) -> list[str]:
    """How far the backbone is from the training distribution at one masked token, and CoDD's share of it."""
    row = controls["sets"].get("in_distribution", {}).get("rows", {}).get(ONE_TOKEN, {})
    if "backbone_excess" not in row:
        return []
    excess, gain = row["backbone_excess"], row.get("codd_gain")
    share = "" if gain is None or excess["mean"] <= 0 else f"; CoDD's gain is {gain['mean'] / excess['mean']:.0%} of it"
    return ["", f"**The backbone's excess over the training distribution at one masked token** (in distribution: "
                f"one-step − the exact floor those items are drawn with): {_pm(excess)} nats{share}."]


def controls_tables(controls: dict) -> list[str]:
    """The controls beside the perplexity table (see :mod:`pcdiff.app.controls`), as markdown lines."""
    settings, fits = controls["settings"], controls["standalone"]
    alone = "; ".join(f"{name}: {fit['parameters']:,} parameters by {fit['method']}, training NLL "
                      f"{_fmt(fit['train_nll_per_token'])} per token" for name, fit in fits.items())
    gain = ", ".join(f"{name.replace('_', ' ')} {_pm(cell)}" for name, cell in controls["codd_gain_one_token"].items())
    lines = ["## Controls: nats per masked token, mean ± 95% CI over items", "",
             f"Each item's NLL is averaged over {settings['mask_draws']} draws of exactly that many masked "
             f"positions; sequential orders are left-to-right and {settings['random_orders']} fresh random "
             f"order(s) per draw, the floor is the better of them. Circuits alone (no backbone), fit on "
             f"{settings['fit_items']} training occurrences: {alone}.", "",
             f"**CoDD's gain over one-step at one masked token** (no factorization gap there; ≈ 0 for a converged "
             f"backbone): {gain}.", *_excess_sentence(controls)]
    for name, table in controls["sets"].items():
        columns = _control_columns(table["rows"])
        lines += ["", f"### {name.replace('_', ' ')} ({table['items']} item{'' if table['items'] == 1 else 's'})", "",
                  "| masked | " + " | ".join(h for h, _ in columns) + " | floor order | gap closed |",
                  "|---" * (len(columns) + 3) + "|"]
        for label, row in table["rows"].items():
            gap = row.get("gap_closed")
            lines.append(f"| {label} ({row['masked']}) | " + " | ".join(_pm(row.get(k)) for _, k in columns)
                         + f" | {row['sequential_best']['order']} | {'–' if gap is None else _fmt(gap)} |")
    return lines


def save_plots(results: dict, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """perplexity.png (as the paper's Figure 1), generation.png and infill.png in ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    ppl, gen, infill = results["perplexity"], results["generation"], results["infill"]
    methods = (("one_step", "one-step (factorized)"), ("sequential", "sequential"), ("codd", "CoDD"))
    modes = (("factorized", "factorized"), ("codd", "CoDD"))
    # Python lines are judged by the tokenizer (few generated lines are real stdlib lines)
    rate = "tokenizable" if _judged_as_code(gen) else "valid"
    return [
        _line_plot(out_dir / "perplexity.png", "Held-out perplexity", "masked fraction", "perplexity per masked token",
                   [(label, [float(f) for f in ppl[m]], list(ppl[m].values())) for m, label in methods]),
        _line_plot(out_dir / "generation.png", f"Generation: {rate} vs steps", "steps per block", f"{rate} rate",
                   [(label, [int(s) for s in gen[m]], [cell[rate] for cell in gen[m].values()])
                    for m, label in modes]),
        _line_plot(out_dir / "infill.png", "One-step infill", "masked fraction", "valid rate",
                   [(label, [float(f) for f in infill[m]], list(infill[m].values())) for m, label in modes]),
    ]


def _line_plot(path: pathlib.Path, title: str, xlabel: str, ylabel: str, series) -> pathlib.Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, xs, ys in series:
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    return _save(fig, path)


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
