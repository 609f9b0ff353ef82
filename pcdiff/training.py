"""Training a CoDD layer on top of a (frozen or jointly trained) backbone, and measuring it.

The objective is the masked diffusion ELBO with p̂ in place of the factorized output: per
sequence t ~ U(0, 1), each position masked with probability t (at least one), loss
−log p̂(x0's masked tokens | x_t) / t, summed over the batch and divided by its number of tokens
(the backbone's normalization, so the two losses are comparable).

With a frozen backbone its outputs can be cached. Random masks make one forward per item
useless, so the cache holds ``cache_maskings`` fixed random maskings per training item (the
paper precomputes the logits once); each step picks one of them at random. Entries are computed
on first use, so the cost is min(items × maskings, steps × batch) backbone rows, and the memory
is items × maskings × L × (V [+ D when the adapter reads hidden states]) values of ``cache_dtype``.

Under torchrun the same function trains with DDP; :mod:`pcdiff.distributed` says how the global
batch is shared so that the result equals the single-process run.
"""
from __future__ import annotations

import math
import pathlib
import time
import warnings

import torch
from tqdm.auto import tqdm

from .backbones.protocol import Backbone
from .backbones.training import _mask_noise
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_layer_state, save_checkpoint
from .data import ItemData
from .distributed import World, launched, world as current_world
from .layer import CoDDLayer

__all__ = ["train_codd_layer", "evaluate_nll", "heldout_objective", "check_compatible"]

KEEP_CHECKPOINTS = 2
#: Rank r > 0 seeds its dropout stream with seed + r · this (rank 0's is the single-process stream).
RANK_SEED_STRIDE = 7919
#: Cached backbone outputs are computed in fixed chunks of this many entries (see ``_BackboneCache.get``).
CACHE_CHUNK = 64


def check_compatible(layer: CoDDLayer, backbone: Backbone, length: int | None = None) -> None:
    if layer.vocab_size != backbone.vocab_size:
        raise ValueError(f"vocabulary mismatch: the circuit has V = {layer.vocab_size}, the backbone "
                         f"V = {backbone.vocab_size}")
    if layer.mask_id is not None and layer.mask_id != backbone.mask_id:
        raise ValueError(f"the layer's mask_id {layer.mask_id} differs from the backbone's {backbone.mask_id}")
    if layer.needs_hidden and layer.hidden_size != backbone.hidden_size:
        raise ValueError(f"the adapter expects hidden size {layer.hidden_size}, "
                         f"the backbone has {backbone.hidden_size}")
    if length is not None and length % layer.block_length:
        raise ValueError(f"sequence length {length} is not a multiple of the layer's block length {layer.block_length}")


def _forward(backbone: Backbone, x0, masked, need_grad: bool, module=None):
    """Backbone outputs for x0 with ``masked`` positions masked; ``module``: the backbone in DDP."""
    xt = torch.where(masked, torch.full_like(x0, backbone.mask_id), x0)
    with torch.set_grad_enabled(need_grad):
        out = (module or backbone)(xt)
    return out.logits, out.hidden


