"""Does CoDD's joint acceptance accept more of DiffusionGemma's canvas at the same quality? (issue 14)

A tiny ``transformers.DiffusionGemmaForBlockDiffusion`` (text only, random init, no hub access) is trained
from scratch on a puzzle with exact answers (:mod:`pcdiff.data.puzzles`, default ``permutations-4``: the
canvas is one item, its characters then the end symbol). Its vocabulary is the task's tokens and nothing
else: uniform noise needs no mask id, and the one-token prompt every canvas is decoded after is the end
symbol (what precedes an item in a stream of items), so the model's ids are the data's ids.

Training the model (``transformers``' model computes no training loss from labels, so the project's
uniform-noise objective is used, through the project's trainer :func:`pcdiff.train.plateau.train_to_plateau`,
i.e. ``train_model`` and its loop ``run_steps``, recording the exact one-token NLL as it goes): per row
t ~ U(0, 1), each canvas position replaced by a uniformly random token with probability t, and the
1/t-weighted cross-entropy of the clean tokens at the replaced positions (``masked_diffusion_loss``; see
:mod:`pcdiff.train.backbone` for why it is not the UDLM ELBO). The decoding
loop feeds every step after the first the previous step's logits (self-conditioning, Chen et al., arXiv
2208.04202); so that the model has seen such inputs, half the training rows get the logits of a first,
gradient-free pass on the same noisy canvas, the other half none (the model's ``self_conditioning_mask``).

The CoDD layer (an HMM over the canvas) is then trained on the frozen model as ``pcdiff train --backbone
hf:DIR`` does (:class:`pcdiff.app.hfrun.CanvasAfterContext`, :func:`pcdiff.train.train_codd_layer`, the
model's uniform noise). Every decoder of :func:`pcdiff.decode.canvas.generate_canvas` then generates
``--samples`` items at each entropy bound; items are judged exactly (:func:`pcdiff.app.judge.judge_items`:
valid = satisfies the puzzle's rules; novel = valid and held out of training), with the decoder calls
per item (``forward_passes``). Steps, never seconds, bound every run; everything is seeded.

Run from the repository root: ``python -m benchmarks.gemma_acceptance [--quick] [--out docs/backbones.md]``.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch

from pcdiff.app.hfrun import CanvasAfterContext
from pcdiff.app.judge import judge_items
from pcdiff.backbones import DiffusionGemmaBackbone
from pcdiff.backbones.protocol import Backbone, BackboneOutput
from pcdiff.codd import CoDDLayer
from pcdiff.data.puzzles import TASKS, load_task, perfect_factorized_generation
from pcdiff.decode.canvas import generate_canvas
from pcdiff.train import train_codd_layer
from pcdiff.train.config import BackboneTrainingConfig
from pcdiff.train.plateau import train_to_plateau

from .common import markdown_table, torch_threads
from .report import Section, write_sections

__all__ = ["DECODERS", "build_model", "TrainableCanvas", "measure", "main"]

#: (label, generate_canvas settings); the layer is passed to the CoDD ones. Every decoder runs ``steps`` =
#: the canvas length (the most a block needs when acceptance is final), the model's loop also at its default.
MODEL_STEPS = 48
DECODERS = (("factorized (model's loop)", dict(codd="off")),
            (f"factorized (model's loop, {MODEL_STEPS} steps)", dict(codd="off", steps=MODEL_STEPS)),
            ("factorized, keep_accepted", dict(codd="off", keep_accepted=True)),
            ("CoDD, entropy_bound acceptance", dict(codd="joint", acceptance="entropy_bound")),
            ("CoDD, joint acceptance", dict(codd="joint", acceptance="joint")))
BOUNDS = (0.03, 0.1, 0.3, 1.0, 3.0, 100.0)
#: ``evaluations``: records of the exact one-token NLL over the model's training (at least two: the plateau).
SIZES = {"full": dict(hidden=64, layers=2, steps=8000, batch=128, evaluations=10, layer_steps=600, states=32,
                      samples=2000, bounds=BOUNDS),
         "quick": dict(hidden=32, layers=2, steps=20, batch=16, evaluations=2, layer_steps=10, states=4, samples=12,
                       bounds=(0.1, 100.0))}


def build_model(vocab: int, canvas: int, hidden: int, layers: int, seed: int = 0):
    """A randomly initialized DiffusionGemma, text in use (a one-layer 16-wide vision tower, never called);
    the smallest mixture of experts the model allows (2 experts, top 1)."""
    import transformers
    from transformers.utils import logging
    logging.set_verbosity_error()
    heads = max(1, hidden // 32)
    text = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=1, head_dim=32, global_head_dim=32,
                sliding_window=32, max_position_embeddings=64, num_experts=2, top_k_experts=1,
                moe_intermediate_size=hidden, layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"])
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=1, num_key_value_heads=1, head_dim=16)
    config = transformers.DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.DiffusionGemmaForBlockDiffusion(config)


class TrainableCanvas(Backbone):
    """The model as a trainable uniform-noise backbone over its canvas: ``compute(tokens [B, L])`` runs the
    encoder on the one ``context_id`` token and the decoder on the canvas in one differentiable call ->
    logits [B, L, V] and the decoder's last hidden state. In training mode a row gets, with probability
    ``self_conditioning`` (drawn from torch's global generator, which the trainer seeds), the logits of a
    gradient-free first pass as self-conditioning; in eval mode none (what ``DiffusionGemmaBackbone`` gives)."""

    noise = "uniform"

    def __init__(self, model, context_id: int, self_conditioning: float = 0.5):
        super().__init__()
        self.model, self.context_id, self.self_conditioning = model, context_id, self_conditioning
        self.vocab_size = int(model.lm_head.weight.shape[0])
        self.hidden_size, self.mask_id = int(model.config.get_text_config().hidden_size), None

    def _call(self, tokens: torch.Tensor, sc_logits=None, sc_mask=None):
        from transformers import DynamicCache
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        context = torch.full((tokens.shape[0], 1), self.context_id, dtype=torch.long, device=tokens.device)
        return self.model(input_ids=context, cache=cache, decoder_input_ids=tokens, output_hidden_states=True,
                          self_conditioning_logits=sc_logits, self_conditioning_mask=sc_mask)

    def compute(self, tokens: torch.Tensor) -> BackboneOutput:
        sc_logits = sc_mask = None
        if self.training and self.self_conditioning > 0:
            with torch.no_grad():
                sc_logits = self._call(tokens).logits
            sc_mask = torch.rand(tokens.shape[0]) < self.self_conditioning
        out = self._call(tokens, sc_logits, sc_mask)
        return BackboneOutput(logits=out.logits.float(), hidden=out.hidden_states[-1].float())


def train(task: str, size: dict, seed: int, progress: bool, log=print):
    """(data, backbone, layer, info): the model trained from scratch, then the layer on it, frozen."""
    data = load_task(task, seed=seed)
    vocab, canvas = data.vocab.size, data.block_length
    model = build_model(vocab, canvas, size["hidden"], size["layers"], seed)
    view = TrainableCanvas(model, context_id=data.vocab.end_id)
    config = BackboneTrainingConfig(steps=size["steps"], batch_size=size["batch"], lr=3e-3, seed=seed,
                                    eval_every=max(1, size["steps"] // size["evaluations"]), warmup_steps=100,
                                    progress=progress)
    started = time.process_time()
    log(f"training the model: {size['steps']} steps, {view.num_parameters():,} parameters")
    summary = train_to_plateau(view, data, config)
    model.eval().requires_grad_(False)
    backbone = DiffusionGemmaBackbone(model)
    layer = CoDDLayer.from_structure("hmm", canvas, vocab, num_states=size["states"], seed=seed)
    log(f"training the layer: {size['layer_steps']} steps")
    layer_summary = train_codd_layer(layer, CanvasAfterContext(backbone, data.vocab.end_id), data,
                                     steps=size["layer_steps"], seed=seed, eval_every=None, progress=progress)
    layer.eval().requires_grad_(False)
    info = {"parameters": view.num_parameters(), "train_1tok": summary["train_1tok"],
            "plateau": summary["plateau"]["train_1tok"], "layer_loss": layer_summary["train_loss"],
            "heldout": layer_summary["heldout"], "cpu_seconds": time.process_time() - started}
    return data, backbone, layer, info


def measure(data, backbone, layer, bounds, samples: int, seed: int, log=print) -> list[dict]:
    """One row per (bound, decoder): judged rates and decoder calls per item."""
    prompt = torch.full((samples, 1), data.vocab.end_id, dtype=torch.long)
    steps = data.block_length                          # the most a keep_accepted block can need
    rows = []
    for bound in bounds:
        for label, settings in DECODERS:
            out = generate_canvas(backbone, prompt, entropy_bound=bound,
                                  layer=layer if settings["codd"] == "joint" else None, **{"steps": steps, **settings},
                                  generator=torch.Generator().manual_seed(seed))
            judged = judge_items(out.tokens[:, 1:], data, seed=seed)
            passes = out.forward_passes.double()
            rows.append({"bound": bound, "decoder": label, **judged, "passes": float(passes.mean()),
                         "passes_se": float(passes.std() / samples ** 0.5) if samples > 1 else 0.0,
                         "tokens_per_pass": data.block_length / float(passes.mean())})
            log(f"bound {bound:g} {label}: valid {judged['valid']:.3f}, passes {rows[-1]['passes']:.2f}")
    return rows


CODD_RULES = (DECODERS[3][0], DECODERS[4][0])     # CoDD with the entropy-bound rule, CoDD with joint acceptance


def verdict(rows: list[dict], decoders=CODD_RULES) -> list[str]:
    """Per bound, joint acceptance against the entropy-bound rule under CoDD: the difference in valid rate
    (± its standard error, independent samples) and in decoder calls per item."""
    lines = []
    for bound in sorted({r["bound"] for r in rows}):
        eb, joint = (next(r for r in rows if r["bound"] == bound and r["decoder"] == d) for d in decoders)
        diff = joint["valid"] - eb["valid"]
        se = (eb["valid_se"] ** 2 + joint["valid_se"] ** 2) ** 0.5
        lines.append(f"* bound {bound:g}: joint acceptance {joint['passes']:.2f} calls per item vs "
                     f"{eb['passes']:.2f}; valid {joint['valid']:.3f} vs {eb['valid']:.3f} "
                     f"(difference {diff:+.3f} ± {se:.3f})")
    return lines


def frontier(rows: list[dict], decoder: str) -> list[tuple[float, float]]:
    """(decoder calls per item, valid rate) of ``decoder`` over the bounds, fewest calls first."""
    return sorted((r["passes"], r["valid"]) for r in rows if r["decoder"] == decoder)


def calls_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """The fewest decoder calls at which the frontier ``points`` (fewest calls first) reaches the valid rate
    ``target``: linear between the best point below it and the first point at or above it; None: never."""
    best = None                                               # the highest valid rate seen with fewer calls
    for calls, valid in points:
        if valid >= target:
            if best is None:
                return calls
            return best[0] + (target - best[1]) / (valid - best[1]) * (calls - best[0])
        best = (calls, valid) if best is None or valid > best[1] else best
    return None


def matched_quality(rows: list[dict], decoders=CODD_RULES) -> list[str]:
    """At each valid rate the entropy-bound rule reaches, the calls joint acceptance needs for it."""
    joint = frontier(rows, decoders[1])
    lines = []
    for calls, valid in frontier(rows, decoders[0]):
        needed = calls_to_reach(joint, valid)
        said = "never reached" if needed is None else f"{needed:.2f} ({needed / calls - 1:+.0%})"
        lines.append(f"* valid {valid:.3f}: entropy-bound rule {calls:.2f} calls per item, joint acceptance {said}")
    return lines


def draw_frontier(rows: list[dict]):
    def draw(fig):
        ax = fig.add_subplot(1, 1, 1)
        for label, _ in DECODERS:
            mine = sorted((r for r in rows if r["decoder"] == label), key=lambda r: r["passes"])
            ax.errorbar([r["passes"] for r in mine], [r["valid"] for r in mine], yerr=[r["valid_se"] for r in mine],
                        marker="o", capsize=2, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("decoder calls per item (log scale)")
        ax.set_ylabel("valid rate")
        ax.set_title("quality against speed over the entropy bounds")
        ax.legend(fontsize=8)
    return draw


def markdown(rows: list[dict], info: dict, task: str, size: dict, seed: int, command: str) -> str:
    head = ["entropy bound", "decoder", "valid", "novel", "decoder calls per item", "tokens per call"]
    table = markdown_table(head, [[f"{r['bound']:g}", r["decoder"], f"{r['valid']:.3f} ± {r['valid_se']:.3f}",
                                   f"{r['novel']:.3f} ± {r['novel_se']:.3f}",
                                   f"{r['passes']:.2f} ± {r['passes_se']:.2f}", f"{r['tokens_per_pass']:.2f}"]
                                  for r in rows])
    heldout = info["heldout"]["codd"] if isinstance(info.get("heldout"), dict) else None
    return "\n".join([
        f"Command: `{command}` (seed {seed}; {info['cpu_seconds']:.0f} CPU seconds for the training, one thread).",
        "",
        f"Task `{task}` (canvas = one item and its end symbol; a perfect factorized model drawing a whole item in "
        f"one step is valid with probability {perfect_factorized_generation(task):.3f}). DiffusionGemma: hidden "
        f"{size['hidden']}, {size['layers']} layers, {info['parameters']:,} parameters, {size['steps']} steps "
        f"from scratch (uniform noise, self-conditioning on half the rows; exact one-token NLL of training items "
        f"{info['train_1tok']:.3f} nats, {100 * info['plateau']:.1f}% change over the last fifth of training). "
        f"CoDD: an HMM with "
        f"{size['states']} states, {size['layer_steps']} steps on the frozen model (held-out CoDD objective "
        f"{heldout if heldout is not None else float('nan'):.3f}). {size['samples']} items per cell, "
        "`steps` = the canvas length unless the row says otherwise, the model's temperatures and stopping rule; "
        "± one standard error.",
        "", table, "",
        "CoDD with joint acceptance against CoDD with the model's entropy-bound acceptance, per bound:", "",
        *verdict(rows), "",
        "At the same quality (the valid rates the entropy-bound rule reaches over the bounds; joint acceptance's "
        "calls interpolated linearly on its own frontier):", "", *matched_quality(rows)])


def run(args, command: str) -> str:
    size = dict(SIZES["quick" if args.quick else "full"])
    size.update({k: v for k, v in (("steps", args.steps), ("samples", args.samples)) if v is not None})
    with torch_threads(args.threads):
        data, backbone, layer, info = train(args.task, size, args.seed, progress=not args.quiet)
        rows = measure(data, backbone, layer, size["bounds"], size["samples"], args.seed)
    body = markdown(rows, info, args.task, size, args.seed, command)
    if args.out:
        write_sections(pathlib.Path(args.out), [Section("gemma-acceptance", "DiffusionGemma: joint acceptance "
                                                        "measured on a trained model (issue 14)", body,
                                                        figures=[draw_frontier(rows)])])
    print(body)
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gemma_acceptance", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds: a smoke test, not a measurement")
    p.add_argument("--task", default="permutations-4", choices=sorted(TASKS))
    p.add_argument("--steps", type=int, help="the model's training steps (default 8000; --quick 20)")
    p.add_argument("--samples", type=int, help="items per cell (default 2000; --quick 12)")
    p.add_argument("--out", default="docs/backbones.md", help="markdown file whose section is replaced ('' : none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    for name in ("steps", "samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"--{name} must be at least 1, got {value}", file=sys.stderr)
            return 2
    run(args, " ".join(["python -m benchmarks.gemma_acceptance", *argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
