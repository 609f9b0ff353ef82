"""The CoDD layer's share of one DiffusionGemma decoding step, on CPU, with random weights.

A step of :func:`pcdiff.decode.canvas.generate_canvas` is one decoder call on the canvas (reading the
prompt's KV cache, self-conditioned on the previous step's logits), then a proposal for the canvas's
undecided positions: the model's (softmax, an independent draw per position, entropies, the entropy-bound
acceptance) or CoDD's (the layer's p̂ given the accepted tokens: one exact joint sample and its exact
marginals from one upward pass, their entropies, the same acceptance). The parts are timed apart,
interleaved (:func:`benchmarks.common.warm_then_time`), on one mid-block canvas (half the positions
accepted); by default in CPU seconds of this process on one thread (``--clock cpu``: on a shared machine
the wall clock mostly measures the other processes), and

    share    = t_codd / (t_decoder + t_codd)               the layer's part of a CoDD step
    overhead = (t_decoder + t_codd) / (t_decoder + t_model) − 1

Run from the repository root: ``python -m benchmarks.diffusion_gemma_share [--vocab 32768 ...]``.
"""
from __future__ import annotations

import argparse
import time

import torch

from pcdiff.backbones import DiffusionGemmaBackbone
from pcdiff.codd import CoDDLayer
from pcdiff.decode.canvas import accept, propose

from .common import machine_info, markdown_table, torch_threads, warm_then_time

__all__ = ["build_backbone", "workloads", "main"]


def build_backbone(vocab: int, hidden: int, layers: int, canvas: int, seed: int = 0) -> DiffusionGemmaBackbone:
    """A random-weight DiffusionGemma (text in use; a one-layer 16-wide vision tower, never called)."""
    import transformers
    from transformers.utils import logging
    logging.set_verbosity_error()
    heads = max(1, hidden // 64)
    text = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=64, global_head_dim=64,
                sliding_window=128, num_experts=4, top_k_experts=2, moe_intermediate_size=hidden,
                layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"])
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=1, num_key_value_heads=1, head_dim=16)
    config = transformers.DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.DiffusionGemmaForBlockDiffusion(config).eval().requires_grad_(False)
    return DiffusionGemmaBackbone(model)


def workloads(backbone: DiffusionGemmaBackbone, layers: dict[str, CoDDLayer], batch: int, prompt_length: int,
              bound: float = 0.1, seed: int = 0) -> dict:
    """Zero-argument calls on one mid-block canvas: "decoder", "model" (the factorized proposal) and one
    CoDD proposal per layer (keyed by its name)."""
    gen = torch.Generator().manual_seed(seed)
    vocab, length = backbone.vocab_size, backbone.canvas_length
    context = backbone.start(torch.randint(0, vocab, (batch, prompt_length), generator=gen))
    canvas = torch.randint(0, vocab, (batch, length), generator=gen)
    first = backbone.decode(context, canvas)                      # the previous step: self-conditioning
    out = backbone.decode(context, canvas, first.logits / 0.6)
    logits = out.logits / 0.6                                     # the schedule's temperature, mid-block
    undecided = torch.rand(batch, length, generator=gen) < 0.5

    def step(layer=None):
        p = torch.softmax(logits, -1)
        tokens, entropies = propose(logits, p, out.hidden, canvas, undecided, gen, layer,
                                    "entropy_bound" if layer is None else "joint")
        return accept(entropies, undecided, bound), tokens

    calls = {"decoder": lambda: backbone.decode(context, canvas, logits), "model": step}
    calls.update({name: (lambda layer=layer: step(layer)) for name, layer in layers.items()})
    return calls


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.diffusion_gemma_share", description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--canvas", type=int, default=32, help="canvas (block) length")
    p.add_argument("--prompt", type=int, default=64, help="prompt length in the KV cache")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--states", type=int, default=64, help="the HMM's latent states")
    p.add_argument("--top-k", type=int, action="append", help="a top-k layer (repeatable; default 256 and 1024)")
    p.add_argument("--budget", type=float, default=10.0, help="seconds of timed rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: this process's CPU seconds (default); wall: elapsed seconds")
    return p


def main(argv=None) -> str:
    args = parser().parse_args(argv)
    top_ks = args.top_k or [256, 1024]
    with torch_threads(args.threads), torch.no_grad():
        backbone = build_backbone(args.vocab, args.hidden, args.layers, args.canvas)
        full = CoDDLayer.from_structure("hmm", args.canvas, args.vocab, num_states=args.states, seed=0)
        layers = {"full": full} | {f"top_k={k}": CoDDLayer(full.circuit, top_k=k) for k in top_ks}
        calls = workloads(backbone, layers, args.batch, args.prompt)
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        medians, rounds = warm_then_time(calls, args.budget, 5, 200, clock=clock)
    decoder, model = medians["decoder"], medians["model"]
    rows = [["model's proposal (factorized)", f"{1e3 * decoder:.1f}", f"{1e3 * model:.2f}",
             f"{100 * model / (decoder + model):.1f}%", "—"]]
    for name in layers:
        t = medians[name]
        rows.append([f"CoDD HMM H={args.states}, {name}", f"{1e3 * decoder:.1f}", f"{1e3 * t:.2f}",
                     f"{100 * t / (decoder + t):.1f}%", f"{100 * ((decoder + t) / (decoder + model) - 1):+.1f}%"])
    params = sum(p.numel() for p in backbone.parameters())
    head = ["proposal", "decoder call (ms)", "proposal (ms)", "share of the step", "step overhead vs the model's"]
    text = (f"DiffusionGemma, random weights: vocab {args.vocab}, hidden {args.hidden}, {args.layers} layers "
            f"({params / 1e6:.1f}M parameters), canvas {args.canvas}, prompt {args.prompt}, batch {args.batch}; "
            f"{rounds} interleaved rounds, medians of {args.clock} time.\n{machine_info(args.threads, False)}\n\n"
            + markdown_table(head, rows))
    print(text)
    return text


if __name__ == "__main__":
    main()
