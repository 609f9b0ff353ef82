"""Training a backbone until its held-out likelihood stops moving, for a checkpoint worth shipping.

A CoDD layer is meant to close the *factorization* gap of a backbone whose per-position
conditionals are already right. With one masked token there is no factorization gap, so the exact
held-out NLL at one masked token measures the conditionals alone: training is long enough when that
number has stopped moving. It is computed without sampling (every position of every evaluation item
masked in turn, the others given), so two evaluations differ only because the model changed.

The run is still bounded by steps (the schedule follows steps; same seed, same model); the plateau
is checked afterwards, on the recorded history: the relative change of the one-token NLL over the
last fifth of training, which should be under ``PLATEAU_TOLERANCE``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbones.protocol import Backbone
from ..data import ItemData
from .backbone import check_data_fits, diffusion_loss_for, train_model
from .config import BackboneTrainingConfig, make_config
from .noise import corrupt

__all__ = ["PLATEAU_TOLERANCE", "one_token_nll", "plateau_change", "train_to_plateau"]

#: Largest relative change of the one-token NLL over the last fifth of training called a plateau.
PLATEAU_TOLERANCE = 0.01


@torch.no_grad()
def one_token_nll(backbone: Backbone, x0: torch.Tensor, batch_size: int = 2048) -> float:
    """Mean over rows and positions of −log p_θ(x_i | x_{−i}): each position of each row of ``x0``
    ``[N, L]`` corrupted alone (the mask id, or for a uniform-noise backbone one token drawn with a
    fixed seed), the rest clean. In nats per token."""
    if x0.dim() != 2 or len(x0) == 0:
        raise ValueError(f"x0 must be a non-empty [rows, length] tensor, got shape {tuple(x0.shape)}")
    n, length = x0.shape
    rows = x0.repeat_interleave(length, dim=0)                               # [N·L, L]: row r, position r mod L
    alone = torch.eye(length, dtype=torch.bool).repeat(n, 1)                 # [N·L, L]: the one corrupted position
    generator = torch.Generator().manual_seed(0)
    was_training = backbone.training
    backbone.eval()
    total = 0.0
    for start in range(0, len(rows), batch_size):
        x, m = rows[start:start + batch_size].to(backbone.device), alone[start:start + batch_size].to(backbone.device)
        logits = backbone(corrupt(x, m, backbone, generator)).logits[m]      # [b, V]: the corrupted position's
        total += F.cross_entropy(logits.float(), x[m], reduction="sum").item()
    backbone.train(was_training)
    return total / len(rows)


def plateau_change(history: list[dict], field: str) -> float:
    """|value at the end − value at the record nearest 80% of training| / value at the end."""
    records = [r for r in history if r.get(field) is not None]
    if len(records) < 2:
        raise ValueError(f"the history needs two records of {field!r} to measure a plateau, got {len(records)}")
    end = records[-1]
    mark = min(records[:-1], key=lambda r: abs(r["steps"] - 0.8 * end["steps"]))
    return abs(end[field] - mark[field]) / abs(end[field])


def train_to_plateau(backbone: Backbone, data: ItemData, config: BackboneTrainingConfig | None = None,
                     eval_items: int = 500, **settings) -> dict:
    """:func:`~pcdiff.train.backbone.train_backbone`'s run, recording at each evaluation the exact
    one-token NLL of ``eval_items`` held-out rows (``heldout_1tok``) and of as many training-distribution
    rows drawn once with a fixed seed (``train_1tok``), besides the sampled diffusion loss. Returns the
    trainer's summary plus ``plateau``: the relative change of each over the last fifth of training."""
    config = make_config(BackboneTrainingConfig, config, settings)
    check_data_fits(data, backbone)
    seen = data.sample_train_batch(eval_items, torch.Generator().manual_seed(config.seed + 2))

    def evaluate(heldout: torch.Tensor) -> dict:
        return {"heldout_1tok": one_token_nll(backbone, heldout[:eval_items]),
                "train_1tok": one_token_nll(backbone, seen)}

    summary = train_model(backbone, data, config, diffusion_loss_for(config), evaluate, "train backbone")
    fields = [f for f in ("heldout_1tok", "train_1tok") if summary.get(f) is not None]
    summary["plateau"] = {f: plateau_change(summary["history"], f) for f in fields}
    return summary
