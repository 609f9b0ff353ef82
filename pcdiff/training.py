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
"""
from __future__ import annotations

import pathlib
import time

import torch
from tqdm.auto import tqdm

from .backbones.protocol import Backbone
from .backbones.training import _mask_noise
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_layer_state, save_checkpoint
from .data import ItemData
from .layer import CoDDLayer

__all__ = ["train_codd_layer", "evaluate_nll", "heldout_objective", "check_compatible"]

KEEP_CHECKPOINTS = 2


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


def _forward(backbone: Backbone, x0, masked, need_grad: bool):
    xt = torch.where(masked, torch.full_like(x0, backbone.mask_id), x0)
    with torch.set_grad_enabled(need_grad):
        out = backbone(xt)
    return out.logits, out.hidden


class _BackboneCache:
    """Fixed maskings [N, K] per training item and the frozen backbone's outputs, filled on first use."""

    def __init__(self, backbone, train: torch.Tensor, maskings: int, keep_hidden: bool, generator, dtype):
        n, length = train.shape
        t, mask = _mask_noise(train.repeat_interleave(maskings, 0), generator)
        self.t, self.mask = t.view(n, maskings), mask.view(n, maskings, length)
        self.train, self.backbone, self.maskings = train, backbone, maskings
        self.logits = torch.zeros(n, maskings, length, backbone.vocab_size, dtype=dtype)   # lazily written pages
        self.hidden = torch.zeros(n, maskings, length, backbone.hidden_size, dtype=dtype) if keep_hidden else None
        self.filled = torch.zeros(n, maskings, dtype=torch.bool)

    def get(self, rows: torch.Tensor, which: torch.Tensor, device):
        todo = torch.unique(rows * self.maskings + which)
        todo = todo[~self.filled.view(-1)[todo]]
        if len(todo):
            r, k = todo // self.maskings, todo % self.maskings
            logits, hidden = _forward(self.backbone, self.train[r].to(device), self.mask[r, k].to(device), False)
            self.logits[r, k] = logits.to(self.logits.dtype).cpu()
            if self.hidden is not None:
                self.hidden[r, k] = hidden.to(self.hidden.dtype).cpu()
            self.filled[r, k] = True
        hidden = self.hidden[rows, which].to(device).float() if self.hidden is not None else None
        return self.t[rows, which].to(device), self.mask[rows, which].to(device), \
            self.logits[rows, which].to(device).float(), hidden


