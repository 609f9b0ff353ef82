"""The `pcdiff` command line: demo | train | sample | eval | convert | bench.

Errors a user can cause (missing files, empty data, items longer than the block, bad options) end
the program with one line on stderr and exit status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import torch

from .allocator import keep_heap_pages

#: Exceptions that describe a user's mistake, not a bug: printed as one line.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, TypeError)


def _data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=["words", "python"], default="words",
                       help="built-in data: English words from wordfreq, or lines of Python's standard library")
    group.add_argument("--data", metavar="FILE", help="your own text file, one item per line (overrides --dataset)")
    group.add_argument("--max-length", type=int,
                       help="longest item in characters (default: 12 for words, 32 for python and files)")


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and training")
    group.add_argument("--structure", choices=["hmm", "chain", "tree"], default="hmm", help="circuit structure")
    group.add_argument("--hidden", type=int, default=128, help="latent states of the circuit")
    group.add_argument("--adapter", choices=["static", "latent_evidence", "low_rank"], default="static",
                       help="how the circuit is conditioned on the backbone's hidden states")
    group.add_argument("--budget", type=float, default=1.0,
                       help="time budget multiplier (1 = about 5 minutes on 2 CPU cores; 4 = a longer, better run)")
    group.add_argument("--backbone-steps", type=int, help="train the backbone this many steps (replaces the budget)")
    group.add_argument("--layer-steps", type=int, help="train the layer this many steps (replaces the budget)")


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
    demo.add_argument("--out", help="output folder (default: a fresh pcdiff-runs/run-N)")
    demo.add_argument("--samples", type=int, default=2000, help="generated items per setting")
    _common(demo)

    train = commands.add_parser("train", help="train a backbone and a CoDD layer into a run folder",
                                description="Train a backbone and a CoDD layer into a run folder. Under "
                                            "`torchrun --nproc_per_node N -m pcdiff train ...` the layer trains "
                                            "with DistributedDataParallel over the N processes.")
    _data_options(train)
    _model_options(train)
    train.add_argument("--out", help="run folder to create (default: a fresh pcdiff-runs/run-N)")
    _common(train)

    sample = commands.add_parser("sample", help="generate items from a trained run")
    sample.add_argument("run", help="run folder written by `pcdiff train` or `pcdiff demo`")
    sample.add_argument("--num", type=int, default=20, help="how many items")
    sample.add_argument("--steps", type=int, default=2, help="decoding steps per block")
    sample.add_argument("--codd", choices=["off", "joint", "any_order"], default="joint", help="use of the layer")
    sample.add_argument("--remasking", choices=["low_confidence", "margin", "entropy", "random"],
                        default="low_confidence")
    sample.add_argument("--temperature", type=float, default=1.0)
    _common(sample)

    evaluate = commands.add_parser("eval", help="evaluate a trained run and write the report")
    evaluate.add_argument("run", help="run folder written by `pcdiff train` or `pcdiff demo`")
    evaluate.add_argument("--out", help="report folder (default: the run folder)")
    evaluate.add_argument("--samples", type=int, default=2000, help="generated items per setting")
    _common(evaluate)

    convert = commands.add_parser("convert", help="convert circuits: .jpc ↔ .jpc, or a run's layer → .jpc")
    convert.add_argument("input", help="a pyjuice .jpc file, or a run folder (exports its trained circuit)")
    convert.add_argument("output", help="the .jpc file to write")
    convert.add_argument("--block-size", type=int, default=32, help="largest pyjuice block size to use")

    bench = commands.add_parser("bench", help="measure the engine and the CoDD layer: tables, docs/benchmarks.md",
                                description="Ratios measured in one run: the circuit engine vs a hand-written "
                                            "forward and hmmlearn, the layer's overhead per decoding step, its "
                                            "time and memory vs H, L, V, batch; with CUDA also vs pyjuice and at "
                                            "LLaDA-8B shapes. See benchmarks/README.md.")
    bench.add_argument("--quick", action="store_true", help="tiny sizes, seconds (a smoke test, not a measurement)")
    bench.add_argument("--threads", type=int, default=2, help="torch threads while timing (default 2)")
    bench.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="auto: CPU rows, plus CUDA rows when a GPU is present")
    bench.add_argument("--out", default="docs/benchmarks.md", help="markdown file whose sections are replaced "
                       "(plots go next to it as <stem>_<part>.png)")
    bench.add_argument("--only", action="append", metavar="PART",
                       help="hmm, layer, memory or gpu; repeat or give a comma list (default: all)")
    bench.add_argument("--budget", type=float, help="seconds of timed rounds per configuration (default per part)")
    bench.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_heap_pages()
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        print(f"pcdiff {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pcdiff: interrupted", file=sys.stderr)
        return 130


def _train_options(args) -> dict:
    from .runs import torch_device
    return dict(dataset=args.dataset, data_file=args.data, max_length=args.max_length, seed=args.seed,
                hidden=args.hidden, structure=args.structure, adapter=args.adapter, device=torch_device(args.device),
                budget=args.budget, backbone_steps=args.backbone_steps, layer_steps=args.layer_steps,
                progress=not args.quiet)


def cmd_demo(args) -> int:
    from .demo import evaluate_run, train_run, write_report
    from .runs import fresh_run_directory, save_run
    out = fresh_run_directory(args.out)
    print(f"pcdiff demo: writing to {out}")
    run = train_run(**_train_options(args))
    save_run(run, out)
    results = evaluate_run(run, seed=args.seed, num_samples=args.samples, progress=not args.quiet)
    print(write_report(results, out))
    print(f"results: {out / 'results.json'}, {out / 'results.md'}, plots: {out}/*.png")
    return 0


def cmd_train(args) -> int:
    """Under torchrun (``torchrun --nproc_per_node N -m pcdiff train …``) every process runs this: the
    layer trains with DDP over the N processes and only rank 0 prints and writes the run folder."""
    from .demo import train_run
    from .distributed import session
    from .runs import fresh_run_directory, save_run
    options = _train_options(args)
    with session(options["device"]) as (world, device):
        out = fresh_run_directory(args.out) if world.is_main else None
        run = train_run(**{**options, "device": device, "progress": options["progress"] and world.is_main})
        if world.is_main:
            save_run(run, out)
            print(f"saved run to {out}")
        world.barrier()
    return 0


def cmd_sample(args) -> int:
    from .runs import load_run, torch_device
    from .sampler import generate
    run = load_run(pathlib.Path(args.run), device=torch_device(args.device))
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    length = run.data.block_length
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


def cmd_eval(args) -> int:
    from .demo import evaluate_run, write_report
    from .runs import load_run, torch_device
    run = load_run(pathlib.Path(args.run), device=torch_device(args.device))
    results = evaluate_run(run, seed=args.seed, num_samples=args.samples, progress=not args.quiet)
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


def cmd_bench(args) -> int:
    from .bench import run_bench
    flags = ["--quick"] * args.quick + [f"--threads {args.threads}", f"--device {args.device}"]
    flags += [f"--only {','.join(args.only)}"] if args.only else []
    flags += [f"--budget {args.budget:g}"] if args.budget is not None else []
    run_bench(quick=args.quick, threads=args.threads, device=args.device, out=args.out, only=args.only,
              budget=args.budget, seed=args.seed, command=" ".join(["pcdiff bench", *flags]))
    return 0


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "convert": cmd_convert,
            "bench": cmd_bench}
