"""Controls beside every likelihood figure of the demo: what a reader needs to tell a factorization
gap closed by the circuit from an undertrained backbone repaired by it (issue 13).

For each of two item sets and each masked count (exactly one masked token, then the headline's
fractions), every score is in absolute nats per masked token, mean ± 95% CI over items (per-item
standard error), each item's value averaged over ``mask_draws`` draws of exactly that many masked
positions (fixed counts: a low-variance estimate):

* the item sets: ``in_distribution``, occurrences drawn from the training distribution (word types
  seen in training, by frequency where the data is weighted), and ``unseen_types``, held-out items
  whose type never occurs in training;
* ``one_step``, ``codd``, and ``sequential:<order>``: left-to-right, and ``random_orders`` random
  orders drawn afresh for every mask draw (so ``mask_draws · random_orders`` random orders in all);
  the better (lower mean) of them is the floor (``sequential_best``);
* ``codd_gain`` (one-step − CoDD, paired per item): at one masked token one-step and sequential are
  the same prediction, so there is no factorization gap and a converged backbone leaves CoDD nothing
  to gain there (≈ 0);
* two circuits without any backbone: ``hmm_em``, an HMM with the layer's number of latent states
  fit by mini-batch EM, and ``circuit_alone``, the layer's own circuit (same structure and
  initialization) fit alone by Adam, both scored exactly as log C(x) − log C(x_O). CoDD's circuit
  should beat neither alone by being a better model of the data, only by coupling the backbone;
  if either beats sequential decoding, the backbone is the weak part;
* ``training_distribution`` (in-distribution items only): −log p_D(x_M | x_O) under the very
  distribution those items are drawn from, exact by enumeration of the training items
  (:class:`pcdiff.data.EmpiricalDistribution`): its mean is the true conditional entropy, the floor
  of every model on that set. ``backbone_excess`` (one-step − it, paired) is how far the backbone is
  from the data where it is scored; at one masked token that is all CoDD can repair. A model that
  generalizes to unseen types sits above this floor by design (it memorizes the training items).
  ``training_distribution_one_step`` scores each masked token by its exact marginal under that
  distribution: the best any factorized prediction can do, so ``data_factorization_gap`` (it − the
  floor) is the data's own factorization gap, the part of one-step's excess that coupling can close.
  Both are left out where the training table has more than ``exact_floor_limit`` rows × positions.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

import structures

from ..arguments import check_int, check_number
from ..codd import CoDDLayer
from ..data import ItemData
from .scoring import backbone_scores, circuit_scores, fixed_masks, left_to_right, marginal_scores, mean_ci

__all__ = ["ControlSettings", "control_table", "item_sets", "standalone_circuits"]

ONE_TOKEN = "1 token"


@dataclass(frozen=True)
class ControlSettings:
    """Sizes of the controls (the defaults fit the demo's time budget; see docs/results.md)."""
    items: int = 150                       # per item set
    mask_draws: int = 2                    # masks drawn per item and masked count, averaged
    random_orders: int = 1                 # random reveal orders per mask draw, besides left-to-right
    fractions: tuple = (0.25, 0.5, 0.75, 1.0)
    fit_items: int | None = None           # training occurrences the circuits alone are fit on (40 × items)
    fit_epochs: int = 3
    fit_batch_size: int = 256
    adam_lr: float = 0.05
    seed: int = 0
    batch_size: int = 512
    circuits_alone: bool = True            # False: no EM-fit HMM nor circuit fit alone (the slowest controls)
    # the exact floor enumerates the training table for every item: left out above this many rows × positions
    exact_floor_limit: int = 4_000_000

    def __post_init__(self):
        for name in ("items", "mask_draws", "fit_batch_size", "batch_size", "exact_floor_limit"):
            check_int(name, getattr(self, name), 1)
        check_int("fit_items", self.fit_items, 1, optional=True)
        if self.fit_items is None:
            object.__setattr__(self, "fit_items", 40 * self.items)
        check_int("random_orders", self.random_orders, 0)
        check_int("fit_epochs", self.fit_epochs, 0)
        check_int("seed", self.seed, 0)
        check_number("adam_lr", self.adam_lr)
        if not isinstance(self.circuits_alone, bool):
            raise ValueError(f"circuits_alone must be a bool, got {self.circuits_alone!r}")
        if not self.fractions or not all(0.0 < float(f) <= 1.0 for f in self.fractions):
            raise ValueError(f"fractions must be non-empty, each in (0, 1], got {self.fractions!r}")


def item_sets(data: ItemData, items: int, seed: int) -> dict[str, torch.Tensor]:
    """``{"in_distribution", "unseen_types"}`` → ``[n, L]`` items (seeded draws; at most ``items`` each)."""
    generator = torch.Generator().manual_seed(seed)
    seen = data.sample_train_batch(items, generator)
    heldout = data.encode_heldout()
    unseen = heldout[torch.randperm(len(heldout), generator=generator)[:items]]
    return {"in_distribution": seen, "unseen_types": unseen}


def standalone_circuits(layer: CoDDLayer, data: ItemData, num_states: int, settings: ControlSettings,
                        progress: bool = True) -> tuple[dict, dict]:
    """(``{"hmm_em", "circuit_alone"}`` → fitted compiled circuits, a summary of each fit). Both are
    fit on ``fit_items`` occurrences drawn from the training distribution; ``circuit_alone`` is
    left out when the layer has no recipe to rebuild its circuit from; neither with
    ``settings.circuits_alone`` False."""
    if not settings.circuits_alone:
        return {}, {}
    device = layer.circuit.device
    occurrences = data.sample_train_batch(settings.fit_items, torch.Generator().manual_seed(settings.seed + 1))
    built = {"hmm_em": (structures.compile(structures.hmm(data.block_length, num_states, data.vocab.size,
                                                          seed=settings.seed), device=device), "em")}
    if layer.recipe is not None:
        built["circuit_alone"] = (CoDDLayer.from_config(layer.config(), device=device).circuit, "adam")
    circuits, summary = {}, {}
    for name, (circuit, method) in built.items():
        with torch.enable_grad():                              # the demo evaluates under no_grad
            history = structures.fit(circuit, occurrences.to(device), epochs=settings.fit_epochs,
                                     batch_size=settings.fit_batch_size, method=method, lr=settings.adam_lr,
                                     seed=settings.seed, progress=progress)
        circuit.eval().requires_grad_(False)
        circuits[name] = circuit
        summary[name] = {"method": method, "parameters": sum(p.numel() for p in circuit.parameters()),
                         "train_nll_per_token": -history[-1] if history else None}
    return circuits, summary


def _mask_counts(length: int, fractions) -> dict[str, int]:
    """Row label → masked positions per item: exactly one, then each fraction of the block."""
    return {ONE_TOKEN: 1, **{str(f): max(1, min(length, round(float(f) * length))) for f in fractions}}


def _per_token_scores(backbone, layer, circuits: dict, x0: torch.Tensor, count: int, settings: ControlSettings,
                      generator: torch.Generator, truth=None) -> dict[str, torch.Tensor]:
    """Method → ``[N]`` NLL per masked token of each item, averaged over the mask draws (``truth``: the
    distribution the items are drawn from, scored jointly and one-step)."""
    total: dict[str, torch.Tensor] = {}
    for _ in range(settings.mask_draws):
        masked = fixed_masks(x0, count, generator).to(x0.device)
        orders = {"left_to_right": left_to_right(x0).to(x0.device)}
        for k in range(settings.random_orders):           # fresh random orders for every mask draw
            name = "random" if settings.random_orders == 1 else f"random_{k + 1}"
            orders[name] = torch.rand(x0.shape, generator=generator).to(x0.device)
        scores = backbone_scores(backbone, layer, x0, masked, orders, settings.batch_size, generator)
        scores.update({name: circuit_scores(c, x0, masked) for name, c in circuits.items()})
        if truth is not None:
            scores["training_distribution"] = circuit_scores(truth, x0, masked)
            scores["training_distribution_one_step"] = marginal_scores(truth, x0, masked)
        for name, value in scores.items():
            total[name] = total.get(name, 0.0) + value.double().cpu() / (count * settings.mask_draws)
    return total


def _row(scores: dict[str, torch.Tensor]) -> dict:
    """One table row: every method's mean ± CI, the sequential floor, CoDD's paired gains, gap closed."""
    row = {name: mean_ci(values) for name, values in scores.items()}
    orders = [name for name in scores if name.startswith("sequential:")]
    best = min(orders, key=lambda name: row[name]["mean"])
    row["sequential_best"] = {**row[best], "order": best.removeprefix("sequential:")}
    if "training_distribution" in scores:
        row["backbone_excess"] = mean_ci(scores["one_step"] - scores["training_distribution"])
        row["data_factorization_gap"] = mean_ci(scores["training_distribution_one_step"]
                                                - scores["training_distribution"])
    if "codd" in scores:
        row["codd_gain"] = mean_ci(scores["one_step"] - scores["codd"])
        row["codd_minus_floor"] = mean_ci(scores["codd"] - scores[best])
        row["factorization_gap"] = mean_ci(scores["one_step"] - scores[best])
        gap = row["one_step"]["mean"] - row[best]["mean"]
        row["gap_closed"] = (row["codd_gain"]["mean"] / gap) if abs(gap) > 1e-9 else None
    return row


def control_table(backbone, layer: CoDDLayer, data: ItemData, num_states: int,
                  settings: ControlSettings | None = None, progress: bool = True) -> dict:
    """Every control, as the JSON-able ``results["controls"]`` (see the module docstring)."""
    settings = settings or ControlSettings()
    started, cpu_started = time.perf_counter(), time.process_time()
    backbone.eval()
    circuits, fits = standalone_circuits(layer, data, num_states, settings, progress)
    fitted = time.perf_counter()
    sets = {name: x.to(backbone.device) for name, x in item_sets(data, settings.items, settings.seed).items()}
    counts = _mask_counts(data.block_length, settings.fractions)
    jobs = [(name, label) for name in sets for label in counts if len(sets[name])]
    table: dict[str, dict] = {name: {"items": len(x), "rows": {}} for name, x in sets.items()}
    table_size = data.encode_train().numel()
    truths = {"in_distribution": data.train_distribution()} if table_size <= settings.exact_floor_limit else {}
    for name, label in tqdm(jobs, total=len(jobs), desc="controls", disable=not progress):
        # one generator per (set, count): a row's masks do not depend on which rows ran before it
        generator = torch.Generator().manual_seed(settings.seed + 7919 * (list(counts).index(label) + 1))
        scores = _per_token_scores(backbone, layer, circuits, sets[name], counts[label], settings, generator,
                                   truths.get(name))
        table[name]["rows"][label] = {"masked": counts[label], **_row(scores)}
    return {"settings": {**asdict(settings), "fractions": [str(f) for f in settings.fractions]},
            "standalone": fits, "sets": table,
            "codd_gain_one_token": {name: t["rows"][ONE_TOKEN]["codd_gain"]
                                    for name, t in table.items() if ONE_TOKEN in t["rows"]},
            "seconds": time.perf_counter() - started, "seconds_fitting": fitted - started,
            "cpu_seconds": time.process_time() - cpu_started}