def _objective(layer, logits, hidden, x0, masked, t) -> tuple[torch.Tensor, torch.Tensor]:
    """(CoDD loss, factorized loss): Σ_b nll_b / t_b / (B · N); the factorized one (the backbone's
    softmax at the layer's temperature, as ``CoDDBlockDistribution.factorized``) without gradient."""
    nll = layer.nll(logits, hidden if layer.needs_hidden else None, x0, masked)            # [B]
    with torch.no_grad():
        logq = torch.log_softmax(logits.float() / layer.temperature, -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        fact = -torch.where(masked, logq, torch.zeros_like(logq)).sum(-1)
    return (nll / t).sum() / x0.numel(), (fact / t).sum() / x0.numel()


@torch.no_grad()
def heldout_objective(layer: CoDDLayer, backbone: Backbone, x0: torch.Tensor, seed: int = 1234,
                      batch_size: int = 512) -> dict:
    """The training objective on ``x0`` with fixed noise: {"codd": ..., "factorized": ...} (nats per token)."""
    generator = torch.Generator().manual_seed(seed)
    was = backbone.training
    backbone.eval()
    totals = {"codd": 0.0, "factorized": 0.0}
    for start in range(0, len(x0), batch_size):
        chunk = x0[start:start + batch_size].to(backbone.device)
        t, masked = _mask_noise(chunk, generator)
        logits, hidden = _forward(backbone, chunk, masked, False)
        codd, fact = _objective(layer, logits, hidden, chunk, masked, t)
        totals["codd"] += float(codd) * len(chunk)
        totals["factorized"] += float(fact) * len(chunk)
    backbone.train(was)
    return {k: v / len(x0) for k, v in totals.items()}


@torch.no_grad()
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
    was = backbone.training
    backbone.eval()
    n, length = data_tensor.shape
    count = max(1, round(masked_fraction * length))
    codd = fact = 0.0
    for start in range(0, n, batch_size):
        x0 = data_tensor[start:start + batch_size].to(backbone.device)
        chosen = torch.rand(len(x0), length, generator=generator).argsort(-1)[:, :count]
        masked = torch.zeros(len(x0), length, dtype=torch.bool).scatter_(1, chosen, True).to(x0.device)
        logits, hidden = _forward(backbone, x0, masked, False)
        ones = torch.ones(len(x0), device=x0.device)
        c, f = _objective(layer, logits, hidden, x0, masked, ones)
        codd += float(c) * x0.numel()
        fact += float(f) * x0.numel()
    backbone.train(was)
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
    Returns {"steps", "seconds", "train_loss", "heldout", "history"}.
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
    cached = freeze_backbone and cache_backbone
    cache = _BackboneCache(backbone.eval(), train, cache_maskings, layer.needs_hidden,
                           torch.Generator().manual_seed(seed + 1), cache_dtype) if cached else None
    step, elapsed_before, history, recent = 0, 0.0, [], []
    torch_rng = torch.Generator().manual_seed(seed).get_state()  # dropout's RNG for joint training

    if resume and latest_checkpoint(checkpoint_dir) is not None:
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
        torch_rng = tensors["rng.torch"]
        step, elapsed_before, history = config["step"], config["seconds"], config["history"]

    def evaluate() -> dict:
        record = {"steps": step, "seconds": elapsed_before + time.perf_counter() - start,
                  "train_loss": sum(recent) / len(recent) if recent else None,
                  "heldout": heldout_objective(layer, backbone, heldout, seed=seed + 2) if len(heldout) else None}
        history.append(record)
        return record

    def checkpoint() -> None:
        if checkpoint_dir is None:
            return
        tensors = {f"layer.{k}": v for k, v in layer.state_dict().items()}
        if not freeze_backbone:
            tensors.update({f"backbone.{k}": v for k, v in backbone.state_dict().items()})
        opt_tensors, opt_config = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
        tensors["rng.data"], tensors["rng.torch"] = data_gen.get_state(), torch.get_rng_state()
        config = {"kind": "codd-training", "layer": layer.config(), "train": run_config, "step": step,
                  "seconds": elapsed_before + time.perf_counter() - start, "history": history,
                  "optimizer": opt_config}
        directory = pathlib.Path(checkpoint_dir)
        save_checkpoint(directory / f"step-{step:09d}", tensors, config)
        for old in sorted(directory.glob("step-*.json"))[:-KEEP_CHECKPOINTS]:
            old.with_suffix(".safetensors").unlink(missing_ok=True)
            old.unlink()

    bar = tqdm(total=steps, initial=step, disable=not progress, desc="train CoDD layer", unit="step")
    start = time.perf_counter()
    every = checkpoint_every or eval_every
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(torch_rng)
        backbone.train(not freeze_backbone)
        while (steps is None or step < steps) and (seconds is None or time.perf_counter() - start < seconds):
            rows = torch.multinomial(weights, batch_size, replacement=True, generator=data_gen) \
                if weights is not None else torch.randint(len(train), (batch_size,), generator=data_gen)
            x0 = train[rows].to(device)
            if cache is not None:
                which = torch.randint(cache_maskings, (batch_size,), generator=data_gen)
                t, masked, logits, hidden = cache.get(rows, which, backbone.device)
            else:
                t, masked = _mask_noise(x0, data_gen)
                logits, hidden = _forward(backbone, x0, masked, not freeze_backbone)
            loss, _ = _objective(layer, logits.to(device), hidden, x0, masked.to(device), t.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"CoDD training loss became {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], grad_clip)
            optimizer.step()
            step += 1
            recent = (recent + [loss.item()])[-50:]
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
    return {**final, "history": history}


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
