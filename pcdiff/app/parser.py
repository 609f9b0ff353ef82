"""The `pcdiff` command line's options: one parser, its subcommands and their option groups.

The parser only reads; :mod:`.options` checks every value before any work starts, and :mod:`.cli`
runs the command.
"""
from __future__ import annotations

import argparse

from ..backbones.protocol import NOISE_KINDS
from ..codd.adapters import ADAPTERS
from ..codd.layer import STRUCTURES
from ..codd.rules import REMASKING
from ..data.puzzles import TASKS
from ..decode.step import CODD_MODES
from ..train.noise import ELBO_DRAWS
from .defaults import layer_recipe
from .pretrained import PRETRAIN_DEFAULTS

__all__ = ["build_parser"]

_WORDS, _PYTHON = layer_recipe("words"), layer_recipe("python")


def _data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=["words", "python", *TASKS], default="words",
                       help="built-in data: English words from wordfreq, lines of Python's standard library, or a "
                            "puzzle with exact answers (permutations-2..8, latin-4, sudoku-4)")
    group.add_argument("--data", metavar="FILE", help="your own text file, one item per line (overrides --dataset)")
    group.add_argument("--max-length", type=int,
                       help="longest item in characters, at most 1024 (default: 12 for words, 31 for python, "
                            "the longest line of a file, a puzzle's item length)")
    group.add_argument("--data-seed", type=int,
                       help="seed of the held-out split alone (default: --seed); runs of several seeds that share "
                            "one split can share one backbone")


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and training")
    group.add_argument("--structure", choices=STRUCTURES, default="hmm", help="circuit structure")
    group.add_argument("--num-states", "--hidden", dest="num_states", type=int,
                       help=f"latent states of the circuit (default: the data's recipe, {_PYTHON.num_states} for "
                            f"python, else {_WORDS.num_states}; --hidden: the 0.1 name, kept for now)")
    group.add_argument("--adapter", choices=sorted(ADAPTERS), default="static",
                       help="how the circuit is conditioned on the backbone's hidden states")
    group.add_argument("--dependence-only", action="store_true",
                       help="divide the circuit's own one-position conditionals out of the product: it couples "
                            "positions but cannot change one alone (pcdiff.codd.dependence; training costs a "
                            "double backward)")
    group.add_argument("--budget", type=float, default=1.0,
                       help="multiplies the default training steps (1 = about 5 minutes on 2 CPU cores; "
                            "4 = a longer, better run)")
    group.add_argument("--retrain-backbone", action="store_true",
                       help="train the backbone here, even where a trained one ships with pcdiff for this data "
                            "(seed 0, masked noise: words; python lines of up to 31 characters: `pcdiff "
                            "train-backbone`, docs/results.md)")
    group.add_argument("--backbone-checkpoint", metavar="STEM",
                       help="couple to this backbone, trained by `pcdiff train-backbone --out STEM` on the same data "
                            "split and noise, instead of the shipped one or one trained here")
    group.add_argument("--backbone-steps", type=int, help="train the backbone here, this many steps (replaces the "
                                                          "budget; implies --retrain-backbone)")
    group.add_argument("--backbone-dim", type=int,
                       help="the tiny backbone's width (default: the shipped backbone's for this data where one "
                            "ships, else 128); a shipped one of another width is not used")
    group.add_argument("--backbone-depth", type=int, help="its number of layers (default: likewise, else 4)")
    group.add_argument("--layer-steps", type=int, help="train the layer this many steps (replaces the budget)")
    group.add_argument("--layer-lr", type=float,
                       help="the layer's Adam learning rate (default: the demo's LAYER_LR, chosen on the words' "
                            "held-out objective: docs/results.md)")
    group.add_argument("--layer-draw", choices=ELBO_DRAWS,
                       help=f"how the layer's training maskings are drawn: count (k of L positions, k uniform) or "
                            f"time (each position with probability t) (default: the data's recipe, {_WORDS.draw})")
    group.add_argument("--cache-maskings", type=int,
                       help=f"maskings of each training item whose frozen-backbone outputs are cached for the layer "
                            f"(default: the data's recipe, {_WORDS.cache_maskings}; memory: items x maskings x block "
                            "x vocabulary floats)")
    group.add_argument("--em-init-epochs", type=int, default=0,
                       help="fit the layer's circuit alone to the training data by this many EM epochs before "
                            "training the product (a warm start; default 0: none)")
    group.add_argument("--noise", choices=NOISE_KINDS, default="mask",
                       help="the backbone's noise: mask (absorbing, the default) or uniform (noisy positions hold "
                            "random tokens; docs/backbones.md)")


