"""Training a CoDD layer on top of a (frozen or jointly trained) backbone, on the exact objective of
:mod:`.objective`, with the shared loop (:mod:`.loop`), cached backbone outputs (:mod:`.cache`),
resumable checkpoints (:mod:`.resume`) and DDP under torchrun (:mod:`.distributed`: the global batch
is shared out so that the result equals the single-process run)."""
from __future__ import annotations

import warnings

import torch

import structures

from ..backbones.protocol import Backbone
from ..codd.layer import CoDDLayer
from ..data import ItemData
from .backbone import check_data_fits
from .cache import BackboneCache
from .config import LayerTrainingConfig, make_config
from .distributed import World, launched, world as current_world
from .loop import Monitor, run_steps
from .noise import backbone_outputs, elbo_draw, noise_fill
from .objective import check_compatible, codd_objective, heldout_objective
from .resume import TrainingCheckpoints

__all__ = ["train_codd_layer"]

#: Rows per mini-batch EM step of the warm start (see _em_warm_start).
EM_INIT_BATCH = 1024

#: Rank r > 0 seeds its dropout stream with seed + r · this (rank 0's is the single-process stream).
RANK_SEED_STRIDE = 7919


def train_codd_layer(layer: CoDDLayer, backbone: Backbone, data: ItemData, config: LayerTrainingConfig | None = None,
                     **settings) -> dict:
    """Adam on the CoDD diffusion objective for ``config.steps`` steps (a
    :class:`~pcdiff.train.config.LayerTrainingConfig`, or its fields as keywords). Seeded and
    deterministic.

    In a process group (torchrun, :func:`pcdiff.train.distributed.init`) every rank calls this
    alike: ``batch_size`` is the global batch, shared out over the ranks; the layer (and a jointly
    trained backbone) trains in DDP from rank 0's backbone; only rank 0 writes checkpoints (to
    resume, all ranks must see ``checkpoint_dir``) and shows progress.
    Returns {"steps", "seconds", "train_loss", "heldout", "history", "world_size"} on every rank.
    """
    config = make_config(LayerTrainingConfig, config, settings)
    check_data_fits(data, backbone)
    check_compatible(layer, backbone, data.block_length)
    world = current_world()
    if world.size == 1 and launched():
        warnings.warn("WORLD_SIZE > 1 but no process group is running: this process trains alone "
                      "(call pcdiff.train.distributed.init() first to train together)", stacklevel=2)
    seed, train = config.seed, data.encode_train()
    heldout = data.encode_heldout()[:config.eval_items]
    optimizer = _optimizer(layer, backbone, config)
    data_gen = torch.Generator().manual_seed(seed)
    world.share(backbone)                 # ranks may have trained their backbones apart: use rank 0's
    weights = torch.tensor(data.train_weights, dtype=torch.float64) if data.train_weights is not None else None
    cache = BackboneCache(backbone.eval(), train, config.cache_maskings, layer.needs_hidden,
                          torch.Generator().manual_seed(seed + 1), config.cache_dtype, world, config.elbo_draw,
                          read=_entries_read(weights, len(train), config, data_gen)) if config.cached else None
    # dropout's RNG for joint training: one stream per rank, so ranks do not drop the same units
    torch_rng = torch.Generator().manual_seed(seed + RANK_SEED_STRIDE * world.rank).get_state()
    checkpoints = None if config.checkpoint_dir is None else TrainingCheckpoints(
        config.checkpoint_dir, world, layer, None if config.freeze_backbone else backbone, optimizer, data_gen,
        config.run_settings(len(train)))
    resumed = checkpoints.resume() if config.resume else None
    start = 0 if resumed is None else resumed.step
    if resumed is None and config.em_init_epochs:
        _em_warm_start(layer, data, train, config)
    if resumed is not None and resumed.torch_rng is not None:
        torch_rng = resumed.torch_rng

    def evaluate() -> dict:
        return {"heldout": heldout_objective(layer, backbone, heldout, seed=seed + 2, world=world)
                if len(heldout) else None}

    monitor = Monitor(evaluate) if resumed is None else Monitor(evaluate, resumed.history, resumed.seconds)
    step_fn = _step_function(layer, backbone, train, weights, config, world, cache, data_gen)
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(torch_rng)
        backbone.train(not config.freeze_backbone)
        final = run_steps(step_fn, optimizer, monitor, steps=config.steps, start=start, grad_clip=config.grad_clip,
                          eval_every=config.eval_every, checkpoint_every=config.every_checkpoint,
                          checkpoint=None if checkpoints is None else
                          (lambda step: checkpoints.save(step, monitor.seconds, monitor.history)),
                          describe=_heldout_field, progress=config.progress and world.is_main,
                          desc="train CoDD layer")
        backbone.eval()
    return {**final, "history": monitor.history, "world_size": world.size}


