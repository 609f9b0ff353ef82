"""Runs over a frozen Hugging Face model: ``pcdiff train --backbone hf:DIR`` and ``pcdiff sample RUN --prompt``.

DIR is a folder written by ``save_pretrained`` (model and tokenizer): a masked LM (BERT-style, LLaDA, …) or
DiffusionGemma (uniform noise), loaded by :func:`pcdiff.backbones.load_hf_backbone`. The backbone is never
trained nor copied: the run folder holds ::

    RUN/run.json     the model's folder, the SHA-256 of its weight files, the data spec, the layer's settings
    RUN/layer.{json,safetensors}

and loading refuses a model folder whose weight files changed since training (a layer trained on other
logits is wrong in silence). Items are tokenized with DIR's tokenizer (no special tokens added), padded
with its pad token to blocks of ``--max-length`` tokens; for DiffusionGemma the block is its canvas, and the
layer trains on canvases decoded after one fixed context token (the tokenizer's BOS), which is what an
unconditional ``sample`` decodes after. The layer trains on the model's own noise (``train_codd_layer``
corrupts through :mod:`pcdiff.backbones.noise`). Over more than :data:`TOP_K_ABOVE` tokens the layer keeps
each position's :data:`TOP_K` most likely tokens (``CoDDLayer.top_k``): exact on that support, and its
per-step cost L·H·k instead of L·H·V (a 262k-token vocabulary otherwise dominates the step).
"""
from __future__ import annotations

import hashlib
import json
import pathlib

import torch

from .. import __version__
from ..backbones.hf import load_hf_backbone
from ..backbones.protocol import Backbone, BackboneOutput
from ..codd import CoDDLayer
from ..data import ItemData
from ..files import atomic_write_folder, atomic_write_text
from ..train import train_codd_layer
from ..train.checkpoint import CheckpointError, checkpoint_record, file_sha256, load_layer, read_json, save_layer
from .runs import data_spec, load_data

__all__ = ["HF_PREFIX", "TOP_K", "TOP_K_ABOVE", "is_hf_run", "weights_sha256", "train_hf", "load_hf_run",
           "sample_hf"]

HF_PREFIX = "hf:"
#: Vocabularies above TOP_K_ABOVE tokens get a layer restricted to each position's TOP_K likeliest tokens.
TOP_K, TOP_K_ABOVE = 256, 1024
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def weights_sha256(directory: pathlib.Path) -> str:
    """One SHA-256 over a model folder's weight files (names and contents, in name order)."""
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in pathlib.Path(directory).glob(pattern) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{directory}: no weight files ({', '.join(WEIGHT_PATTERNS)}); save the model "
                                "there with save_pretrained")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


#: A folder holds a tokenizer if it has one of these (without them AutoTokenizer builds a near-empty one).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt", "vocab.json")


def load_tokenizer(directory: pathlib.Path):
    from transformers import AutoTokenizer
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{directory}: no tokenizer there (none of {', '.join(TOKENIZER_FILES)}); save one with "
                         "tokenizer.save_pretrained(DIR)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{directory}: no tokenizer there ({type(err).__name__}); save one with "
                         "tokenizer.save_pretrained(DIR)") from None
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{directory}: the tokenizer has no pad token, needed to fill blocks")
    return tokenizer


class TokenVocab:
    """A tokenizer seen as :class:`ItemData`'s vocabulary: ``size`` (the model's output vocabulary),
    ``mask_id`` (the backbone's), ``encode`` an item into exactly ``length`` ids (padded)."""

    def __init__(self, tokenizer, size: int, mask_id: int | None):
        self.tokenizer, self.size, self.mask_id = tokenizer, size, mask_id

    def encode(self, item: str, length: int) -> list[int]:
        ids = self.tokenizer.encode(item, add_special_tokens=False)
        if len(ids) > length:
            raise ValueError(f"item {item[:40]!r} is {len(ids)} tokens, more than --max-length {length}")
        return ids + [self.tokenizer.pad_token_id] * (length - len(ids))

    def decode(self, ids: list[int]) -> str:
        # a padded output head has rows no token names: they are dropped
        return self.tokenizer.decode([i for i in ids if i < len(self.tokenizer)], skip_special_tokens=True)


class CanvasAfterContext(Backbone):
    """DiffusionGemma's canvas seen as a plain uniform-noise backbone over blocks of ``canvas_length``:
    ``compute(tokens [B, L])`` decodes the canvas after the one ``context_id`` token (for training the layer)."""

    noise = "uniform"

    def __init__(self, backbone, context_id: int):
        super().__init__()
        self.inner, self.context_id = backbone, context_id
        self.vocab_size, self.hidden_size, self.mask_id = backbone.vocab_size, backbone.hidden_size, None

    def compute(self, tokens: torch.Tensor) -> BackboneOutput:
        context = torch.full((tokens.shape[0], 1), self.context_id, dtype=torch.long, device=tokens.device)
        out = self.inner(torch.cat([context, tokens], 1))
        return BackboneOutput(logits=out.logits[:, 1:], hidden=out.hidden[:, 1:])


