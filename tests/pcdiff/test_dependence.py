"""The dependence-only product is exact: p̂_dep ∝ C(x) · Π_masked q_i(x_i) / C(x_i | x_O) agrees with
brute-force enumeration, is the backbone's distribution when one position is masked, and its
likelihood's gradient (through the circuit's conditionals: a double backward) is the true one."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import structures
from helpers.blocks import (LOGIT_KINDS, brute_block_rows, brute_z, coupled_circuits, random_block,
                            reference_evidence, assert_matches_brute_force)
from helpers.brute import brute_marginals
from helpers.properties import exact
from helpers.strategies import circuits, seeds
from pcdiff.codd import CoDDBlockDistribution, CoDDLayer


def dependence_evidence(circuit, logits, tokens, masked, t) -> np.ndarray:
    """numpy reference: the backbone's soft evidence minus log C(x_i | decided tokens) at masked positions."""
    e = reference_evidence(logits.numpy(), masked.numpy(), t.numpy())
    for b in range(len(tokens)):
        cond = brute_marginals(circuit, tokens[b].numpy(), ~masked[b].numpy())                 # [L, V]
        with np.errstate(divide="ignore"):
            log_cond = np.where(cond > 0, np.log(cond), 0.0)
        e[b] -= np.where(masked[b].numpy()[:, None], log_cond, 0.0)
    return e


@exact
@given(circuits(), st.sampled_from(LOGIT_KINDS), seeds)
def test_log_prob_and_marginals_match_brute_force(circuit, kind, seed):
    model = structures.compile(circuit, dtype=torch.float64)
    logits, tokens, masked, t = random_block(np.random.default_rng(seed), circuit, 3, kind)
    plain = reference_evidence(logits.numpy(), masked.numpy(), t.numpy())
    if np.isneginf(brute_z(circuit, tokens.numpy(), masked.numpy(), np.zeros_like(plain))).any() or \
            np.isneginf(brute_z(circuit, tokens.numpy(), masked.numpy(), plain)).any():
        with pytest.raises(ValueError, match="probability zero"):
            CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, dependence_only=True).log_normalizer
        return
    dist = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, dependence_only=True)
    e = dependence_evidence(circuit, logits, tokens, masked, t)
    assert_matches_brute_force(dist, circuit, tokens, masked, e, brute_block_rows(circuit, tokens.numpy(),
                                                                                   masked.numpy(), e))


@pytest.mark.parametrize("name", sorted(coupled_circuits()))
def test_one_masked_position_is_the_backbone(name):
    circuit = coupled_circuits()[name]
    model = structures.compile(circuit, dtype=torch.float64)
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(4, 4, 3)) * 2)
    masked = torch.zeros(4, 4, dtype=torch.bool)
    masked[torch.arange(4), torch.tensor([0, 1, 2, 3])] = True
    tokens = torch.from_numpy(rng.integers(0, 3, (4, 4)))
    dist = CoDDBlockDistribution(model, logits, tokens, masked, temperature=0.7, dependence_only=True)
    expected = torch.softmax(logits / 0.7, -1)[masked]
    torch.testing.assert_close(dist.marginals()[masked], expected, rtol=0, atol=1e-12)
    plain = CoDDBlockDistribution(model, logits, tokens, masked, temperature=0.7)
    assert not torch.allclose(plain.marginals()[masked], expected, atol=1e-3)   # the paper's product repairs


def _loss(model, logits, tokens, masked, target):
    return -CoDDBlockDistribution(model, logits, tokens, masked, dependence_only=True).log_prob(target).sum()


def test_gradient_is_the_likelihoods_own():
    """Finite differences of the exact likelihood along a random direction of the circuit's parameters
    and of the logits agree with autograd (the conditionals are differentiated, not held fixed)."""
    model = structures.compile(structures.hmm(3, 3, 4, seed=2), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    tokens, target = torch.tensor([[1, 0, 2], [0, 0, 0]]), torch.tensor([[1, 3, 2], [0, 1, 2]])
    masked = torch.tensor([[False, True, True], [True, True, True]])
    params = list(model.parameters())
    _loss(model, logits, tokens, masked, target).backward()
    directions = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params + [logits]]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params + [logits], directions))

    def shifted(eps):
        with torch.no_grad():
            for p, d in zip(params, directions):
                p.add_(eps * d)
            value = _loss(model, logits + eps * directions[-1], tokens, masked, target)
            for p, d in zip(params, directions):
                p.sub_(eps * d)
        return float(value)

    numeric = (shifted(1e-6) - shifted(-1e-6)) / 2e-6
    assert analytic == pytest.approx(numeric, rel=1e-6)


def test_top_k_with_every_token_is_the_dense_product():
    model = structures.compile(coupled_circuits()["hmm"], dtype=torch.float64)
    logits, tokens, masked, t = random_block(np.random.default_rng(3), coupled_circuits()["hmm"], 3, "normal")
    dense = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, dependence_only=True)
    top = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, dependence_only=True, top_k=3)
    torch.testing.assert_close(top.log_normalizer, dense.log_normalizer)
    torch.testing.assert_close(top.marginals(), dense.marginals())


def test_the_layer_keeps_the_setting_and_a_config_names_a_bad_value():
    layer = CoDDLayer.from_structure("hmm", 4, 3, num_states=2, dependence_only=True)
    assert "dependence_only=True" in repr(layer)
    again = CoDDLayer.from_config(layer.config())
    assert again.dependence_only and again.distribution(torch.zeros(1, 4, 3), None, torch.zeros(1, 4).long(),
                                                        torch.ones(1, 4, dtype=torch.bool)).dependence_only
    old = {k: v for k, v in layer.config().items() if k != "dependence_only"}
    assert not CoDDLayer.from_config(old).dependence_only                # files from before: the paper's product
    with pytest.raises(ValueError, match="dependence_only must be true or false"):
        CoDDLayer.from_config({**layer.config(), "dependence_only": "yes"})
    with pytest.raises(TypeError, match="dependence_only must be a bool"):
        CoDDBlockDistribution(layer.circuit, torch.zeros(1, 4, 3), torch.zeros(1, 4).long(),
                              torch.ones(1, 4, dtype=torch.bool), dependence_only=1)
