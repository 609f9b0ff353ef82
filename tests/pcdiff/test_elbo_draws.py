"""The masked diffusion ELBO's two draws, against their expectations computed exactly by enumerating
every set of masked positions of a short block: the count draw (k ~ U{1..L}, weight L/k) estimates the
ELBO itself; the time draw (t ~ U(MIN_T, 1), weight 1/t) the ELBO plus what its forced mask adds (a row
with nothing masked gets one position masked, still weighed 1/t); the count draw with less variance."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pcdiff.backbones import TinyDiffusionTransformer
from pcdiff.codd import CoDDLayer
from pcdiff.train import BackboneTrainingConfig, heldout_objective, masked_diffusion_loss
from pcdiff.train.noise import MIN_T, corrupt, elbo_draw, mask_count_noise

LENGTH, VOCAB = 4, 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyDiffusionTransformer(VOCAB, VOCAB, LENGTH, dim=16, depth=1, heads=2, dropout=0.0).eval()


def exact_elbo(model, row: torch.Tensor) -> tuple[float, float]:
    """(ELBO, forced term) of one row, per token. ELBO: Σ over masked sets S of ∫(1/t) t^|S| (1-t)^(L-|S|)
    dt · Σ_{i∈S} CE, the integral being B(|S|, L-|S|+1), divided by L. Forced term: what the time draw
    adds, ∫_{MIN_T}^1 (1-t)^L / t dt (plus MIN_T times its integrand at MIN_T, the clamped draws) times
    the mean one-position CE, divided by L."""
    total, single = 0.0, 0.0
    for k in range(1, LENGTH + 1):
        for chosen in itertools.combinations(range(LENGTH), k):
            masked = torch.zeros(1, LENGTH, dtype=torch.bool)
            masked[0, list(chosen)] = True
            logits = model(corrupt(row[None], masked, model)).logits[0]
            ce = F.cross_entropy(logits, row, reduction="none")[masked[0]].sum().item()
            total += math.gamma(k) * math.gamma(LENGTH - k + 1) / math.gamma(LENGTH + 1) * ce
            single += ce / LENGTH if k == 1 else 0.0
    t = torch.logspace(math.log10(MIN_T), 0, 200_001, dtype=torch.float64)
    forced = torch.trapezoid((1 - t) ** LENGTH / t, t).item() + (1 - MIN_T) ** LENGTH
    return total / LENGTH, forced * single / LENGTH


def test_count_draw_masks_a_uniform_number_of_uniform_positions():
    x0 = torch.zeros(60_000, LENGTH, dtype=torch.long)
    t, masked = mask_count_noise(x0, torch.Generator().manual_seed(0))
    count = masked.sum(dim=1)
    assert torch.equal(t, count / LENGTH)
    share = torch.bincount(count, minlength=LENGTH + 1)[1:].float() / len(x0)
    assert torch.allclose(share, torch.full((LENGTH,), 1 / LENGTH), atol=0.01)       # sd ≈ 0.0018
    # given k, every position equally likely: P(i masked) = E[k] / L = (L + 1) / (2L)
    assert torch.allclose(masked.float().mean(0), torch.full((LENGTH,), (LENGTH + 1) / (2 * LENGTH)), atol=0.01)


@pytest.mark.parametrize("draw", ["time", "count"])
def test_both_draws_estimate_the_exact_elbo(model, draw):
    rows = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]])
    elbo, forced = (sum(parts) / len(rows) for parts in zip(*(exact_elbo(model, row) for row in rows)))
    exact = elbo + (forced if draw == "time" else 0.0)
    generator = torch.Generator().manual_seed(1)
    batches = torch.tensor([masked_diffusion_loss(model, rows.repeat(128, 1), generator, draw).item()
                            for _ in range(300)])
    standard_error = batches.std().item() / math.sqrt(len(batches))
    assert abs(batches.mean().item() - exact) < 4 * standard_error
    if draw == "time":
        assert forced > 0.5 * elbo        # at L = 4 the forced rows add more than half the ELBO again


@pytest.mark.parametrize("draw", ["time", "count"])
def test_heldout_objective_takes_either_draw(model, draw):
    """Its factorized value is the backbone's objective under ``draw``: the exact ELBO (plus the forced
    term for the time draw), within 4 standard errors over noise seeds."""
    rows = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]])
    elbo, forced = (sum(parts) / len(rows) for parts in zip(*(exact_elbo(model, row) for row in rows)))
    exact = elbo + (forced if draw == "time" else 0.0)
    layer = CoDDLayer.from_structure("hmm", LENGTH, VOCAB, num_states=2)
    values = torch.tensor([heldout_objective(layer, model, rows.repeat(128, 1), seed=seed, draw=draw)["factorized"]
                           for seed in range(200)])
    assert abs(values.mean().item() - exact) < 4 * values.std().item() / math.sqrt(len(values))
    with pytest.raises(ValueError, match="draw must be one of"):
        heldout_objective(layer, model, rows, draw="linear")


def test_count_draw_has_less_variance(model):
    rows = torch.tensor([[0, 1, 2, 0]]).repeat(64, 1)
    spread = {}
    for draw in ("time", "count"):
        generator = torch.Generator().manual_seed(2)
        spread[draw] = torch.tensor([masked_diffusion_loss(model, rows, generator, draw).item()
                                     for _ in range(200)]).std().item()
    assert spread["count"] < 0.5 * spread["time"]


def test_unknown_draw_is_refused():
    with pytest.raises(ValueError, match="draw must be one of"):
        elbo_draw(torch.zeros(2, 3, dtype=torch.long), torch.Generator(), "linear")
    with pytest.raises(ValueError, match="elbo_draw must be one of"):
        BackboneTrainingConfig(steps=1, elbo_draw="linear")