def _is_canvas(backbone) -> bool:
    return hasattr(backbone, "canvas_length")


def _context_id(tokenizer) -> int:
    for name in ("bos_token_id", "cls_token_id", "pad_token_id"):
        if getattr(tokenizer, name, None) is not None:
            return int(getattr(tokenizer, name))
    raise ValueError("the tokenizer has no BOS, CLS or pad token to start a canvas from")


def _open(directory: pathlib.Path, device):
    """(backbone, tokenizer) of a model folder: the tokenizer first, as its absence is the likelier mistake."""
    if not directory.is_dir():
        raise FileNotFoundError(f"--backbone hf:{directory}: no such folder")
    tokenizer = load_tokenizer(directory)
    return load_hf_backbone(str(directory), device=device), tokenizer


def _block_length(backbone, max_length: int | None) -> int:
    if _is_canvas(backbone):
        if max_length not in (None, backbone.canvas_length):
            raise ValueError(f"--max-length {max_length}: DiffusionGemma decodes blocks of its canvas_length, "
                             f"{backbone.canvas_length}")
        return backbone.canvas_length
    if max_length is None:
        raise ValueError("--max-length (tokens a block) is needed with a masked --backbone hf:DIR")
    return max_length


def train_hf(args, directory: pathlib.Path, out: pathlib.Path, device, progress: bool) -> pathlib.Path:
    """Train a CoDD layer on the frozen model in ``directory`` into the new run folder ``out``."""
    from ..train.distributed import launched
    from .demo import check_layer_size, layer_learning_rate, training_steps
    if launched():
        raise ValueError("--backbone hf:DIR trains in one process: run it without torchrun")
    directory = directory.resolve()
    backbone, tokenizer = _open(directory, device)
    if len(tokenizer) > backbone.vocab_size:
        raise ValueError(f"--backbone hf:{directory}: the tokenizer has {len(tokenizer)} tokens but the model only "
                         f"{backbone.vocab_size}: not this model's tokenizer")
    sha = weights_sha256(directory)
    length = _block_length(backbone, args.max_length)
    spec = data_spec(args.dataset, args.data, args.seed)
    text = load_data(spec)
    data = ItemData(text.train_items, text.heldout_items, TokenVocab(tokenizer, backbone.vocab_size, backbone.mask_id),
                    length, text.train_weights, name=text.name)
    data.encode_train(), data.encode_heldout()                         # a too long item fails before training
    top_k = TOP_K if backbone.vocab_size > TOP_K_ABOVE else None
    check_layer_size(args.structure, length, backbone.vocab_size, args.num_states, args.adapter, backbone.hidden_size)
    layer = CoDDLayer.from_structure(args.structure, length, backbone.vocab_size, num_states=args.num_states,
                                     adapter=args.adapter, backbone_hidden_size=backbone.hidden_size, seed=args.seed,
                                     data=data.encode_train() if args.structure == "tree" else None,
                                     mask_id=backbone.mask_id, device=device, top_k=top_k,
                                     dependence_only=args.dependence_only)
    view = CanvasAfterContext(backbone, _context_id(tokenizer)) if _is_canvas(backbone) else backbone
    steps, lr = training_steps(args.budget, None, args.layer_steps)[1], layer_learning_rate(args.layer_lr)
    summary = train_codd_layer(layer, view, data, steps=steps, lr=lr, seed=args.seed, progress=progress,
                               em_init_epochs=args.em_init_epochs, elbo_draw=args.layer_draw,
                               cache_maskings=args.cache_maskings)
    settings = {"pcdiff_version": __version__, "hf": {"path": str(directory), "weights_sha256": sha,
                                                      "noise": backbone.noise, "block_length": length},
                "data": spec, "dataset": data.name, "seed": args.seed, "structure": args.structure,
                "num_states": args.num_states, "adapter": args.adapter, "top_k": top_k,
                "dependence_only": args.dependence_only,
                "layer": {"parameters": sum(p.numel() for p in layer.parameters()), "steps": steps, "lr": lr,
                          "em_init_epochs": args.em_init_epochs, "elbo_draw": args.layer_draw,
                          "cache_maskings": args.cache_maskings,
                          "train_loss": summary.get("train_loss")}}

    def write(folder: pathlib.Path) -> None:
        saved = save_layer(layer, folder / "layer", trained_with={"hf_weights_sha256": sha})
        settings["checkpoints"] = {"layer_sha256": checkpoint_record(saved)["sha256"]}
        atomic_write_text(folder / "run.json", json.dumps(settings, indent=1))
    return atomic_write_folder(out, write)


