"""The sampler's CoDD modes, by goodness of fit against a circuit's exact joint: with uniform logits the
product is the circuit itself, so whatever the sampler draws must follow it; ``pc_frac`` gates the circuit."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from helpers.stubs import V, StubBackbone, contextual, hmm_layer
from pcdiff.codd import CoDDLayer
from pcdiff.decode import generate


def spy(layer: CoDDLayer) -> list[tuple[tuple, float]]:
    """Record the logits shape and masked fraction of every distribution the layer builds."""
    seen, build = [], layer.distribution

    def distribution(logits, hidden, tokens, masked, temperature=None):
        seen.append((tuple(logits.shape), masked.float().mean().item()))
        return build(logits, hidden, tokens, masked, temperature)
    layer.distribution = distribution
    return seen


def joint_table(layer: CoDDLayer) -> tuple[list[tuple], np.ndarray]:
    """Every assignment of the block and its probability under the circuit."""
    length, vocab = layer.block_length, layer.vocab_size
    outcomes = list(itertools.product(range(vocab), repeat=length))
    probs = layer.circuit.log_prob(torch.tensor(outcomes)).detach().exp().numpy()
    return outcomes, probs / probs.sum()


def fit_pvalue(samples: torch.Tensor, outcomes, probs) -> float:
    index = {o: k for k, o in enumerate(outcomes)}
    counts = np.bincount([index[tuple(s)] for s in samples.tolist()], minlength=len(outcomes))
    return chisquare(counts, probs * len(samples)).pvalue


@pytest.mark.parametrize("noise", ["mask", "uniform"])
@pytest.mark.parametrize("codd, steps, remasking", [("joint", 1, "low_confidence"), ("any_order", 1, "low_confidence"),
                                                    ("any_order", 3, "low_confidence"), ("joint", 3, "margin")])
def test_codd_samples_the_circuits_joint(codd, steps, remasking, noise):
    # uniform logits: p̂ is the circuit itself, so the sampler must reproduce the circuit's joint; with a
    # uniform-noise backbone too (the positions to decide hold fresh random tokens before every call)
    layer = hmm_layer(3, vocab=3, sticky=True)
    if noise == "uniform":
        layer.mask_id = None
    outcomes, probs = joint_table(layer)
    backbone = StubBackbone(lambda t: torch.zeros(*t.shape, 3), vocab_size=3, noise=noise)
    out = generate(backbone, None, layer=layer, gen_length=3, block_length=3, steps=steps, codd=codd,
                   remasking=remasking, batch_size=4000, generator=torch.Generator().manual_seed(0))
    assert fit_pvalue(out, outcomes, probs) > 1e-3


def test_joint_with_low_confidence_over_several_steps_is_tilted():
    # the rule keeps the positions whose *sampled* token is likely: documented bias, unlike any_order's
    layer = hmm_layer(3, vocab=3, sticky=True)
    outcomes, probs = joint_table(layer)
    backbone = StubBackbone(lambda t: torch.zeros(*t.shape, 3), vocab_size=3)
    out = generate(backbone, None, layer=layer, gen_length=3, block_length=3, steps=3, codd="joint",
                   batch_size=4000, generator=torch.Generator().manual_seed(0))
    assert fit_pvalue(out, outcomes, probs) < 1e-6


def test_factorized_sampling_cannot_reach_the_joint():
    # the best any one-step factorized sampler can do: exact per-position marginals of the circuit
    layer = hmm_layer(3, vocab=3, sticky=True)
    outcomes, probs = joint_table(layer)
    marginals = layer.circuit.marginals(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool))
    backbone = StubBackbone(lambda t: marginals.log().expand(t.shape[0], -1, -1), vocab_size=3)
    out = generate(backbone, None, gen_length=3, block_length=3, steps=1, batch_size=4000,
                   generator=torch.Generator().manual_seed(0))
    assert fit_pvalue(out, outcomes, probs) < 1e-6
    same = (out == out[:, :1]).all(-1).float().mean()
    assert same < 0.3 < (probs[[0, 13, 26]].sum())                     # the circuit mostly repeats one token


def test_greedy_codd_is_deterministic_and_joint_greedy_is_the_map():
    layer = hmm_layer(3, vocab=3, seed=4)
    outcomes, probs = joint_table(layer)
    backbone = StubBackbone(lambda t: torch.zeros(*t.shape, 3), vocab_size=3)
    for codd in ("joint", "any_order"):
        runs = [generate(backbone, None, layer=layer, gen_length=3, block_length=3, steps=1, codd=codd,
                         temperature=0, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
        assert torch.equal(runs[0], runs[1])
    joint = generate(backbone, None, layer=layer, gen_length=3, block_length=3, steps=1, codd="joint", temperature=0)
    assert tuple(joint[0].tolist()) == outcomes[int(probs.argmax())]


@pytest.mark.parametrize("pc_frac, fractions", [(0.6, [0.5, 0.25]), (0.5, [0.25]), (1.0, [0.75, 0.5, 0.25])])
def test_pc_frac_gates_the_circuit_and_the_layer_sees_one_block(pc_frac, fractions):
    layer = hmm_layer(4)
    seen = spy(layer)
    backbone = StubBackbone(contextual(2 + 8))
    generate(backbone, torch.tensor([[0, 1]] * 3), layer=layer, gen_length=8, block_length=4, steps=8,
             codd="joint", pc_frac=pc_frac, generator=torch.Generator().manual_seed(0))
    assert len(backbone.calls) == 8 and all(c.shape == (3, 10) for c in backbone.calls)
    # masked fractions per block: 1, .75, .5, .25; the circuit runs only strictly below pc_frac
    assert [frac for _, frac in seen] == fractions * 2
    assert all(shape == (3, 4, V) for shape, _ in seen)


def test_pc_frac_above_full_mask_keeps_the_factorized_output():
    layer = hmm_layer(3, vocab=3, sticky=True)
    seen = spy(layer)
    backbone = StubBackbone(lambda t: torch.zeros(*t.shape, 3), vocab_size=3)
    out = generate(backbone, None, layer=layer, gen_length=3, block_length=3, steps=1, codd="joint", pc_frac=0.9,
                   batch_size=2000, generator=torch.Generator().manual_seed(0))
    assert not seen
    assert fit_pvalue(out, [o for o in itertools.product(range(3), repeat=3)], np.full(27, 1 / 27)) > 1e-3
