"""Why a learned HMM cannot carry the joint of 4×4 Latin squares: the circuit alone, without a backbone.

``python -m benchmarks.latin_capacity [--states 64,256,576] [--epochs 300]``

CoDD at one step per block draws the whole grid while the backbone's marginals say little (every
cell is near uniform), so the circuit alone must carry the joint. This fits circuits to the training
squares by maximum likelihood (mini-batch EM, and Adam for comparison) and samples them with no
backbone at all: a row-major HMM of H states (H = 576 could hold one path per square), the same with a
transition table per position (not tied), in a snake order of the cells, a hidden chain over rows, a
latent tree learned from the data (HCLT), and the circuit designed for the rules (`structures.latin_square`:
a latent state per cell that is the set of symbols each row and column has used, weights from exact completion counts).
Printed: held-out log-likelihood (the uniform distribution over squares has −log 576 = −6.36 nats)
and the valid / novel rates of 4,000 samples.
"""
from __future__ import annotations

import argparse
import time

import torch

import structures
from pcdiff.data.puzzles import get_task, load_task

SAMPLES = 4000


#: the cells of a 4×4 grid row by row, every other row reversed: neighbours in the order share a row or column
SNAKE = [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11, 15, 14, 13, 12]


def fit_and_sample(name: str, circuit: structures.Circuit, train, heldout, epochs: int, method: str, seed: int,
                   order: list[int] | None = None):
    """Fit ``circuit`` to the squares read in ``order`` (default: row-major) and sample it; samples come
    back in row-major order."""
    order = order or list(range(16))
    train, heldout = train[:, order], heldout[:, order]
    model = structures.compile(circuit)
    start = time.perf_counter()
    if epochs:
        kw = dict(step_size=1.0, pseudocount=1e-4, batch_size=len(train)) if method == "em" else \
            dict(lr=0.05, batch_size=64)
        structures.fit(model, train, epochs=epochs, method=method, seed=seed, progress=False, **kw)
    with torch.no_grad():
        drawn = model.sample(num_samples=SAMPLES, generator=torch.Generator().manual_seed(seed))[:, 0]
        samples = torch.empty_like(drawn)
        samples[:, order] = drawn
        heldout_ll = float(model.log_prob(heldout).mean())
    return name, method if epochs else "none (designed)", heldout_ll, samples, time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latin_capacity", description=__doc__.split("\n")[0])
    p.add_argument("--states", default="64,256,576", help="HMM sizes (comma list)")
    p.add_argument("--epochs", type=int, default=300, help="EM epochs (full batch); Adam runs a third as many")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = load_task("latin-4", seed=args.seed)
    task, vocab = "latin-4", data.vocab
    train, heldout = data.encode_train()[:, :16], data.encode_heldout()[:, :16]   # the 16 cells (no end symbol)
    seen = set(data.train_items)
    runs = []
    for h in (int(s) for s in args.states.split(",")):
        runs.append(fit_and_sample(f"HMM H={h}", structures.hmm(16, h, 4, seed=args.seed), train, heldout,
                                   args.epochs, "em", args.seed))
    h = int(args.states.split(",")[1 if "," in args.states else 0])
    runs.append(fit_and_sample(f"HMM H={h}", structures.hmm(16, h, 4, seed=args.seed), train, heldout,
                               args.epochs // 3, "adam", args.seed))
    runs.append(fit_and_sample(f"HMM H={h}, a transition per position", structures.hmm(16, h, 4, homogeneous=False,
                               seed=args.seed), train, heldout, args.epochs, "em", args.seed))
    runs.append(fit_and_sample(f"HMM H={h}, snake order", structures.hmm(16, h, 4, seed=args.seed), train, heldout,
                               args.epochs, "em", args.seed, order=SNAKE))
    runs.append(fit_and_sample(f"latent tree (HCLT) H={h}", structures.hclt(train.numpy(), h, 4, seed=args.seed),
                               train, heldout, args.epochs, "em", args.seed))
    rows = [[4 * r + c for c in range(4)] for r in range(4)]
    chain = structures.hidden_chain(16, h, 4, span=rows, emitter=structures.mixture_emitter(16), seed=args.seed)
    runs.append(fit_and_sample(f"hidden chain over rows H={h}", chain, train, heldout, args.epochs, "em", args.seed))
    runs.append(fit_and_sample("designed (latin_square)", structures.latin_square(4), train, heldout, 0, "em",
                               args.seed))
    print(f"{task}: {len(train)} training squares, {len(heldout)} held out; {SAMPLES} samples each\n")
    print("| circuit | fit | held-out log-likelihood | valid | novel | seconds |")
    print("|---|---|---|---|---|---|")
    for name, method, ll, samples, seconds in runs:
        items = ["".join(vocab.tokens[v] for v in row) for row in samples.tolist()]
        valid = [i for i in items if get_task(task).is_valid(i)]
        novel = [i for i in valid if i not in seen]
        print(f"| {name} | {method} | {ll:.2f} | {len(valid) / SAMPLES:.3f} | {len(novel) / SAMPLES:.3f} | "
              f"{seconds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