class _BackboneCache:
    """Fixed maskings of every training item and the frozen backbone's outputs, filled on first use.

    Entry e = item · K + k is the item's k-th of K maskings. Every rank draws the maskings of all
    entries from the same generator (the single-process stream) and keeps those it owns
    (``world.owns``), at local index e // world.size: the cache is sharded over the ranks.
    """

    def __init__(self, backbone, train: torch.Tensor, maskings: int, keep_hidden: bool, generator, dtype,
                 world: World):
        n, length = train.shape
        t, mask = _mask_noise(train.new_empty(n * maskings, length), generator)    # only the shape is read
        mine = slice(world.rank, None, world.size)
        self.t, self.mask = t[mine].clone(), mask[mine].clone()                       # [E_local], [E_local, L]
        self.train, self.backbone, self.maskings, self.world = train, backbone, maskings, world
        size = len(self.t)
        self.logits = torch.zeros(size, length, backbone.vocab_size, dtype=dtype)   # lazily written pages
        self.hidden = torch.zeros(size, length, backbone.hidden_size, dtype=dtype) if keep_hidden else None
        self.filled = torch.zeros(size, dtype=torch.bool)

    def get(self, entries: torch.Tensor, device):
        """(t, mask, logits, hidden) of owned ``entries`` [B'] (global entry numbers)."""
        local = entries // self.world.size
        # Whole fixed chunks of entries are computed together: a backbone's bits depend on the batch
        # it ran in (BLAS blocks rows by batch size), so an entry must not depend on which entries
        # happened to be asked for first (a resumed run asks in another order).
        chunks = torch.unique(local // CACHE_CHUNK)
        todo = (chunks.unsqueeze(-1) * CACHE_CHUNK + torch.arange(CACHE_CHUNK)).flatten()
        todo = todo[todo < len(self.filled)]
        todo = todo[~self.filled[todo]]
        if len(todo):
            items = (todo * self.world.size + self.world.rank) // self.maskings
            logits, hidden = _forward(self.backbone, self.train[items].to(device), self.mask[todo].to(device), False)
            self.logits[todo] = logits.to(self.logits.dtype).cpu()
            if self.hidden is not None:
                self.hidden[todo] = hidden.to(self.hidden.dtype).cpu()
            self.filled[todo] = True
        hidden = self.hidden[local].to(device).float() if self.hidden is not None else None
        return self.t[local].to(device), self.mask[local].to(device), self.logits[local].to(device).float(), hidden


def _objective(layer, logits, hidden, x0, masked, t, tokens: int | None = None,
               module=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(CoDD loss, factorized loss): Σ_b nll_b / t_b / tokens (default B · N); the factorized one (the
    backbone's softmax at the layer's temperature, as ``CoDDBlockDistribution.factorized``) without
    gradient. ``module``: the layer in DDP (its forward is the NLL)."""
    tokens = x0.numel() if tokens is None else tokens
    nll = (module or layer)(logits, hidden if layer.needs_hidden else None, x0, masked)   # [B]
    with torch.no_grad():
        logq = torch.log_softmax(logits.float() / layer.temperature, -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        fact = -torch.where(masked, logq, torch.zeros_like(logq)).sum(-1)
    return (nll / t).sum() / tokens, (fact / t).sum() / tokens


@torch.no_grad()
def _objective_sums(layer, backbone, x0: torch.Tensor, noise, batch_size: int, world: World) -> list[float]:
    """[Σ CoDD, Σ factorized] of nll_b / t_b over the rows of x0. Chunk by chunk, ``noise(chunk)`` draws
    (t, masked) for the whole chunk on every rank (one process's stream); each rank scores its part
    of the chunk and the sums are reduced over the ranks."""
    was = backbone.training
    backbone.eval()
    sums = torch.zeros(2, dtype=torch.float64)
    for start in range(0, len(x0), batch_size):
        chunk = x0[start:start + batch_size]
        t, masked = noise(chunk)
        part = world.split(len(chunk))
        if part.stop > part.start:
            rows, masked, t = (v[part].to(backbone.device) for v in (chunk, masked, t))
            logits, hidden = _forward(backbone, rows, masked, False)
            sums += torch.stack(_objective(layer, logits, hidden, rows, masked, t, tokens=1)).double().cpu()
    backbone.train(was)
    return world.sum(sums).tolist()


def heldout_objective(layer: CoDDLayer, backbone: Backbone, x0: torch.Tensor, seed: int = 1234,
                      batch_size: int = 512, world: World | None = None) -> dict:
    """The training objective on ``x0`` with fixed noise: {"codd": ..., "factorized": ...} (nats per token).
    With a ``world`` of several ranks, all call it and all get the single-process value."""
    generator = torch.Generator().manual_seed(seed)
    codd, fact = _objective_sums(layer, backbone, x0, lambda chunk: _mask_noise(chunk, generator), batch_size,
                                 world or World())
    return {"codd": codd / max(x0.numel(), 1), "factorized": fact / max(x0.numel(), 1)}


def evaluate_nll(layer: CoDDLayer, backbone: Backbone, data_tensor: torch.Tensor, masked_fraction: float,
                 seed: int = 0, batch_size: int = 512) -> dict:
    """Per-masked-token NLL (nats) of CoDD and of the factorized backbone when exactly
    max(1, round(f · N)) positions of each row, chosen uniformly (seeded), are masked."""
    if not 0.0 < masked_fraction <= 1.0:
        raise ValueError(f"masked_fraction must be in (0, 1], got {masked_fraction}")
    if data_tensor.dim() != 2 or len(data_tensor) == 0:
        raise ValueError(f"data_tensor must be a non-empty [N, L] tensor, got {tuple(data_tensor.shape)}")
    check_compatible(layer, backbone, data_tensor.shape[1])
    generator = torch.Generator().manual_seed(seed)
    n, length = data_tensor.shape
    count = max(1, round(masked_fraction * length))

    def noise(chunk):                                          # t = 1: plain NLL of the masked tokens
        chosen = torch.rand(len(chunk), length, generator=generator).argsort(-1)[:, :count]
        return torch.ones(len(chunk)), torch.zeros(len(chunk), length, dtype=torch.bool).scatter_(1, chosen, True)

    codd, fact = _objective_sums(layer, backbone, data_tensor, noise, batch_size, World())
    tokens = n * count
    return {"codd": codd / tokens, "factorized": fact / tokens, "masked_fraction": masked_fraction,
            "masked_per_row": count, "num_masked_tokens": tokens}


def _train_config(**kw) -> dict:
    return {k: (str(v).removeprefix("torch.") if isinstance(v, torch.dtype) else v) for k, v in kw.items()}


def train_codd_layer(layer: CoDDLayer, backbone: Backbone, data: ItemData, steps: int | None = None,
                     seconds: float | None = None, batch_size: int = 128, lr: float = 1e-2, seed: int = 0,
                     freeze_backbone: bool = True, cache_backbone: bool = True, cache_maskings: int = 4,
                     cache_dtype: torch.dtype = torch.float32, eval_every: int | None = 200,
                     eval_items: int = 2000, checkpoint_dir=None, checkpoint_every: int | None = None,
                     resume: bool = False, progress: bool = True, adapter_lr: float | None = None,
                     backbone_lr: float | None = None,
                     grad_clip: float = 1.0) -> dict:
    """Adam on the CoDD diffusion objective until ``steps`` (total, counting resumed ones) or
    ``seconds`` (this call) runs out.

    Seeded and deterministic for a step budget. ``freeze_backbone`` (default) trains only the
    layer: the circuit at ``lr``, the adapter at ``adapter_lr`` (default ``lr / 10``: its outputs
    sum over the backbone's hidden units, so the same step moves them further); otherwise the
    backbone trains jointly at ``backbone_lr`` (default ``lr``) and is not cached. Held-out
    evaluation (``heldout_objective`` on the first ``eval_items`` held-out rows, for CoDD and the
    factorized backbone) runs every ``eval_every`` steps and at the end; checkpoints go
    to ``checkpoint_dir`` every ``checkpoint_every`` (default ``eval_every``) steps and at the end;
    ``resume`` continues the newest one there (same step counter, optimizer and RNG states).

    In a process group (torchrun, :func:`pcdiff.distributed.init`) every rank calls this alike:
    ``batch_size`` is the global batch, shared out over the ranks; the layer (and a jointly trained
    backbone) trains in DDP from rank 0's backbone; all ranks stop at the same step; only rank 0
    writes checkpoints (to resume, all ranks must see ``checkpoint_dir``) and shows progress.
    Returns {"steps", "seconds", "train_loss", "heldout", "history", "world_size"} on every rank.
    """
    if steps is None and seconds is None:
        raise ValueError("give steps or seconds (or both) to bound training")
    if (steps is not None and steps < 0) or (seconds is not None and seconds <= 0):
        raise ValueError(f"steps must be >= 0 and seconds > 0, got steps={steps}, seconds={seconds}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if cache_maskings < 1:
        raise ValueError(f"cache_maskings must be >= 1, got {cache_maskings}")
    if data.vocab.size != backbone.vocab_size or data.vocab.mask_id != backbone.mask_id:
        raise ValueError(f"data vocabulary (size {data.vocab.size}, mask {data.vocab.mask_id}) does not match the "
                         f"backbone (vocab_size {backbone.vocab_size}, mask_id {backbone.mask_id})")
    check_compatible(layer, backbone, data.block_length)
    world = current_world()
    if world.size == 1 and launched():
        warnings.warn("WORLD_SIZE > 1 but no process group is running: this process trains alone "
                      "(call pcdiff.distributed.init() first to train together)", stacklevel=2)
    device = layer.circuit.device
    train, heldout = data.encode_train(), data.encode_heldout()[:eval_items]
    weights = torch.tensor(data.train_weights, dtype=torch.float64) if data.train_weights is not None else None
    run_config = _train_config(seed=seed, batch_size=batch_size, lr=lr, freeze_backbone=freeze_backbone,
                               cache_backbone=cache_backbone, cache_maskings=cache_maskings, cache_dtype=cache_dtype,
                               adapter_lr=adapter_lr, backbone_lr=backbone_lr, grad_clip=grad_clip,
                               num_train=len(train))
    groups = [{"params": list(layer.circuit.parameters())},
              {"params": list(layer.adapter.parameters()), "lr": lr / 10 if adapter_lr is None else adapter_lr}]
    if not freeze_backbone:
        groups.append({"params": list(backbone.parameters()), "lr": lr if backbone_lr is None else backbone_lr})
    optimizer = torch.optim.Adam(groups, lr=lr)
    data_gen = torch.Generator().manual_seed(seed)
    world.share(backbone)                 # ranks may have trained their backbones apart: use rank 0's
    cached = freeze_backbone and cache_backbone
    cache = _BackboneCache(backbone.eval(), train, cache_maskings, layer.needs_hidden,
                           torch.Generator().manual_seed(seed + 1), cache_dtype, world) if cached else None
    step, elapsed_before, history, recent = 0, 0.0, [], []
    # dropout's RNG for joint training: one stream per rank, so ranks do not drop the same units
    torch_rng = torch.Generator().manual_seed(seed + RANK_SEED_STRIDE * world.rank).get_state()

    found = latest_checkpoint(checkpoint_dir) if resume else None
    if len(set(world.gather(found and found.name))) > 1:
        raise CheckpointError(f"the ranks see different checkpoints in {checkpoint_dir}: resuming needs a "
                              f"directory every rank shares")
    if found is not None:
        tensors, config = load_checkpoint(checkpoint_dir)
        if config.get("kind") != "codd-training":
            raise CheckpointError(f"{checkpoint_dir}: not a CoDD training checkpoint")
        diff = {k: (config["train"].get(k), v) for k, v in run_config.items() if config["train"].get(k) != v}
        if diff:
            raise CheckpointError(f"cannot resume: the run's settings differ from the checkpoint's "
                                  f"(checkpoint, now): {diff}")
        load_layer_state(layer, checkpoint_dir, tensors, config)
        if not freeze_backbone:
            backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in tensors.items()
                                      if k.startswith("backbone.")})
        _load_optimizer(optimizer, tensors, config["optimizer"])
        data_gen.set_state(tensors["rng.data"])
        # a checkpoint written by fewer ranks has no stream for this one: keep the fresh one
        torch_rng = tensors.get(f"rng.torch.{world.rank}" if world.rank else "rng.torch", torch_rng)
        step, elapsed_before, history = config["step"], config["seconds"], config["history"]
    # wrapped after loading (DDP copies rank 0's parameters when built); called for the gradient sync
    layer_module = world.wrap(layer)
    backbone_module = world.wrap(backbone) if not freeze_backbone else backbone

    def evaluate() -> dict:
        record = {"steps": step, "seconds": elapsed_before + time.perf_counter() - start,
                  "train_loss": sum(recent) / len(recent) if recent else None,
                  "heldout": heldout_objective(layer, backbone, heldout, seed=seed + 2, world=world)
                  if len(heldout) else None}
        history.append(record)
        return record

    def checkpoint() -> None:
        if checkpoint_dir is None:
            return
        rng_states = world.gather(torch.get_rng_state())
        if world.is_main:
            tensors = {f"layer.{k}": v for k, v in layer.state_dict().items()}
            if not freeze_backbone:
                tensors.update({f"backbone.{k}": v for k, v in backbone.state_dict().items()})
            opt_tensors, opt_config = _flatten_optimizer(optimizer)
            tensors.update(opt_tensors)
            tensors.update({f"rng.torch.{r}" if r else "rng.torch": state for r, state in enumerate(rng_states)})
            tensors["rng.data"] = data_gen.get_state()
            config = {"kind": "codd-training", "layer": layer.config(), "train": run_config, "step": step,
                      "seconds": elapsed_before + time.perf_counter() - start, "history": history,
                      "optimizer": opt_config}
            directory = pathlib.Path(checkpoint_dir)
            save_checkpoint(directory / f"step-{step:09d}", tensors, config)
            for old in sorted(directory.glob("step-*.json"))[:-KEEP_CHECKPOINTS]:
                old.with_suffix(".safetensors").unlink(missing_ok=True)
                old.unlink()
        world.barrier()

    def keep_going() -> bool:
        go = (steps is None or step < steps) and (seconds is None or time.perf_counter() - start < seconds)
        return world.agree(go) if seconds is not None else go     # clocks differ: rank 0 decides for all

    bar = tqdm(total=steps, initial=step, disable=not progress or not world.is_main, desc="train CoDD layer",
               unit="step")
    start = time.perf_counter()
    every = checkpoint_every or eval_every
    tokens = batch_size * train.shape[1]                            # the global batch normalizes every part
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(torch_rng)
        backbone.train(not freeze_backbone)
        while keep_going():
            # the global batch, drawn alike on every rank; then this rank's part of it
            rows = torch.multinomial(weights, batch_size, replacement=True, generator=data_gen) \
                if weights is not None else torch.randint(len(train), (batch_size,), generator=data_gen)
            logits = hidden = None
            if cache is not None:
                entries = rows * cache_maskings + torch.randint(cache_maskings, (batch_size,), generator=data_gen)
                mine = world.owns(entries)
                x0 = train[rows[mine]].to(device)
                if len(x0):
                    t, masked, logits, hidden = cache.get(entries[mine], backbone.device)
            else:
                t, masked = _mask_noise(train[rows], data_gen)
                part = world.split(batch_size)
                x0, t, masked = train[rows[part]].to(device), t[part], masked[part]
            weight = 1.0
            if not len(x0):   # nothing of this batch is ours: a zero-weight stand-in keeps DDP's collectives in step
                x0, weight = train[rows[:1]].to(device), 0.0
                t, masked = torch.ones(1), torch.ones_like(x0, dtype=torch.bool)
            if logits is None:
                logits, hidden = _forward(backbone, x0.to(backbone.device), masked.to(backbone.device),
                                          not freeze_backbone, module=backbone_module)
            part_loss, _ = _objective(layer, logits.to(device), hidden, x0, masked.to(device), t.to(device),
                                      tokens=tokens, module=layer_module)
            part_loss = part_loss * weight
            loss = float(world.sum(part_loss.detach()))                 # the whole batch's loss, on every rank
            if not math.isfinite(loss):
                raise FloatingPointError(f"CoDD training loss became {loss} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            (part_loss * world.size).backward()                         # DDP averages: the sum of the parts
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], grad_clip)
            optimizer.step()
            step += 1
            recent = (recent + [loss])[-50:]
            bar.update(1)
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
            if eval_every and step % eval_every == 0:
                record = evaluate()
                if record["heldout"]:
                    bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", heldout=f"{record['heldout']['codd']:.4f}")
                backbone.train(not freeze_backbone)
            if every and step % every == 0:
                checkpoint()
        bar.close()
        backbone.eval()
        final = history[-1] if history and history[-1]["steps"] == step else evaluate()
        if not every or step % every:
            checkpoint()
    return {**final, "history": history, "world_size": world.size}


def _flatten_optimizer(optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer, tensors: dict, config: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in config["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": config["param_groups"]})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"the optimizer state in the checkpoint does not match this run: {err}") from None
