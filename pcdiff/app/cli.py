"""The `pcdiff` command line: demo | train | sample | infill | eval | convert | bench.

Errors a user can cause (missing files, empty data, items longer than the block, bad options, a
damaged run folder) end the program with one line on stderr and exit status 2, not a traceback.
Every option is checked before any work starts (:mod:`.options`), and what needs the data (the
layer's size, a held-out split for the demo) is checked before training starts.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import torch

from ..backbones.protocol import NOISE_KINDS
from ..codd.adapters import ADAPTERS
from ..codd.layer import STRUCTURES
from ..codd.rules import REMASKING
from ..data.puzzles import TASKS
from ..decode.step import CODD_MODES
from .allocator import keep_heap_pages
from .options import check_options

#: Exceptions that describe a user's mistake, not a bug: printed as one line.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError, TypeError)


def _data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=["words", "python", *TASKS], default="words",
                       help="built-in data: English words from wordfreq, lines of Python's standard library, or a "
                            "puzzle with exact answers (permutations-2..8, latin-4, sudoku-4)")
    group.add_argument("--data", metavar="FILE", help="your own text file, one item per line (overrides --dataset)")
    group.add_argument("--max-length", type=int,
                       help="longest item in characters, at most 1024 (default: 12 for words, 32 for python, "
                            "the longest line of a file, a puzzle's item length)")


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and training")
    group.add_argument("--structure", choices=STRUCTURES, default="hmm", help="circuit structure")
    group.add_argument("--num-states", "--hidden", dest="num_states", type=int, default=128,
                       help="latent states of the circuit (--hidden: the 0.1 name, kept for now)")
    group.add_argument("--adapter", choices=sorted(ADAPTERS), default="static",
                       help="how the circuit is conditioned on the backbone's hidden states")
    group.add_argument("--budget", type=float, default=1.0,
                       help="multiplies the default training steps (1 = about 5 minutes on 2 CPU cores; "
                            "4 = a longer, better run)")
    group.add_argument("--backbone-steps", type=int, help="train the backbone this many steps (replaces the budget)")
    group.add_argument("--layer-steps", type=int, help="train the layer this many steps (replaces the budget)")
    group.add_argument("--noise", choices=NOISE_KINDS, default="mask",
                       help="the backbone's noise: mask (absorbing, the default) or uniform (noisy positions hold "
                            "random tokens; docs/backbones.md)")


def _control_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control-items", type=int, default=200,
                        help="items per set (in-distribution, unseen types) for the controls beside the "
                             "likelihood figures; the circuits alone are fit on 40 times as many training occurrences")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed for data split, training and sampling")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcdiff", description="Coupled Discrete Diffusion with probabilistic circuits")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train a backbone and a CoDD layer, evaluate, write a report",
                               description="The main job: backbone → CoDD layer → evaluation → results.json, "
                                           "results.md and plots in the output folder.")
    _data_options(demo)
    _model_options(demo)
    demo.add_argument("--out", help="output folder, new or empty (default: a fresh pcdiff-runs/run-N)")
    demo.add_argument("--samples", type=int, default=2000, help="generated items per setting")
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
    evaluate.add_argument("--samples", type=int, default=2000, help="generated items per setting")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:                   # every option belongs to the benchmark script
        return cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    keep_heap_pages()
    try:
        check_options(args)
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        message = " ".join(str(err).splitlines())           # one line, whatever the message holds
        print(f"pcdiff {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pcdiff: interrupted", file=sys.stderr)
        return 130


def _prepare(args, device):
    """The run before training (data loaded, models built): what fails on the data fails here."""
    from .demo import prepare_run
    return prepare_run(dataset=args.dataset, data_file=args.data, max_length=args.max_length, seed=args.seed,
                       num_states=args.num_states, structure=args.structure, adapter=args.adapter, device=device,
                       noise=args.noise)


def _train(args, run, progress: bool):
    from .demo import train_prepared
    return train_prepared(run, budget=args.budget, backbone_steps=args.backbone_steps, layer_steps=args.layer_steps,
                          progress=progress)


def _controls(args):
    from .controls import ControlSettings
    return ControlSettings(items=args.control_items, seed=args.seed)


def cmd_demo(args) -> int:
    from .demo import evaluate_run, write_report
    from .options import torch_device
    from .runs import fresh_run_directory, save_run
    out = fresh_run_directory(args.out)
    run = _prepare(args, torch_device(args.device))
    if not run.data.heldout_items:
        source = f"--data {args.data}" if args.data is not None else f"--dataset {args.dataset}"
        raise ValueError(f"{source}: its {len(run.data.train_items)} distinct item(s) leave none held out (10% are), "
                         "and the demo evaluates on held-out items: give more distinct lines")
    print(f"pcdiff demo: writing to {out}")
    run = _train(args, run, progress=not args.quiet)
    save_run(run, out)
    results = evaluate_run(run, seed=args.seed, num_samples=args.samples, progress=not args.quiet,
                           controls=_controls(args))
    print(write_report(results, out))
    print(f"results: {out / 'results.json'}, {out / 'results.md'}, plots: {out}/*.png")
    return 0


def cmd_train(args) -> int:
    """Under torchrun (``torchrun --nproc_per_node N -m pcdiff train …``) every process runs this: the
    layer trains with DDP over the N processes and only rank 0 prints and writes the run folder."""
    from ..train.distributed import session
    from .options import torch_device
    from .runs import fresh_run_directory, save_run
    if args.backbone != "tiny":
        from .hfrun import HF_PREFIX, train_hf
        out = train_hf(args, pathlib.Path(args.backbone.removeprefix(HF_PREFIX)), fresh_run_directory(args.out),
                       torch_device(args.device), progress=not args.quiet)
        print(f"saved run to {out}")
        return 0
    with session(torch_device(args.device)) as (world, device):
        out = fresh_run_directory(args.out) if world.is_main else None
        run = _train(args, _prepare(args, device), progress=not args.quiet and world.is_main)
        if world.is_main:
            save_run(run, out)
            print(f"saved run to {out}")
        world.barrier()
    return 0


def cmd_sample(args) -> int:
    from ..decode import generate
    from .options import torch_device
    from .hfrun import is_hf_run, sample_hf
    from .runs import load_run
    if is_hf_run(pathlib.Path(args.run)):
        print("\n".join(sample_hf(args, torch_device(args.device))))
        return 0
    if args.prompt is not None:
        raise ValueError(f"--prompt needs a run over a Hugging Face model (train --backbone hf:DIR); {args.run} "
                         "is a tiny-backbone run")
    run = load_run(pathlib.Path(args.run), device=torch_device(args.device))
    length = run.data.block_length
    if args.steps > length:
        raise ValueError(f"--steps must be in [1, {length}] (the run's block length), got {args.steps}")
    prompt = torch.empty(args.num, 0, dtype=torch.long, device=run.backbone.device)
    tokens = generate(run.backbone, prompt, layer=run.layer if args.codd != "off" else None, gen_length=length,
                      block_length=length, steps=args.steps, remasking=args.remasking,
                      temperature=args.temperature, codd=args.codd,
                      generator=torch.Generator(device=prompt.device).manual_seed(args.seed))
    for row in tokens.tolist():
        ok = run.data.vocab.is_well_formed(row)
        text = run.data.vocab.decode(row) if ok else run.data.vocab.decode(row, mask_char="?")
        tag = "real" if ok and run.data.is_real(text) else ("new" if ok else "malformed")
        print(f"{text!r:<40} {tag}")
    return 0


def cmd_infill(args) -> int:
    from ..files import atomic_write_text
    from .infill import completions, infill, read_items
    from .options import torch_device
    from .runs import load_run
    source = "standard input" if args.input == "-" else args.input
    try:
        text = sys.stdin.read() if args.input == "-" else pathlib.Path(args.input).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{source}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    run = load_run(pathlib.Path(args.run), device=torch_device(args.device))
    items = read_items(text, run.data.vocab, run.data.block_length, args.mask_char, source)
    device = run.backbone.device
    tokens = infill(run, items, num=args.num, steps=args.steps, codd=args.codd, remasking=args.remasking,
                    temperature=args.temperature, generator=torch.Generator(device=device).manual_seed(args.seed))
    lines = "".join(f"{line}\n" for line in completions(tokens, run.data.vocab))
    if args.output == "-":
        sys.stdout.write(lines)
    else:
        atomic_write_text(args.output, lines)
    return 0


def cmd_eval(args) -> int:
    from .demo import evaluate_run, write_report
    from .options import torch_device
    from .runs import load_run
    run = load_run(pathlib.Path(args.run), device=torch_device(args.device))
    if not run.data.heldout_items:
        raise ValueError(f"{args.run}: the run's data ({run.data.name}) has no held-out items to evaluate on")
    results = evaluate_run(run, seed=args.seed, num_samples=args.samples, progress=not args.quiet,
                           controls=_controls(args))
    print(write_report(results, pathlib.Path(args.out or args.run)))
    return 0


def cmd_convert(args) -> int:
    import structures
    source = pathlib.Path(args.input)
    if source.is_dir():
        from .runs import load_run
        circuit = load_run(source).layer.circuit.to_circuit()
    elif source.is_file():
        circuit = structures.load_jpc(source)
    else:
        raise FileNotFoundError(f"no such file or run folder: {source}")
    structures.save_jpc(circuit, args.output, block_size=args.block_size)
    print(f"{source} → {args.output}: {circuit.summary()}")
    return 0


def cmd_bench(options: list[str]) -> int:
    """``pcdiff bench …`` runs ``python -m benchmarks …`` from the source checkout: the benchmarks are
    not library code and are not installed with the package (see benchmarks/README.md)."""
    import os
    import subprocess
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        print("pcdiff bench: error: the benchmarks live in the source checkout (benchmarks/), which this "
              "installation does not have; clone the repository and install it with pip install -e .",
              file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "benchmarks", *options], env=env).returncode


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "sample": cmd_sample, "infill": cmd_infill, "eval": cmd_eval,
            "convert": cmd_convert}