def _em_warm_start(layer: CoDDLayer, data: ItemData, train: torch.Tensor, config: LayerTrainingConfig) -> None:
    """Fit the layer's circuit alone to the training rows ``train`` (drawn by frequency when the data
    are weighted, as many draws as rows) by mini-batch EM, before any gradient step. Why: Adam from a
    random circuit learns an HMM's coupling slowly; EM finds the data's own joint in a few epochs,
    and the product then only has to learn how the backbone's evidence combines with it. The EM
    batch is large on purpose: stepwise EM (step 0.5) on batches of 128 stalls at a noisy fixed point
    (known truth, seed 0: 1.230 nats at half masked against 1.205 with batches of 1,000; truth 1.202)."""
    generator = torch.Generator().manual_seed(config.seed + 3)
    rows = data.sample_train_batch(len(train), generator) if data.train_weights is not None else train
    with torch.enable_grad():
        structures.fit(layer.circuit, rows.to(layer.circuit.device), epochs=config.em_init_epochs,
                       batch_size=EM_INIT_BATCH, method="em", seed=config.seed + 3,
                       progress=config.progress and current_world().is_main)


def _optimizer(layer: CoDDLayer, backbone: Backbone, config: LayerTrainingConfig) -> torch.optim.Optimizer:
    groups = [{"params": list(layer.circuit.parameters())},
              {"params": list(layer.adapter.parameters()),
               "lr": config.lr / 10 if config.adapter_lr is None else config.adapter_lr}]
    if not config.freeze_backbone:
        groups.append({"params": list(backbone.parameters()),
                       "lr": config.lr if config.backbone_lr is None else config.backbone_lr})
    return torch.optim.Adam(groups, lr=config.lr)


def _draw_rows(weights: torch.Tensor | None, items: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A global batch of training rows: by the items' weights where the data have them, else uniform."""
    return torch.multinomial(weights, batch_size, replacement=True, generator=generator) \
        if weights is not None else torch.randint(items, (batch_size,), generator=generator)


def _draw_entries(rows: torch.Tensor, maskings: int, generator: torch.Generator) -> torch.Tensor:
    """The cache entries of ``rows``: each row's masking, one of its ``maskings`` at random."""
    return rows * maskings + torch.randint(maskings, (len(rows),), generator=generator)


def _entries_read(weights: torch.Tensor | None, items: int, config: LayerTrainingConfig,
                  data_gen: torch.Generator) -> torch.Tensor:
    """[items · maskings] bool: the cache entries the run's ``config.steps`` steps will read, found by
    replaying their draws on a copy of ``data_gen`` as it is before step 0 (a cached step draws from
    nothing else). Why: a run of steps × batch draws over items × maskings entries leaves many unread
    (e^-1.25, 29%, for the demo's), and the cache need not compute them. Always from step 0, so a
    resumed run computes the same entries together as a straight one."""
    generator = torch.Generator()
    generator.set_state(data_gen.get_state())
    read = torch.zeros(items * config.cache_maskings, dtype=torch.bool)
    for _ in range(config.steps):
        rows = _draw_rows(weights, items, config.batch_size, generator)
        read[_draw_entries(rows, config.cache_maskings, generator)] = True
    return read


def _step_function(layer, backbone, train, weights: torch.Tensor | None, config: LayerTrainingConfig, world: World,
                   cache: BackboneCache | None, data_gen: torch.Generator):
    """The loop's ``step_fn``: this rank's part of a global batch → (loss to differentiate, the whole
    batch's loss)."""
    device = layer.circuit.device
    batch_size = config.batch_size
    tokens = batch_size * train.shape[1]                            # the global batch normalizes every part
    # wrapped once (DDP copies rank 0's parameters when built); called for the gradient sync
    layer_module = world.wrap(layer)
    backbone_module = world.wrap(backbone) if not config.freeze_backbone else backbone

    def step_fn(step: int) -> tuple[torch.Tensor, float]:
        # the global batch, drawn alike on every rank; then this rank's part of it
        rows = _draw_rows(weights, len(train), batch_size, data_gen)
        logits = hidden = fill = None
        if cache is not None:
            entries = _draw_entries(rows, config.cache_maskings, data_gen)
            mine = world.owns(entries)
            x0 = train[rows[mine]].to(device)
            if len(x0):
                t, masked, logits, hidden = cache.get(entries[mine], backbone.device)
        else:
            t, masked = elbo_draw(train[rows], data_gen, config.elbo_draw)
            fill = noise_fill(backbone, masked.shape, data_gen)      # the whole batch's noise, alike on every rank
            part = world.split(batch_size)
            x0, t, masked, fill = train[rows[part]].to(device), t[part], masked[part], fill[part]
        weight = 1.0
        if not len(x0):   # nothing of this batch is ours: a zero-weight stand-in keeps DDP's collectives in step
            x0, weight = train[rows[:1]].to(device), 0.0
            t, masked = torch.ones(1), torch.ones_like(x0, dtype=torch.bool)
            # its noise: any tokens (weight 0), drawn from no generator so the ranks' streams stay alike
            fill = x0 if getattr(backbone, "noise", "mask") == "uniform" else None
        if logits is None:
            logits, hidden = backbone_outputs(backbone, x0.to(backbone.device), masked.to(backbone.device),
                                              not config.freeze_backbone, module=backbone_module,
                                              generator=data_gen, fill=fill)
        part_loss, _ = codd_objective(layer, logits.to(device), hidden, x0, masked.to(device), t.to(device),
                                      tokens=tokens, module=layer_module)
        part_loss = part_loss * weight
        loss = float(world.sum(part_loss.detach()))                 # the whole batch's loss, on every rank
        return part_loss * world.size, loss                         # DDP averages: the sum of the parts
    return step_fn


def _heldout_field(record: dict) -> dict:
    return {} if record["heldout"] is None else {"heldout": f"{record['heldout']['codd']:.4f}"}
