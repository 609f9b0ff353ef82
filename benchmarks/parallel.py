"""``python -m benchmarks.parallel``: where parallel decoding provably fails, CoDD against the decoders
others use to go fast, on the same work; writes ``docs/parallel_decoding.md`` (tables and plots).

Tasks with exact answers (:mod:`pcdiff.data.puzzles`: permutations of 4, 4×4 Latin squares, 4×4
sudoku; held-out solutions never trained on) and English words. Every decoder generates whole items
(one block each) and is judged by the task's rules; its cost is counted in backbone calls per item
(a row stops costing once its block is decoded) and in wall-clock per item, side by side in one run.
Decoders: factorized (LLaDA's low-confidence remasking at a fixed number of steps), Fast-dLLM's
confidence threshold, the EB-sampler's entropy bound, ReMDM's remasking, an APD-style product with a
small autoregressive model, and CoDD's joint draw with a learned HMM and with the circuit designed
for the task's rules, alone and under the threshold and entropy-bound rules.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time
from dataclasses import dataclass, field

import torch

from pcdiff.app.allocator import keep_heap_pages
from pcdiff.app.tasks import completion_rates, judge_task, standard_error
from pcdiff.decode import generate

from .parallel_models import Models, adapter_layers, prepare
from .parallel_report import write_report

TASK_NAMES = ("permutations-4", "latin-4", "sudoku-4", "words")


@dataclass
class Decoder:
    """One decoder setting: ``kwargs`` for :func:`pcdiff.decode.generate` (besides the models),
    ``layer``: which of the task's CoDD layers it uses (None: none)."""
    label: str
    family: str
    steps: int
    kwargs: dict = field(default_factory=dict)
    layer: str | None = None


def decoders(models: Models, quick: bool) -> list[Decoder]:
    """Every decoder setting run on a task: fixed-step decoders over a grid of steps per block, the
    adaptive ones (threshold, entropy bound) at a step budget of one position per step."""
    length = models.data.block_length
    grid = sorted({1, 2, 4, 8, length} & set(range(1, length + 1))) if not quick else [1, length]
    out = [Decoder("factorized", "factorized", s) for s in grid]
    out += [Decoder(f"Fast-dLLM threshold {t}", "Fast-dLLM threshold", length, dict(threshold=t))
            for t in ((0.5, 0.7, 0.9) if not quick else (0.7,))]
    out += [Decoder(f"EB-sampler bound {b}", "EB-sampler", length, dict(entropy_bound=b, remasking="entropy"))
            for b in ((0.1, 0.5, 1.0, 3.0) if not quick else (1.0,))]
    out += [Decoder("ReMDM σ=0.2", "ReMDM", s, dict(remask=0.2)) for s in grid if s > 1]
    out += [Decoder("APD-style AR product w=0.5", "AR product", s, dict(codd="ar_product", ar_weight=0.5))
            for s in grid]
    for name in models.layers:
        out += [Decoder(f"CoDD ({name})", f"CoDD ({name})", s, dict(codd="joint"), name) for s in grid]
        out += [Decoder(f"CoDD ({name}) + EB bound 1.0", f"CoDD ({name}) + EB", length,
                        dict(codd="joint", entropy_bound=1.0, remasking="entropy"), name)]
    return out


class CallCounter(torch.nn.Module):
    """The backbone, counting per row the calls made while that row still had a mask (a row whose
    block is decoded stops costing, as it would decoded alone)."""

    def __init__(self, backbone, rows: int):
        super().__init__()
        self.backbone = backbone
        self.vocab_size, self.mask_id, self.hidden_size = backbone.vocab_size, backbone.mask_id, backbone.hidden_size
        self.calls = torch.zeros(rows, dtype=torch.long)

    def forward(self, tokens):
        self.calls += (tokens == self.mask_id).any(-1).cpu()
        return self.backbone(tokens)


