"""Circuit-core benchmark: a compiled ``structures.hmm`` against a hand-written dense forward and hmmlearn.

Every number is a ratio measured side by side in one run (``t_baseline / t_ours``, so > 1 means we
are faster): the contenders of a configuration run interleaved, in a rotating order, each round,
and a ratio divides the medians. Workloads, at B sequences of length L, float32:

* ``fwd+bwd``: ``log_prob`` of fully observed sequences, then the gradient of the summed
  log-likelihood with respect to every parameter (logits);
* ``fwd``: ``log_prob`` alone, under ``torch.no_grad``;
* ``soft``: every position unobserved with [B, L, V] log-potentials (the CoDD normalizer).

Baselines: :class:`benchmarks.dense.DenseHMM` (the speed limit, same parameters, same device)
and hmmlearn's ``CategoricalHMM.score`` (CPU, float64, forward only) in both of its
implementations: "log" (the default) and "scaling" (faster). Before timing, our log-likelihoods and
gradients are checked against the dense forward, and the total log-likelihood against hmmlearn.

Run it as part of ``pcdiff bench`` (``--only hmm``) or alone: ``python benchmarks/bench_hmm.py``.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import structures
from pcdiff.app.allocator import keep_heap_pages

from .common import interleaved_medians, machine_info, mark, markdown_table, torch_threads, warm_then_time
from .dense import DenseHMM
from .report import Section, markers, write_sections

TARGET_DENSE = 0.8          # ours at least 0.8x the speed of the hand-written forward, every row
TARGET_HMMLEARN = 10.0      # ours (fwd+bwd) at least 10x hmmlearn's score ...
TARGET_HMMLEARN_STATES = 256  # ... at this H
HMMLEARN_WORK = 2 ** 28     # L·H²·sequences timed per hmmlearn call; past it, time a subset and scale
VARIANTS = ("fwd+bwd", "fwd", "soft fwd+bwd", "soft fwd")
HMMLEARN_IMPLS = ("log", "scaling")   # its default, and its faster one
MIN_REPEATS, MAX_REPEATS = 3, 25     # per configuration, whatever the budget
DEFAULT_BUDGET = 8.0                 # seconds of timed rounds per configuration
KEY, TITLE = "hmm", "HMM circuit core vs hand-written torch and hmmlearn"
MARK_BEGIN, MARK_END = markers(KEY)


@dataclass
class Row:
    device: str
    num_states: int
    vocab: int
    repeats: int                                                 # timed rounds of ours and the dense forward
    hmmlearn_repeats: int
    seconds: dict[str, float]                                    # contender name -> median seconds
    hmmlearn_sequences: int                                      # sequences scored per hmmlearn call

    def ratio(self, baseline: str, ours: str) -> float:
        return self.seconds[baseline] / self.seconds[ours]


def hmm_tables(model: structures.CompiledCircuit) -> list[torch.nn.Parameter]:
    """Our logits in DenseHMM's order: a homogeneous HMM compiles to an initial [1, H] and a transition
    [H, H] sum table (told apart by shape) and one emission [H, V] input table."""
    num_states = model.inputs[0].logits.shape[0]
    sums = {tuple(t.logits.shape): t.logits for t in model.sums}
    if len(model.sums) != 2 or len(model.inputs) != 1 or set(sums) != {(1, num_states), (num_states, num_states)}:
        raise ValueError("expected the tables of a homogeneous structures.hmm")
    return [sums[(1, num_states)], sums[(num_states, num_states)], model.inputs[0].logits]


def dense_from_compiled(model: structures.CompiledCircuit) -> DenseHMM:
    """A :class:`DenseHMM` holding copies of our parameters."""
    if not all(bool(t.support.all()) for t in [*model.sums, *model.inputs]):
        raise ValueError("the dense reference needs strictly positive parameters")
    initial, transition, emission = hmm_tables(model)
    return DenseHMM(initial[0], transition, emission)


def hmmlearn_models(dense: DenseHMM) -> dict:
    from hmmlearn.hmm import CategoricalHMM

    def probs(logits):                                                 # float64 rows: sum to 1 for its checks
        return torch.softmax(logits.detach().double().cpu(), dim=-1).numpy()
    models = {}
    for impl in HMMLEARN_IMPLS:
        m = CategoricalHMM(n_components=dense.initial_logits.shape[0],
                           n_features=dense.emission_logits.shape[1], implementation=impl)
        m.startprob_, m.transmat_ = probs(dense.initial_logits), probs(dense.transition_logits)
        m.emissionprob_ = probs(dense.emission_logits)
        models[impl] = m
    return models


def queries(model, dense, x, soft) -> dict:
    """variant -> (ours, hand-written) zero-argument forward calls; "soft" leaves every position
    unobserved and puts the [B, L, V] log-potentials on all of them."""
    unobserved = torch.zeros_like(x, dtype=torch.bool)
    return {"fwd": (lambda: model.log_prob(x), lambda: dense.log_prob(x)),
            "soft fwd": (lambda: model.log_prob(x, observed=unobserved, soft_evidence=soft),
                         lambda: dense.soft_log_normalizer(soft))}


def contenders(model, dense, x, soft) -> dict:
    """name -> zero-argument callable, for every variant, ours and hand-written."""
    def with_grad(forward, params):
        return lambda: torch.autograd.grad(forward().sum(), params)
    out = {}
    for name, (ours, hand) in queries(model, dense, x, soft).items():
        out[f"ours {name}"], out[f"hand {name}"] = torch.no_grad()(ours), torch.no_grad()(hand)
        bwd = name.replace("fwd", "fwd+bwd")
        out[f"ours {bwd}"] = with_grad(ours, list(model.parameters()))
        out[f"hand {bwd}"] = with_grad(hand, list(dense.parameters()))
    return out


def check_agreement(model, dense, x, soft, hmm_models, subset: int) -> None:
    """Ours must compute what the baselines compute: log-likelihoods, soft normalizers, gradients."""
    for what, (ours, hand) in queries(model, dense, x, soft).items():
        a, b = ours(), hand()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3, msg=lambda m: f"{what} disagrees: {m}")
        ours_grads = torch.autograd.grad(a.sum(), hmm_tables(model))
        for name, ga, gb in zip(("initial", "transition", "emission"), ours_grads,
                                torch.autograd.grad(b.sum(), list(dense.parameters()))):
            torch.testing.assert_close(ga.reshape(gb.shape), gb, rtol=1e-3, atol=1e-4 * max(1.0, float(gb.abs().max())),
                                       msg=lambda m: f"{what}: gradient w.r.t. the {name} logits disagrees: {m}")
    with torch.no_grad():
        total = float(model.log_prob(x[:subset]).double().sum())
    xs = x[:subset].cpu().numpy().reshape(-1, 1)
    for impl, m in hmm_models.items():
        score = m.score(xs, [x.shape[1]] * subset)
        if not np.isclose(score, total, rtol=1e-4, atol=1e-2):
            raise AssertionError(f"hmmlearn ({impl}) total log-likelihood {score} != ours {total}")


def run_config(num_states: int, vocab: int, batch: int, length: int, device: str, budget: float, max_repeats: int,
               seed: int) -> Row:
    model = structures.compile(structures.hmm(length, num_states, vocab, seed=seed), device=device)
    dense = dense_from_compiled(model)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (batch, length), generator=gen).to(device)
    soft = torch.randn(batch, length, vocab, generator=gen).to(device)
    # hmmlearn is CPU-only and slow at large H: it scores a subset of the sequences, time scaled.
    subset = min(batch, max(1, HMMLEARN_WORK // (length * num_states * num_states)))
    hmm_models = hmmlearn_models(dense)
    check_agreement(model, dense, x, soft, hmm_models, subset)

    seconds, rounds = warm_then_time(contenders(model, dense, x, soft), budget, MIN_REPEATS, max_repeats, device)
    xs, lengths = x[:subset].cpu().numpy().reshape(-1, 1), [length] * subset
    hmm_fns = {f"hmmlearn {impl}": (lambda m=m: m.score(xs, lengths)) for impl, m in hmm_models.items()}
    hmm_seconds, hmm_rounds = interleaved_medians(hmm_fns, budget / 4, 2, max_repeats)
    seconds.update({name: t * batch / subset for name, t in hmm_seconds.items()})
    return Row(device, num_states, vocab, rounds, hmm_rounds, seconds, subset)


# ---------------------------------------------------------------------------------------------- report
def ratio_table(rows: list[Row]) -> str:
    pairs = [(v, impl) for v in ("fwd+bwd", "fwd") for impl in HMMLEARN_IMPLS]
    head = ["device", "H", "V"] + [f"{v} vs hand" for v in VARIANTS] + [f"{v} vs hmmlearn {i}" for v, i in pairs]
    cells = []
    for r in rows:
        line = [r.device, str(r.num_states), str(r.vocab)]
        line += [mark(r.ratio(f"hand {v}", f"ours {v}"), TARGET_DENSE) for v in VARIANTS]
        line += [mark(r.ratio(f"hmmlearn {i}", f"ours {v}"), TARGET_HMMLEARN, digits=1)
                 if r.num_states == TARGET_HMMLEARN_STATES else f"{r.ratio(f'hmmlearn {i}', f'ours {v}'):.1f}"
                 for v, i in pairs]
        cells.append(line)
    return markdown_table(head, cells)


def time_table(rows: list[Row]) -> str:
    names = [f"{who} {v}" for v in VARIANTS for who in ("ours", "hand")] + [f"hmmlearn {i}" for i in HMMLEARN_IMPLS]
    head = ["device", "H", "V", "rounds (hmmlearn)"] + names + ["hmmlearn seqs timed"]
    return markdown_table(head, [[r.device, str(r.num_states), str(r.vocab), f"{r.repeats} ({r.hmmlearn_repeats})"] +
                                 [f"{1e3 * r.seconds[n]:.2f}" for n in names] + [str(r.hmmlearn_sequences)]
                                 for r in rows])


def target_lines(rows: list[Row]) -> list[str]:
    dense = [(r.ratio(f"hand {v}", f"ours {v}"), f"{r.device} H={r.num_states} V={r.vocab} {v}") for r in rows
             for v in VARIANTS]
    worst, where = min(dense)
    out = [f"- ours ≥ {TARGET_DENSE}× the hand-written forward (all rows, all variants): "
           f"{'MET' if worst >= TARGET_DENSE else 'MISSED'} (worst {worst:.2f}× at {where})"]
    at = [r for r in rows if r.num_states == TARGET_HMMLEARN_STATES]
    for impl in HMMLEARN_IMPLS:
        goal = f"- ours fwd+bwd ≥ {TARGET_HMMLEARN:.0f}× hmmlearn score ({impl}) at H={TARGET_HMMLEARN_STATES}: "
        if not at:
            out.append(goal + f"n/a (H={TARGET_HMMLEARN_STATES} not in this run)")
            continue
        worst, where = min((r.ratio(f"hmmlearn {impl}", "ours fwd+bwd"), f"{r.device} V={r.vocab}") for r in at)
        fwd = min(r.ratio(f"hmmlearn {impl}", "ours fwd") for r in at)
        hand = min(r.ratio(f"hmmlearn {impl}", "hand fwd+bwd") for r in at)
        out.append(goal + f"{'MET' if worst >= TARGET_HMMLEARN else 'MISSED'} (worst {worst:.1f}× at {where}; "
                   f"ours fwd only: {fwd:.1f}×; the hand-written fwd+bwd, for scale: {hand:.1f}×)")
    return out


def report(rows: list[Row], batch: int, length: int) -> str:
    subset = sorted({(r.num_states, r.hmmlearn_sequences) for r in rows if r.hmmlearn_sequences < batch})
    notes = [f"- Ratios are t_baseline / t_ours (> 1: ours faster), medians of interleaved repeats; "
             f"B={batch}, L={length}, float32, parameters as logits (softmax inside every call).",
             "- hmmlearn has no gradient: `fwd+bwd vs hmmlearn` compares our forward + backward with its "
             "forward only. It runs on CPU in float64 (single-threaded C++), also for cuda rows; `log` is its "
             "default implementation, `scaling` its faster one."]
    notes += [f"- hmmlearn at H={h}: {n} of {batch} sequences timed per call, time scaled ×{batch / n:g}."
              for h, n in subset]
    return "\n".join(["Ratios:", "", ratio_table(rows), "", "Median milliseconds:", "", time_table(rows), "",
                      "Targets:", *target_lines(rows), "", *notes])


def plot(rows: list[Row], fig) -> None:
    left, right = fig.subplots(1, 2)
    vocabs, devices = sorted({r.vocab for r in rows}), sorted({r.device for r in rows})
    for device in devices:                      # colour: variant; line: vocab; marker: device
        for vocab in vocabs:
            sel = sorted((r for r in rows if (r.device, r.vocab) == (device, vocab)), key=lambda r: r.num_states)
            hs = [r.num_states for r in sel]
            style = "os^"[devices.index(device) % 3] + ("-", "--", "-.", ":")[vocabs.index(vocab) % 4]
            for i, v in enumerate(VARIANTS):
                kw = dict(color=f"C{i}", label=f"{device} V={vocab} {v}")
                left.plot(hs, [r.ratio(f"hand {v}", f"ours {v}") for r in sel], style, **kw)
                if v in ("fwd+bwd", "fwd"):          # against hmmlearn's faster implementation
                    right.plot(hs, [min(r.ratio(f"hmmlearn {i}", f"ours {v}") for i in HMMLEARN_IMPLS)
                                    for r in sel], style, **kw)
    left.axhline(TARGET_DENSE, color="grey", ls=":", label=f"target {TARGET_DENSE}×")
    right.axhline(TARGET_HMMLEARN, color="grey", ls=":", label=f"target {TARGET_HMMLEARN:.0f}× (at H=256)")
    left.set_title("vs hand-written dense forward (t_hand / t_ours)")
    right.set_title("vs hmmlearn score, faster impl. (t_hmmlearn / t_ours)")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("num_states states H")
        ax.legend(fontsize=6)


def sizes(quick: bool) -> dict:
    if quick:
        return dict(batch=4, length=6, num_states_list=(8, 16), vocabs=(5, 32), max_repeats=5)
    return dict(batch=64, length=32, num_states_list=(64, 256, 1024), vocabs=(64, 4096), max_repeats=MAX_REPEATS)


def run(devices: list[str], quick: bool = False, budget: float | None = None, seed: int = 0,
        log=print) -> Section:
    """Time every configuration on every device; the section holds the tables and the ratio plot."""
    s = sizes(quick)
    budget = min(budget or DEFAULT_BUDGET, 0.5) if quick else (budget or DEFAULT_BUDGET)
    rows = []
    for device in devices:
        for vocab in s["vocabs"]:
            for num_states in s["num_states_list"]:
                start = time.perf_counter()
                rows.append(run_config(num_states, vocab, s["batch"], s["length"], device, budget, s["max_repeats"],
                                       seed))
                log(f"  hmm {device} H={num_states} V={vocab}: {rows[-1].repeats} rounds, "
                    f"{time.perf_counter() - start:.1f} s")
    return Section(KEY, TITLE, report(rows, s["batch"], s["length"]), [lambda fig: plot(rows, fig)])


# --------------------------------------------------------------------------- standalone (the script)
def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench_hmm.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: cpu rows, plus cuda rows when CUDA is available")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (smoke test)")
    p.add_argument("--out", type=Path, help="markdown file to write the section into; the plot goes "
                   "next to it as <stem>_hmm.png")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds of timed rounds per "
                   f"configuration (at least {MIN_REPEATS} rounds), plus a quarter of it for hmmlearn")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be ≥ 1, got {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    return args


def main(argv=None) -> str:
    """The HMM part alone; returns the section's markdown (as printed)."""
    args = parse_args(argv)
    keep_heap_pages()
    devices = [args.device] if args.device != "auto" else ["cpu"] + (["cuda"] * torch.cuda.is_available())
    with torch_threads(args.threads):
        info = machine_info(args.threads, "cuda" in devices)
        print(info, flush=True)
        section = run(devices, args.quick, args.budget, args.seed)
    command = "python benchmarks/bench_hmm.py " + " ".join(sys.argv[1:] if argv is None else argv)
    section.body = f"Machine: {info}\n\nCommand: `{command.strip()}`\n\n{section.body}"
    print("\n" + section.body)
    if args.out is not None:
        print("\nwrote " + ", ".join(map(str, write_sections(args.out, [section]))))
    return section.body
