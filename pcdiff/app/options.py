"""The command line's options, checked before any work starts: one ValueError (or FileNotFoundError,
FileExistsError) per mistake, naming the option, so that a bad setting never costs a training run.
Checks that need the data or a run's files (e.g. ``--steps`` against the block length) run as soon
as those are read, still before training or decoding."""
from __future__ import annotations

import pathlib

import torch

from ..arguments import check_int, check_number
from ..data.sources import MAX_LENGTH
from ..files import check_new_folder
from .defaults import fill_layer_options

__all__ = ["check_options", "check_seed", "torch_device", "MAX_SEED"]

#: Seeds are offset by small counts (steps, ranks) and handed to torch, which takes < 2^64.
MAX_SEED = 2 ** 63 - 1


def check_seed(value, option: str = "--seed") -> int:
    return check_int(option, value, 0, MAX_SEED)


def torch_device(name: str | torch.device | None, option: str = "--device") -> torch.device:
    """The torch device ``name`` names, if this machine has it; a ValueError naming ``option`` otherwise."""
    try:
        device = torch.device(name or "cpu")
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option} {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name} was asked for but torch sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{option} {name} was asked for but torch sees no MPS device")
    elif device.type != "cpu":
        raise ValueError(f"{option} {name!r}: pcdiff runs on cpu, cuda or mps, not {device.type}")
    return device


def _training(args) -> None:
    fill_layer_options(args, args.dataset if args.data is None else None)   # a user's file: the words' recipe
    check_number("--budget", args.budget)
    check_int("--backbone-steps", args.backbone_steps, 1, optional=True)
    check_int("--layer-steps", args.layer_steps, 1, optional=True)
    check_int("--backbone-dim", args.backbone_dim, 1, optional=True)
    check_int("--backbone-depth", args.backbone_depth, 1, optional=True)
    check_number("--layer-lr", args.layer_lr, optional=True)
    check_int("--em-init-epochs", args.em_init_epochs, 0)
    check_int("--num-states", args.num_states, 1)
    check_int("--cache-maskings", args.cache_maskings, 1)
    check_int("--max-length", args.max_length, 1, MAX_LENGTH, optional=True)
    if args.data is not None and not pathlib.Path(args.data).is_file():
        raise FileNotFoundError(f"--data {args.data}: no such file" + (" (it is a folder)"
                                                                        if pathlib.Path(args.data).is_dir() else ""))
    if args.out is not None:
        check_new_folder(args.out, "--out")
    if args.backbone_checkpoint is not None:
        if args.retrain_backbone or args.backbone_steps is not None:
            raise ValueError("--backbone-checkpoint loads a trained backbone; --retrain-backbone and --backbone-steps "
                             "would train one here: give one or the other")
        if not pathlib.Path(args.backbone_checkpoint + ".json").is_file():
            raise FileNotFoundError(f"--backbone-checkpoint {args.backbone_checkpoint}: no checkpoint "
                                    f"{args.backbone_checkpoint}.json")
    backbone = getattr(args, "backbone", "tiny")
    if backbone != "tiny":
        if not backbone.startswith("hf:") or not backbone[3:]:
            raise ValueError(f"--backbone must be tiny or hf:DIR (a save_pretrained folder), got {backbone!r}")
        if not pathlib.Path(backbone[3:]).is_dir():
            raise FileNotFoundError(f"--backbone {backbone}: no such folder")
        tiny_only = [option for option, value in (("--noise", args.noise != "mask"),
                                                  ("--backbone-steps", args.backbone_steps is not None),
                                                  ("--backbone-dim", args.backbone_dim is not None),
                                                  ("--backbone-depth", args.backbone_depth is not None),
                                                  ("--backbone-checkpoint", args.backbone_checkpoint is not None))
                     if value]
        if tiny_only:
            raise ValueError(f"--backbone {backbone} is frozen and brings its own noise and size: "
                             f"{', '.join(tiny_only)} apply to the tiny backbone only")


def _run_folder(args) -> None:
    run = pathlib.Path(args.run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder not found: {run}" + (" (it is a file)" if run.exists() else ""))


def _report_folder(out) -> None:
    if out is not None and pathlib.Path(out).exists() and not pathlib.Path(out).is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder for the report")


def check_options(args) -> None:
    """Check every option of one command's parsed ``args`` (see :func:`pcdiff.app.parser.build_parser`),
    after filling the layer options a demo or train left unset from its data's recipe."""
    if hasattr(args, "seed"):
        check_seed(args.seed)
    if getattr(args, "data_seed", None) is not None:
        check_seed(args.data_seed, "--data-seed")
    if hasattr(args, "device"):
        torch_device(args.device)
    if args.command in ("demo", "train"):
        _training(args)
    if args.command == "train-backbone":
        check_int("--steps", args.steps, 1)
        check_int("--eval-every", args.eval_every, 1)
        for name in ("dim", "depth", "max_length"):
            check_int(f"--{name.replace('_', '-')}", getattr(args, name), 1, optional=True)
        check_number("--dropout", args.dropout, strict=False)
        check_number("--lr", args.lr)
        if args.init is not None and not pathlib.Path(args.init + ".json").is_file():
            raise ValueError(f"--init {args.init}: no checkpoint {args.init}.json")
        if args.dropout >= 1:
            raise ValueError(f"--dropout must be below 1, got {args.dropout}")
    if args.command in ("demo", "eval"):
        check_int("--samples", args.samples, 1)
        check_int("--control-items", args.control_items, 1)
    if args.command == "eval":
        _run_folder(args)
        _report_folder(args.out)
    if args.command == "sample":
        _run_folder(args)
        check_int("--num", args.num, 1)
        check_int("--steps", args.steps, 1)
        check_number("--temperature (0 = greedy)", args.temperature, strict=False)
    if args.command == "infill":
        _run_folder(args)
        check_int("--num", args.num, 1)
        check_int("--steps", args.steps, 1, optional=True)
        check_number("--temperature (0 = greedy)", args.temperature, strict=False)
        if len(args.mask_char) != 1:
            raise ValueError(f"--mask-char must be one character, got {args.mask_char!r}")
        if args.input != "-" and not pathlib.Path(args.input).is_file():
            raise FileNotFoundError(f"--input {args.input}: no such file")
        if args.output != "-" and pathlib.Path(args.output).is_dir():
            raise IsADirectoryError(f"--output {args.output} is a folder; give the file to write")
        if args.output != "-" and not pathlib.Path(args.output).absolute().parent.is_dir():
            raise FileNotFoundError(f"--output {args.output}: its folder does not exist")
    if args.command == "convert":
        size = args.block_size
        if size < 1 or size & (size - 1):
            raise ValueError(f"--block-size must be a power of two >= 1, got {size}")
        output = pathlib.Path(args.output)
        if output.is_dir():
            raise IsADirectoryError(f"output {output} is a folder; give the .jpc file to write")
        if not output.absolute().parent.is_dir():
            raise FileNotFoundError(f"output {output}: its folder {output.absolute().parent} does not exist")