@torch.no_grad()
def measure(models: Models, decoder: Decoder, samples: int, seed: int, batch: int = 500) -> dict:
    """Validity, novelty, backbone calls and seconds per item of one decoder on one task."""
    length, tokens, calls, ar_calls = models.data.block_length, [], [], 0
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for first in range(0, samples, batch):
        rows = min(batch, samples - first)
        counter = CallCounter(models.backbone, rows)
        kwargs = dict(decoder.kwargs)
        if kwargs.get("codd") == "ar_product":
            kwargs["ar_model"] = models.ar
        out, made = generate(counter, None, layer=models.layers.get(decoder.layer), gen_length=length,
                             block_length=length, steps=decoder.steps, batch_size=rows, generator=generator,
                             return_calls=True, **kwargs)
        tokens.append(out)
        calls.append(counter.calls)
        ar_calls += made.ar
    seconds = (time.perf_counter() - start) / samples
    batches = -(-samples // batch)
    judged = _judge(torch.cat(tokens), models)
    return {"decoder": decoder.label, "family": decoder.family, "steps": decoder.steps, **judged,
            "valid_se": standard_error(judged["valid"], samples), "calls": float(torch.cat(calls).float().mean()),
            "ar_passes": ar_calls / batches, "seconds": seconds, "samples": samples}


def _judge(tokens: torch.Tensor, models: Models) -> dict:
    if models.task is not None:
        return judge_task(tokens, models.data, models.task)
    vocab, data, train = models.data.vocab, models.data, set(models.data.train_items)
    items = [vocab.decode(row) if vocab.is_well_formed(row) else None for row in tokens.tolist()]
    valid = [i for i in items if i is not None and data.is_real(i)]
    n = len(items)
    return {"num": n, "valid": len(valid) / n, "novel": sum(i not in train for i in valid) / n,
            "distinct_valid": len(set(valid)), "malformed": items.count(None) / n}


def run(tasks, work: pathlib.Path, out: pathlib.Path, samples: int, quick: bool, seed: int, log=print) -> list:
    """Train (or load) every task's models, measure every decoder, write the report."""
    results = []
    for name in tasks:
        log(f"[{name}]")
        models = prepare(name, work, quick, seed, log)
        settings = decoders(models, quick)
        for i, decoder in enumerate(settings):
            row = measure(models, decoder, samples, seed + i)
            log(f"  {decoder.label:<34} steps {decoder.steps:>2}: valid {row['valid']:.3f}, calls "
                f"{row['calls']:.2f}, {1e3 * row['seconds']:.2f} ms/item")
            results.append({"task": name, **row})
        results.extend(completions(models, models.layers, samples if not quick else 20, seed, log))
        if name == "sudoku-4":                                  # do the adapters pay? (completion, given cells)
            adapters = adapter_layers(models, work, quick, seed, log)
            results.extend(completions(models, {f"HMM, {a}": layer for a, layer in adapters.items()},
                                       samples if not quick else 20, seed, log, kind="adapters",
                                       blanks=(8, 10, 12)))
    write_report(out, results, quick, command=" ".join(["python -m benchmarks.parallel", *sys.argv[1:]]))
    return results


def completions(models: Models, layers: dict, puzzles: int, seed: int, log, kind: str = "completion",
                blanks=(4, 8, 12)) -> list[dict]:
    """Completing held-out grids with k blank cells in ONE step: factorized, each CoDD layer of
    ``layers``, and the perfect factorized model's closed form (puzzle tasks with a grid only)."""
    if models.task is None or models.task.kind == "permutations":
        return []
    rows = []
    for name, layer in layers.items():
        result = completion_rates(models.backbone, layer, models.data, models.task, blanks_list=blanks,
                                  num_puzzles=puzzles, steps_list=[1], seed=seed, progress=False)
        for mode, label in (("off", "factorized"), ("joint", f"CoDD ({name})")):
            for k, cell in result["rates"][mode].items():
                rows.append({"task": models.name, "kind": kind, "decoder": label, "blanks": int(k),
                             "exact": cell["1"]["exact"], "exact_se": cell["1"]["exact_se"],
                             "perfect": result["perfect_factorized"][k]["1"]})
        log(f"  completion with CoDD ({name}): done")
    return list({(r["decoder"], r["blanks"]): r for r in rows}.values())       # factorized: once per k


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parallel", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=",".join(TASK_NAMES), help="comma list of " + ", ".join(TASK_NAMES))
    p.add_argument("--samples", type=int, default=500, help="items generated per decoder setting")
    p.add_argument("--work", default="pcdiff-runs/parallel", help="folder that keeps the trained models")
    p.add_argument("--out", default="docs/parallel_decoding.md")
    p.add_argument("--quick", action="store_true", help="tiny models and samples: a smoke test, not a measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    keep_heap_pages()
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or any(t not in TASK_NAMES for t in tasks) or args.samples < 1 or args.threads < 1:
        print(f"python -m benchmarks.parallel: error: --tasks must name some of {', '.join(TASK_NAMES)}, --samples "
              "and --threads must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    run(tasks, pathlib.Path(args.work), pathlib.Path(args.out), args.samples, args.quick, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
