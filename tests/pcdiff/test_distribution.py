"""CoDDBlockDistribution is exact: normalized log-probabilities, marginals, joint and any-order
samples and MAP all agree with brute-force enumeration of p̂ ∝ C(x) · Π_masked softmax(logits/T)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import structures
from helpers.blocks import (LOGIT_KINDS, NOISE_KINDS, block_for, brute_block_rows, brute_z, check_exact,
                            coupled_circuits, gof_pvalues, noised, random_block, reference_evidence)
from helpers.strategies import circuits, seeds
from pcdiff.codd import CoDDBlockDistribution

exact = settings(max_examples=30, deadline=None)


# ----------------------------------------------------------------------------- exactness
@exact
@given(circuits(), st.sampled_from(LOGIT_KINDS), seeds, st.sampled_from(NOISE_KINDS))
def test_log_prob_and_marginals_match_brute_force(circuit, kind, seed, noise):
    """Whatever the masked positions hold (the mask id, or any token of a uniform-noise backbone)."""
    model = structures.compile(circuit, dtype=torch.float64)
    logits, tokens, masked, t = random_block(np.random.default_rng(seed), circuit, 3, kind)
    tokens, mask_id = noised(tokens, masked, noise, circuit.vocab_size, seed)
    dist = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, mask_id=mask_id)
    e = reference_evidence(logits.numpy(), masked.numpy(), t.numpy())
    if np.isneginf(brute_z(circuit, tokens.numpy(), masked.numpy(), e)).any():
        with pytest.raises(ValueError, match="probability zero"):
            dist.log_normalizer
        return
    check_exact(circuit, dist, logits, tokens, masked, t)


def test_mask_id_inside_the_vocabulary_is_banned():
    circuit = structures.hmm(4, 2, 4, seed=3)
    model = structures.compile(circuit, dtype=torch.float64)
    logits, _, masked, t = random_block(np.random.default_rng(0), circuit, 2, "normal")
    tokens = torch.where(masked, torch.tensor(2), torch.tensor(1))
    dist = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, mask_id=2)
    check_exact(circuit, dist, logits, tokens, masked, t, mask_id=2)
    assert (dist.marginals()[..., 2][masked] == 0).all()
    with pytest.raises(ValueError, match="mask id 2"):
        dist.log_prob(tokens)


def test_everything_decoded_is_certain():
    circuit = structures.hmm(3, 2, 3, seed=0)
    tokens = torch.tensor([[0, 1, 2]])
    dist = CoDDBlockDistribution(structures.compile(circuit, dtype=torch.float64), torch.randn(1, 3, 3,
                                 dtype=torch.float64), tokens, torch.zeros(1, 3, dtype=torch.bool))
    assert float(dist.log_prob(tokens).detach()) == pytest.approx(0.0, abs=1e-12)
    assert torch.equal(dist.sample(), tokens) and torch.equal(dist.sample_any_order(), tokens)


# ----------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("noise", NOISE_KINDS)
@pytest.mark.parametrize("name", sorted(coupled_circuits()))
def test_joint_samples_follow_p_hat(name, noise):
    circuit = coupled_circuits()[name]
    logits, tokens, masked, t = block_for(circuit, 11, 2)
    tokens, mask_id = noised(tokens, masked, noise, circuit.vocab_size)
    dist = CoDDBlockDistribution(structures.compile(circuit, dtype=torch.float64), logits, tokens, masked, t,
                                 mask_id=mask_id)
    samples = dist.sample((3000,), generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3000, 2, 4)
    assert min(gof_pvalues(circuit, samples, tokens, masked, logits, t)) > 1e-3


@pytest.mark.parametrize("noise", NOISE_KINDS)
@pytest.mark.parametrize("order", ["low_confidence", "margin", "entropy", "random", "given"])
@pytest.mark.parametrize("name", ["hmm", "chain", "hclt"])
def test_any_order_samples_follow_p_hat(name, order, noise):
    circuit = coupled_circuits()[name]
    logits, tokens, masked, t = block_for(circuit, 12, 3000)
    tokens, mask_id = noised(tokens, masked, noise, circuit.vocab_size)
    dist = CoDDBlockDistribution(structures.compile(circuit, dtype=torch.float64), logits, tokens, masked, t,
                                 mask_id=mask_id)
    generator = torch.Generator().manual_seed(1)
    if order == "given":
        order = torch.stack([torch.randperm(4, generator=generator) for _ in range(len(tokens))])
    samples, steps = dist.sample_any_order(order, generator=generator, return_order=True)
    assert min(gof_pvalues(circuit, samples[None], tokens, masked, logits, t)) > 1e-3
    assert ((steps >= 0) == masked).all()
    if isinstance(order, torch.Tensor):                                     # steps follow the given order
        for b in range(4):
            given_masked = order[b][masked[b][order[b]]]
            positions = masked[b].nonzero().flatten()
            assert torch.equal(positions[torch.argsort(steps[b][positions])], given_masked)


def test_goodness_of_fit_rejects_independent_tokens():
    """The test has power: tokens drawn independently from the exact marginals fail it."""
    circuit = coupled_circuits()["hmm"]
    logits, tokens, masked, t = block_for(circuit, 11, 3000)
    dist = CoDDBlockDistribution(structures.compile(circuit, dtype=torch.float64), logits, tokens, masked, t)
    marg = dist.marginals()
    independent = torch.distributions.Categorical(probs=marg).sample()
    assert min(gof_pvalues(circuit, independent[None], tokens, masked, logits, t)) < 1e-6


# ----------------------------------------------------------------------------- MAP and the baseline
@exact
@given(circuits(), seeds)
def test_map_by_enumeration_is_the_brute_force_maximum(circuit, seed):
    logits, tokens, masked, t = random_block(np.random.default_rng(seed), circuit, 2, "normal")
    dist = CoDDBlockDistribution(structures.compile(circuit, dtype=torch.float64), logits, tokens, masked, t)
    e = reference_evidence(logits.numpy(), masked.numpy(), t.numpy())
    if np.isneginf(brute_z(circuit, tokens.numpy(), masked.numpy(), e)).any():
        with pytest.raises(ValueError, match="probability zero"):
            dist.map()
        return
    result = dist.map()
    assert result.exact.all()
    for b, (xs, logp) in enumerate(brute_block_rows(circuit, tokens.numpy(), masked.numpy(), e)):
        assert float(result.log_prob[b]) == pytest.approx(logp.max(), abs=1e-9)
    torch.testing.assert_close(result.log_prob, dist.log_prob(result.assignment))
    assert torch.equal(dist.mode(), result.assignment)


def test_max_product_map_is_flagged_approximate_and_exact_without_latents():
    factorized = structures.Circuit(structures.Product(*[structures.Categorical(i, 1, 3, probs=p[None])
                                                         for i, p in enumerate(np.random.default_rng(0).dirichlet(
                                                             np.ones(3), 4))]))
    logits, tokens, masked, t = random_block(np.random.default_rng(1), factorized, 3, "normal")
    dist = CoDDBlockDistribution(structures.compile(factorized, dtype=torch.float64), logits, tokens, masked, t)
    approx, exact_ = dist.map(exact_limit=0), dist.map()
    assert not approx.exact.any() and exact_.exact.all()
    assert torch.equal(approx.assignment, exact_.assignment)                # no latent sums: max-product is exact


def test_factorized_is_the_tempered_backbone():
    logits = torch.randn(2, 3, 4)
    tokens, masked = torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)
    dist = CoDDBlockDistribution(structures.compile(structures.hmm(3, 2, 4)), logits, tokens, masked, temperature=0.5)
    base = dist.factorized()
    assert isinstance(base, torch.distributions.Categorical) and base.batch_shape == (2, 3)
    torch.testing.assert_close(base.probs, torch.softmax(logits / 0.5, -1))
    assert dist.batch_shape == (2,) and dist.event_shape == (3,)


# ----------------------------------------------------------------------------- gradients and errors
def test_gradients_are_finite_for_extreme_logits():
    circuit = structures.hmm(4, 3, 4, seed=0)
    model = structures.compile(circuit, dtype=torch.float32)
    logits = (torch.randn(3, 4, 4) * 1e4)
    logits[0, 1, :2] = float("-inf")                                         # banned tokens
    logits.requires_grad_(True)
    masked = torch.tensor([[True, True, False, True], [True] * 4, [False, True, True, False]])
    tokens = torch.tensor([[0, 0, 1, 0], [0] * 4, [2, 0, 0, 3]])
    dist = CoDDBlockDistribution(model, logits, tokens, masked, temperature=0.3)
    value = dist.sample(generator=torch.Generator().manual_seed(0))
    loss = -dist.log_prob(value).sum()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_impossible_blocks_raise():
    model = structures.compile(structures.hmm(3, 2, 3), dtype=torch.float64)
    logits = torch.zeros(2, 3, 3, dtype=torch.float64)
    logits[1, 2] = float("-inf")                                             # every candidate banned
    dist = CoDDBlockDistribution(model, logits, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))
    for query in (lambda: dist.log_normalizer, dist.marginals, dist.sample, dist.map, dist.sample_any_order):
        with pytest.raises(ValueError, match=r"probability zero in batch row\(s\) \[1\]"):
            query()
    emit = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])                      # token 2 never emitted
    model = structures.compile(structures.hmm(3, 2, 3, emission=emit), dtype=torch.float64)
    dist = CoDDBlockDistribution(model, torch.zeros(1, 3, 3, dtype=torch.float64), torch.tensor([[2, 0, 0]]),
                                 torch.tensor([[False, True, True]]))
    with pytest.raises(ValueError, match="probability zero"):
        dist.log_normalizer


def _dist(**overrides):
    model = structures.compile(structures.hmm(3, 2, 4))
    args = dict(model=model, logits=torch.randn(2, 3, 4), tokens=torch.tensor([[0, 1, 4], [4, 2, 3]]),
                masked=torch.tensor([[False, False, True], [True, False, False]]))
    args.update(overrides)
    return CoDDBlockDistribution(**args, mask_id=4)


@pytest.mark.parametrize("overrides, error, message", [
    (dict(logits=torch.randn(2, 3, 5)), ValueError, "vocabulary mismatch"),
    (dict(logits=torch.randn(2, 4, 4)), ValueError, "block length is 3"),
    (dict(logits=torch.randn(3, 4)), ValueError, r"logits must have shape \[B, L, V\]"),
    (dict(logits=torch.zeros(2, 3, 4, dtype=torch.long)), TypeError, "logits must be a float tensor"),
    (dict(logits=torch.full((2, 3, 4), float("nan"))), ValueError, "NaN"),
    (dict(tokens=torch.zeros(2, 4, dtype=torch.long)), ValueError, "tokens must have shape"),
    (dict(tokens=torch.tensor([[0, 9, 4], [4, 2, 3]])), ValueError, r"tokens\[0, 1\] = 9"),
    (dict(tokens=torch.tensor([[0, 4, 4], [4, 2, 3]])), ValueError, "mask id at a position marked decoded"),
    (dict(masked=torch.zeros(2, 3)), TypeError, "masked must be a bool tensor"),
    (dict(masked=torch.zeros(2, 2, dtype=torch.bool)), ValueError, "masked must have shape"),
    (dict(temperature=0.0), ValueError, "temperature must be finite and > 0"),
    (dict(temperature=torch.tensor([1.0, -1.0])), ValueError, "temperature"),
    (dict(temperature=torch.ones(3)), ValueError, r"temperature must be a float or a \[2\] tensor"),
    (dict(model="hmm"), TypeError, "CompiledCircuit"),
])
def test_bad_arguments_are_named(overrides, error, message):
    with pytest.raises(error, match=message):
        _dist(**overrides)


@pytest.mark.parametrize("value, error, message", [
    (torch.tensor([[0, 1, 2], [1, 2, 3]]).float(), TypeError, "integer tensor"),
    (torch.tensor([0, 1, 2]), ValueError, "shape"),
    (torch.tensor([[0, 1, 4], [0, 2, 3]]), ValueError, "mask id 4"),
    (torch.tensor([[0, 1, 2], [-1, 2, 3]]), ValueError, "outside"),
    (torch.tensor([[1, 1, 2], [0, 2, 3]]), ValueError, "differs from tokens at a decoded"),
])
def test_log_prob_checks_its_value(value, error, message):
    with pytest.raises(error, match=message):
        _dist().log_prob(value)


def test_bad_orders_are_refused():
    dist = _dist()
    with pytest.raises(ValueError, match="order must be one of"):
        dist.sample_any_order("lowest")
    with pytest.raises(ValueError, match="permutation"):
        dist.sample_any_order(torch.tensor([[0, 0, 1], [0, 1, 2]]))


def test_log_prob_accepts_sample_shapes():
    dist = _dist()
    samples = dist.sample((5, 2), generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 2, 2, 3)
    lp = dist.log_prob(samples)
    assert lp.shape == (5, 2, 2) and torch.isfinite(lp).all()
    seeded = dist.sample(generator=torch.Generator().manual_seed(3))
    assert torch.equal(dist.sample(torch.Generator().manual_seed(3)), seeded)      # sample(generator) works too


def test_any_order_can_stop_after_some_positions():
    dist = _dist(masked=torch.tensor([[True, True, True], [True, False, True]]),
                 tokens=torch.tensor([[4, 4, 4], [4, 2, 4]]))
    x, steps = dist.sample_any_order("entropy", generator=torch.Generator().manual_seed(0), return_order=True,
                                     budget=1)
    assert ((steps == 0).sum(-1) == 1).all() and (steps <= 0).all()
    assert torch.equal(x[steps < 0], dist.given_tokens[steps < 0])


