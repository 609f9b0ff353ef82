"""What the CoDD layer adds to a decoding step, and how that share falls as the backbone grows.

One step of :func:`pcdiff.decode.generate` is a backbone forward over the sequence, then a
proposal for the block: factorized (``codd="off"``: softmax, one draw per position) or the layer's
(``codd="joint"``: one exact joint sample of the masked positions plus the exact marginals that rank
them). The backbones are :class:`~pcdiff.backbones.TinyDiffusionTransformer` s with random
weights at about 1M, 10M and 100M parameters; the layer is the same static HMM (H=128) for all of
them. The parts of a step (backbone forward, CoDD proposal, factorized proposal) are timed
apart on the same inputs, a half-masked block, and

    overhead = (t_backbone + t_codd) / (t_backbone + t_factorized) − 1

is the extra time of a CoDD step over a plain one. (A step is exactly the sum of its parts; timing
them apart keeps the layer's term from drowning in the noise of a 100M-parameter forward, and lets
the proposals, which do not depend on the backbone, be timed once with many rounds.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from pcdiff.backbones import TinyDiffusionTransformer
from pcdiff.codd import CoDDLayer
from pcdiff.decode import BlockDecoder

from .common import MEMORY_HOW, markdown_table, mib, peak_memory, warm_then_time
from .report import Section

KEY, TITLE = "layer", "CoDD layer overhead per decoding step (demo model, CPU)"
HIDDEN = 128                                # the layer's latent states, as in the demo
BATCH = 64
STEPS_PER_BLOCK = 4                         # as the demo's timing: min(4, block length)
DEFAULT_BUDGET = 6.0
#: name -> TinyDiffusionTransformer sizes (dim, depth, heads); parameters at V=27 in the name
BACKBONES = {"1M": (128, 5, 4), "10M": (384, 6, 6), "100M": (1024, 8, 16)}
#: (block length, vocabulary, what it stands for)
SETTINGS = [(13, 27, "words demo"), (32, 1024, "larger vocabulary")]


@dataclass
class Row:
    block_length: int
    vocab: int
    backbone: str
    parameters: int
    batch: int
    rounds: int
    seconds: dict[str, float]          # "backbone", "codd", "factorized" -> median seconds (whole batch)
    peak: dict[str, int]               # same keys -> peak bytes allocated during one call

    @property
    def overhead(self) -> float:
        s = self.seconds
        return (s["backbone"] + s["codd"]) / (s["backbone"] + s["factorized"]) - 1

    def block_ms(self, steps: int = STEPS_PER_BLOCK) -> float:
        """Extra milliseconds the layer adds to one sampled block of one sequence."""
        return 1e3 * steps * (self.seconds["codd"] - self.seconds["factorized"]) / self.batch


def half_masked_block(length: int, vocab: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens [B, L] with the mask id (= vocab) at a random half of the positions, masked [B, L]."""
    gen = torch.Generator().manual_seed(seed)
    masked = torch.rand(batch, length, generator=gen).argsort(-1) < (length + 1) // 2
    tokens = torch.randint(0, vocab, (batch, length), generator=gen)
    return torch.where(masked, torch.full_like(tokens, vocab), tokens), masked