def _control_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control-items", type=int, default=150,
                        help="items per set (in-distribution, unseen types) for the controls beside the "
                             "likelihood figures; the circuits alone are fit on 40 times as many training occurrences")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed for training and sampling (and the data split unless "
                                                            "--data-seed is given)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcdiff",
                                     description="Coupled Discrete Diffusion with probabilistic circuits")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train a backbone and a CoDD layer, evaluate, write a report",
                               description="The main job: backbone → CoDD layer → evaluation → results.json, "
                                           "results.md and plots in the output folder.")
    _data_options(demo)
    _model_options(demo)
    demo.add_argument("--out", help="output folder, new or empty (default: a fresh pcdiff-runs/run-N)")
    demo.add_argument("--samples", type=int, default=1200, help="generated items per setting")
    _control_options(demo)
    _common(demo)

    train = commands.add_parser("train", help="train a backbone and a CoDD layer into a run folder",
                                description="Train a backbone and a CoDD layer into a run folder. Under "
                                            "`torchrun --nproc_per_node N -m pcdiff train ...` the layer trains "
                                            "with DistributedDataParallel over the N processes.")
    _data_options(train)
    _model_options(train)
    train.add_argument("--out", help="run folder to create, new or empty: an existing run is never overwritten "
                                     "(default: a fresh pcdiff-runs/run-N)")
    train.add_argument("--backbone", default="tiny", help="tiny (the built-in backbone, trained here) or hf:DIR, a "
                                                          "frozen Hugging Face model and tokenizer saved by "
                                                          "save_pretrained (docs/backbones.md)")
    _common(train)

    pretrain = commands.add_parser("train-backbone", help="train the tiny backbone to a plateau (the shipped one's "
                                                          "recipe; docs/results.md)",
                                   description="Train the built-in backbone for --steps steps, recording the exact "
                                               "held-out NLL at one masked token, and write OUT.{json,safetensors} and "
                                               "OUT.training.json (the plateau check). Deterministic given --seed.")
    pretrain.add_argument("--out", required=True, help="checkpoint stem to write, e.g. pcdiff/pretrained/words-mask")
    recipe = PRETRAIN_DEFAULTS                                  # the shipped backbone's, one copy
    pretrain.add_argument("--dataset", choices=["words", "python", *TASKS], default=recipe["dataset"],
                          help="built-in data")
    pretrain.add_argument("--steps", type=int, default=recipe["steps"],
                          help="optimizer steps (the schedule follows them; default %(default)s)")
    pretrain.add_argument("--max-length", type=int, help="longest item in characters, blocks one longer (default: "
                                                         "the data set's own)")
    pretrain.add_argument("--noise", choices=NOISE_KINDS, default=recipe["noise"], help="the backbone's noise")
    pretrain.add_argument("--dim", type=int, default=recipe["dim"], help="transformer width (default %(default)s)")
    pretrain.add_argument("--depth", type=int, default=recipe["depth"], help="transformer layers (default %(default)s)")
    pretrain.add_argument("--dropout", type=float, default=recipe["dropout"], help="dropout of the transformer")
    pretrain.add_argument("--elbo-draw", choices=ELBO_DRAWS, default=recipe["elbo_draw"],
                          help="how each step draws the ELBO's noise: time (t ~ U(0,1), weight 1/t) or count (k ~ "
                               "U{1..L} positions masked, weight L/k: same expectation, less variance)")
    pretrain.add_argument("--eval-every", type=int, default=recipe["eval_every"],
                          help="steps between the exact evaluations")
    pretrain.add_argument("--seed", type=int, default=recipe["seed"], help="seed for data split and training")
    pretrain.add_argument("--lr", type=float, default=recipe["lr"],
                          help="peak learning rate (warmup, then cosine decay to 10%%; default %(default)s)")
    pretrain.add_argument("--init", help="checkpoint stem to continue (written by train-backbone, same data, size "
                                         "and noise); --steps more steps on their own schedule")
    pretrain.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="generate items from a trained run")
    sample.add_argument("run", help="run folder written by `pcdiff train` or `pcdiff demo`")
    sample.add_argument("--num", type=int, default=20, help="how many items")
    sample.add_argument("--prompt", help="text to complete (runs over a Hugging Face model only; default: none)")
    sample.add_argument("--steps", type=int, default=2, help="decoding steps per block")
    sample.add_argument("--codd", choices=CODD_MODES, default="joint", help="use of the layer")
    sample.add_argument("--remasking", choices=REMASKING, default="low_confidence")
    sample.add_argument("--temperature", type=float, default=1.0, help="divides the logits; 0 = greedy")
    _common(sample)

    infill = commands.add_parser("infill", help="complete items with unknown characters (one a line, '?' where "
                                                "unknown) with a trained run",
                                 description="Complete items: one item a line, the mask character at every unknown "
                                             "position (e.g. 'c?t'); one completion a line out, --num per item.")
    infill.add_argument("run", help="run folder written by `pcdiff train` or `pcdiff demo`")
    infill.add_argument("--input", default="-", help="file of items, one a line (default: standard input)")
    infill.add_argument("--output", default="-", help="file to write the completions to (default: standard output)")
    infill.add_argument("--mask-char", default="?", help="the character that marks an unknown position (default ?)")
    infill.add_argument("--num", type=int, default=1, help="completions per item")
    infill.add_argument("--steps", type=int, help="decoding steps per item (default: one masked position a step)")
    infill.add_argument("--codd", choices=CODD_MODES, default="joint", help="use of the layer")
    infill.add_argument("--remasking", choices=REMASKING, default="low_confidence")
    infill.add_argument("--temperature", type=float, default=1.0, help="divides the logits; 0 = greedy")
    _common(infill)

    evaluate = commands.add_parser("eval", help="evaluate a trained run and write the report")
    evaluate.add_argument("run", help="run folder written by `pcdiff train` or `pcdiff demo`")
    evaluate.add_argument("--out", help="report folder (default: the run folder)")
    evaluate.add_argument("--samples", type=int, default=1200, help="generated items per setting")
    _control_options(evaluate)
    _common(evaluate)

    convert = commands.add_parser("convert", help="convert circuits: .jpc ↔ .jpc, or a run's layer → .jpc")
    convert.add_argument("input", help="a pyjuice .jpc file, or a run folder (exports its trained circuit)")
    convert.add_argument("output", help="the .jpc file to write")
    convert.add_argument("--block-size", type=int, default=32, help="largest pyjuice block size to use")

    # listed for --help only: main() hands every argument after "bench" to the benchmark script
    commands.add_parser("bench", add_help=False,
                        help="measure the engine and the CoDD layer (runs benchmarks/ from a source checkout; "
                             "`pcdiff bench --help` for its options)")
    return parser
