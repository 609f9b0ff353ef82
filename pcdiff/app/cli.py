"""The `pcdiff` command line: demo | train | train-backbone | sample | infill | eval | convert | bench.

Errors a user can cause (missing files, empty data, items longer than the block, bad options, a
damaged run folder) end the program with one line on stderr and exit status 2, not a traceback.
Every option is checked before any work starts (:mod:`.options`), and what needs the data (the
layer's size, a held-out split for the demo) is checked before training starts.
"""
from __future__ import annotations

import pathlib
import sys

import torch

from .allocator import keep_heap_pages
from .options import check_options
from .parser import build_parser

#: Exceptions that describe a user's mistake, not a bug: printed as one line.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError, TypeError)


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
    retrain = args.retrain_backbone or args.backbone_steps is not None
    backbone = pathlib.Path(args.backbone_checkpoint) if args.backbone_checkpoint else \
        "train" if retrain else "shipped"
    run = prepare_run(dataset=args.dataset, data_file=args.data, max_length=args.max_length, seed=args.seed,
                      num_states=args.num_states, structure=args.structure, adapter=args.adapter, device=device,
                      backbone_dim=args.backbone_dim, backbone_depth=args.backbone_depth, noise=args.noise,
                      backbone=backbone, data_seed=args.data_seed, dependence_only=args.dependence_only)
    shipped = run.settings.get("backbone", {}).get("shipped")
    if shipped is not None:
        print(f"pcdiff {args.command}: using the shipped backbone {shipped} (--retrain-backbone to train one here)")
    return run


def _train(args, run, progress: bool):
    from .demo import train_prepared
    return train_prepared(run, budget=args.budget, backbone_steps=args.backbone_steps, layer_steps=args.layer_steps,
                          progress=progress, layer_lr=args.layer_lr, em_init_epochs=args.em_init_epochs,
                          layer_draw=args.layer_draw, cache_maskings=args.cache_maskings)


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


def cmd_train_backbone(args) -> int:
    from .pretrained import train_shipped_backbone
    record = train_shipped_backbone(args.out, progress=not args.quiet, dataset=args.dataset, seed=args.seed,
                                    steps=args.steps, noise=args.noise, dropout=args.dropout,
                                    eval_every=args.eval_every, lr=args.lr, init=args.init, dim=args.dim,
                                    depth=args.depth, max_length=args.max_length, elbo_draw=args.elbo_draw)
    last = record["history"][-1]
    print(f"saved {args.out}.safetensors: held-out NLL at one masked token {last['heldout_1tok']:.4f} nats; "
          f"change over the last fifth {100 * record['plateau']['heldout_1tok']:.2f}% "
          f"({'a plateau' if record['plateau_reached'] else 'NOT a plateau'})")
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


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "train-backbone": cmd_train_backbone, "sample": cmd_sample,
            "infill": cmd_infill, "eval": cmd_eval, "convert": cmd_convert}