def proposals(backbone, layer, tokens, masked, seed: int) -> dict:
    """The CoDD and the factorized proposal for the block, as zero-argument calls on fixed inputs."""
    with torch.no_grad():
        out = backbone(tokens)
    count = -(-tokens.shape[1] // STEPS_PER_BLOCK)
    decoders = {mode: BlockDecoder(layer, mask_id=backbone.mask_id, codd=mode,
                                   generator=torch.Generator().manual_seed(seed)) for mode in ("joint", "off")}

    def propose(mode):
        return torch.no_grad()(lambda: decoders[mode].step(out.logits, out.hidden, tokens, masked, count))
    return {"codd": propose("joint"), "factorized": propose("off")}


def run_setting(length: int, vocab: int, names: list[str], batch: int, budget: float, seed: int,
                log=print) -> list[Row]:
    """One block length and vocabulary: the layer's proposals and every backbone size's forward.

    The proposals do not depend on the backbone, so they are timed once, interleaved with the
    forwards of the backbones that take well under a second; the 100M forward (seconds on 2 cores)
    gets its own 2-3 rounds.
    """
    start = time.perf_counter()
    layer = CoDDLayer.from_structure("hmm", length, vocab, num_states=HIDDEN, mask_id=vocab, seed=seed)
    tokens, masked = half_masked_block(length, vocab, batch, seed)
    backbones = {}
    for name in names:
        dim, depth, heads = BACKBONES[name]
        torch.manual_seed(seed)
        backbones[name] = TinyDiffusionTransformer(vocab, vocab, length, dim=dim, depth=depth, heads=heads).eval()
    forwards = {name: torch.no_grad()(lambda m=m: m(tokens)) for name, m in backbones.items()}
    parts = proposals(backbones[names[0]], layer, tokens, masked, seed)
    big = [n for n in names if n == "100M"]
    seconds, rounds = warm_then_time({**parts, **{n: f for n, f in forwards.items() if n not in big}},
                                     budget, 3, 25)
    counts = {n: rounds for n in names if n not in big}
    for name in big:
        alone, counts[name] = warm_then_time({name: forwards[name]}, budget, 2, 3)
        seconds.update(alone)
    layer_peak = {k: peak_memory(parts[k]) for k in ("codd", "factorized")}
    rows = [Row(length, vocab, name, backbones[name].num_parameters(), batch, counts[name],
                {"backbone": seconds[name], "codd": seconds["codd"], "factorized": seconds["factorized"]},
                {"backbone": peak_memory(forwards[name]), **layer_peak}) for name in names]
    alone = "".join(f", {n} alone: {counts[n]} rounds" for n in big)
    log(f"  layer L={length} V={vocab}: {rounds} rounds{alone}, {time.perf_counter() - start:.1f} s")
    return rows


def report(rows: list[Row], batch: int) -> str:
    head = ["block L", "V", "backbone", "params", "rounds", "backbone fwd ms", "factorized ms", "CoDD ms",
            "overhead", "layer ms / sampled block", "backbone peak MiB", "CoDD step peak MiB",
            "factorized peak MiB"]
    cells = [[str(r.block_length), str(r.vocab), r.backbone, f"{r.parameters / 1e6:.1f}M", str(r.rounds),
              f"{1e3 * r.seconds['backbone']:.1f}", f"{1e3 * r.seconds['factorized']:.2f}",
              f"{1e3 * r.seconds['codd']:.2f}", f"{100 * r.overhead:.1f}%", f"{r.block_ms():.3f}",
              mib(r.peak["backbone"]), mib(r.peak["codd"]), mib(r.peak["factorized"])] for r in rows]
    notes = [f"- One decoding step at batch {batch}, a half-masked block, static HMM layer with H={HIDDEN}, "
             "float32, random weights (the timing does not depend on training). `CoDD ms` is "
             "`BlockDecoder.step` with `codd=\"joint\"` (exact joint sample + exact marginals), "
             "`factorized ms` the same with `codd=\"off\"`; both exclude the backbone.",
             "- overhead = (backbone + CoDD) / (backbone + factorized) − 1, from medians of interleaved rounds; the "
             "proposals are timed once per block length (they do not depend on the backbone), interleaved with "
             "the 1M and 10M forwards; the 100M forward gets its own 2-3 rounds.",
             f"- layer ms / sampled block = {STEPS_PER_BLOCK} steps × (CoDD − factorized) / {batch}: the "
             "layer's extra time per generated block of one sequence.",
             f"- Peak memory: {MEMORY_HOW['cpu']}. The layer's peaks do not depend on the backbone."]
    return "\n".join([markdown_table(head, cells), "", *notes])


def plot(rows: list[Row], fig) -> None:
    left, right = fig.subplots(1, 2)
    for i, (length, vocab) in enumerate(sorted({(r.block_length, r.vocab) for r in rows})):
        sel = sorted((r for r in rows if (r.block_length, r.vocab) == (length, vocab)), key=lambda r: r.parameters)
        params = [r.parameters for r in sel]
        label = f"L={length}, V={vocab}"
        left.plot(params, [100 * r.overhead for r in sel], "o-", color=f"C{i}", label=label)
        right.plot(params, [1e3 * r.seconds["backbone"] for r in sel], "o-", color=f"C{i}",
                   label=f"{label}: backbone fwd")
        right.plot(params, [1e3 * r.seconds["codd"] for r in sel], "s--", color=f"C{i}", label=f"{label}: CoDD")
        right.plot(params, [r.peak["backbone"] / 2 ** 20 for r in sel], "^:", color=f"C{i}",
                   label=f"{label}: backbone peak MiB")
        right.plot(params, [r.peak["codd"] / 2 ** 20 for r in sel], "v-.", color=f"C{i}",
                   label=f"{label}: CoDD peak MiB")
    left.set(title="CoDD step overhead vs backbone size", ylabel="overhead (%)", xlabel="backbone parameters")
    right.set(title="time (ms) and peak memory (MiB) per step", xlabel="backbone parameters")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.legend(fontsize=6)
    left.set_yscale("log")
    right.set_yscale("log")


def run(quick: bool = False, budget: float | None = None, seed: int = 0, log=print) -> Section:
    if quick:
        settings, names, batch, budget = [(13, 27, "words demo"), (8, 64, "small")], ["1M"], 8, 0.3
    else:
        settings, names, batch, budget = SETTINGS, list(BACKBONES), BATCH, budget or DEFAULT_BUDGET
    rows = [r for length, vocab, _ in settings for r in run_setting(length, vocab, names, batch, budget, seed, log)]
    return Section(KEY, TITLE, report(rows, batch), [lambda fig: plot(rows, fig)])
