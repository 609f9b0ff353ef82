"""A CoDD layer over a tiny masked-diffusion backbone, on real English words (char-level, wordfreq).

    python examples/codd_layer.py                       # about a minute on 2 CPU cores
    python examples/codd_layer.py --num-words 30000 --max-length 12 --dim 128 --depth 4 --backbone-steps 1200 \\
        --num-states 128 --layer-steps 3000 --adapter static,latent_evidence,low_rank   # docs/codd_layer.md's run

Trains the backbone briefly, builds a layer (an HMM over the word's block of characters) per
adapter, trains each on the CoDD objective with the backbone frozen, compares held-out NLL with
the factorized backbone, then queries the first layer's block distribution of one held-out word
with every other letter masked: exact log-probability, marginals, joint and any-order samples, MAP.
"""
import argparse
import time

import torch

from pcdiff import CoDDLayer, TinyDiffusionTransformer, evaluate_nll, train_backbone, train_codd_layer
from pcdiff.backbones.noise import corrupt
from pcdiff.codd.rules import draw
from pcdiff.data import load_words


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-words", type=int, default=5000)
    p.add_argument("--max-length", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--backbone-steps", type=int, default=600)
    p.add_argument("--structure", choices=["hmm", "chain", "tree"], default="hmm")
    p.add_argument("--num-states", type=int, default=64, help="latent states of the circuit")
    p.add_argument("--adapter", default="static", help="comma-separated: static, latent_evidence, low_rank")
    p.add_argument("--layer-steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    data = load_words(num_words=args.num_words, max_length=args.max_length, seed=args.seed)
    print(data)
    torch.manual_seed(args.seed)
    backbone = TinyDiffusionTransformer(data.vocab.size, data.vocab.mask_id, data.block_length, dim=args.dim,
                                        depth=args.depth)
    start = time.perf_counter()
    result = train_backbone(backbone, data, steps=args.backbone_steps, seed=args.seed, eval_every=None)
    print(f"backbone: {backbone.num_parameters():,} parameters, {result['steps']} steps in "
          f"{time.perf_counter() - start:.0f} s, held-out loss {result['heldout_loss']:.3f}")

    # One layer per adapter: a circuit over the whole block of characters (the word + end padding).
    layers = {}
    for adapter in args.adapter.split(","):
        layer = CoDDLayer.from_structure(args.structure, data.block_length, data.vocab.size, num_states=args.num_states,
                                         adapter=adapter, backbone_hidden_size=backbone.hidden_size,
                                         mask_id=data.vocab.mask_id, seed=args.seed,
                                         data=data.encode_train() if args.structure == "tree" else None)
        start = time.perf_counter()
        result = train_codd_layer(layer, backbone, data, steps=args.layer_steps, lr=args.lr, seed=args.seed,
                                  eval_every=None)
        print(f"layer ({adapter}): {sum(p.numel() for p in layer.parameters()):,} parameters, "
              f"{result['steps']} steps in {time.perf_counter() - start:.0f} s")
        layers[adapter] = layer

    heldout = data.encode_heldout()
    print("held-out NLL per masked token (nats)\n  masked  factorized  " + "  ".join(f"{a:>15}" for a in layers))
    for fraction in (0.25, 0.5, 0.75, 1.0):
        rows = [evaluate_nll(layer, backbone, heldout, fraction, seed=args.seed) for layer in layers.values()]
        print(f"  {fraction:6.2f}  {rows[0]['factorized']:10.3f}  " + "  ".join(f"{r['codd']:15.3f}" for r in rows))
    layer = next(iter(layers.values()))

    # One held-out word with every other letter masked.
    word = data.heldout_items[0]
    x0 = heldout[:1]
    masked = torch.zeros_like(x0, dtype=torch.bool)
    masked[0, 0:len(word):2] = True
    xt = corrupt(x0, masked, backbone)                       # the backbone's noise at the masked positions
    with torch.no_grad():
        out = backbone(xt)
        dist = layer.distribution(out.logits, out.hidden, xt, masked)
        show = lambda ids: data.vocab.decode(ids, mask_char="_")  # noqa: E731
        print(f"\nword {word!r}, input {show(xt[0])!r}")
        print(f"log p̂(truth) = {float(dist.log_prob(x0)):.3f}   factorized: "
              f"{float((dist.factorized().log_prob(x0) * masked).sum()):.3f}")
        marg = dist.marginals()[0]
        for i in masked[0].nonzero().flatten().tolist():
            top = marg[i].topk(3)
            letters = ", ".join(f"{data.vocab.tokens[int(v)]}:{float(p):.2f}" for p, v in zip(top.values, top.indices))
            print(f"  position {i}: {letters}")
        g = torch.Generator().manual_seed(args.seed)
        joint = dist.sample((6,), generator=g)[:, 0]
        naive = torch.where(masked, draw(dist.factorized().probs.expand(6, -1, -1, -1), generator=g)[:, 0], x0)
        print("joint samples (CoDD):    ", [show(s) for s in joint])
        print("independent (factorized):", [show(s) for s in naive])
        print("any-order sample:        ", show(dist.sample_any_order("low_confidence", generator=g)[0]))
        best = dist.map()
        print(f"MAP: {show(best.assignment[0])!r} (log p̂ {float(best.log_prob[0]):.3f}, exact={bool(best.exact[0])})")


if __name__ == "__main__":
    main()