def is_hf_run(directory: pathlib.Path) -> bool:
    path = pathlib.Path(directory) / "run.json"
    return path.is_file() and isinstance(settings := read_json(path, "run file"), dict) and "hf" in settings


def load_hf_run(directory: pathlib.Path, device=None):
    """(settings, backbone, tokenizer, layer) of an hf run; refuses a changed model or a mismatched layer."""
    directory = pathlib.Path(directory)
    settings = read_json(directory / "run.json", "run file")
    hf = settings.get("hf")
    if not isinstance(hf, dict) or not all(isinstance(hf.get(k), str) for k in ("path", "weights_sha256")):
        raise CheckpointError(f"{directory}/run.json: field 'hf' is invalid (got {hf!r})")
    model = pathlib.Path(hf["path"])
    if not model.is_dir():
        raise FileNotFoundError(f"{directory}: its model folder {model} is gone")
    sha = weights_sha256(model)
    if sha != hf["weights_sha256"]:
        raise CheckpointError(f"{directory}: the model in {model} changed since training (weights SHA-256 "
                              f"{sha[:16]}…, the run recorded {hf['weights_sha256'][:16]}…); train the layer again")
    record = checkpoint_record(directory / "layer.json")
    trained_with, recorded = record["config"].get("trained_with"), settings.get("checkpoints")
    if not isinstance(trained_with, dict) or trained_with.get("hf_weights_sha256") != sha or \
            not isinstance(recorded, dict) or recorded.get("layer_sha256") != record["sha256"]:
        raise CheckpointError(f"{directory}: layer.json was not written with this run.json; train again")
    backbone, tokenizer = _open(model, device)
    return settings, backbone, tokenizer, load_layer(directory / "layer.json", device=device)


def _prompt(args, tokenizer, backbone, length: int) -> list[int]:
    """The prompt's ids (DiffusionGemma: after the context token its canvases were trained after), checked
    against the positions the model takes."""
    ids = [] if args.prompt is None else tokenizer.encode(args.prompt, add_special_tokens=False)
    if args.prompt is not None and not ids:
        raise ValueError(f"--prompt {args.prompt!r} has no tokens")
    if _is_canvas(backbone):
        ids = [_context_id(tokenizer)] + ids
    config = backbone.model.config
    limit = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config,
                    "max_position_embeddings", None)
    if isinstance(limit, int) and len(ids) + length > limit:
        raise ValueError(f"--prompt is {len(ids)} tokens; with the block of {length} the model takes at most "
                         f"{limit} positions, so at most {limit - length} prompt tokens")
    return ids


def sample_hf(args, device) -> list[str]:
    """``--num`` completions of ``--prompt`` (None: unconditional) from an hf run, detokenized."""
    from ..decode import generate
    from ..decode.canvas import CANVAS_CODD, generate_canvas
    _, backbone, tokenizer, layer = load_hf_run(pathlib.Path(args.run), device)
    length = layer.block_length
    ids = _prompt(args, tokenizer, backbone, length)
    prompt = torch.tensor([ids] * args.num, dtype=torch.long, device=device).reshape(args.num, len(ids))
    generator = torch.Generator(device=device).manual_seed(args.seed)
    use_layer = layer if args.codd != "off" else None
    if args.steps > length:
        raise ValueError(f"--steps must be in [1, {length}] (the run's block length), got {args.steps}")
    if _is_canvas(backbone):
        if args.codd not in CANVAS_CODD:
            raise ValueError(f"--codd {args.codd}: DiffusionGemma's canvas takes {' or '.join(CANVAS_CODD)}")
        # the model brings its own temperature schedule and acceptance rule: a knob it would ignore is refused
        if args.temperature != 1.0 or args.remasking != "low_confidence":
            raise ValueError("--temperature and --remasking do not apply to DiffusionGemma (it uses its own "
                             "temperature schedule and entropy-bound acceptance); leave them out")
        tokens = generate_canvas(backbone, prompt, steps=args.steps, layer=use_layer, codd=args.codd,
                                 generator=generator).tokens
    else:
        tokens = generate(backbone, prompt, layer=use_layer, gen_length=length, block_length=length,
                          steps=args.steps, remasking=args.remasking, temperature=args.temperature, codd=args.codd,
                          generator=generator)
    vocab = TokenVocab(tokenizer, backbone.vocab_size, backbone.mask_id)
    return [vocab.decode(row) for row in tokens[:, len(ids):].tolist()]
