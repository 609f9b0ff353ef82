"""Parameter adapters: identity at initialization, and p̂ stays exact with randomized adapters."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import structures
from helpers.brute import all_assignments, consistent, free_index, goodness_of_fit_pvalue, logsumexp
from pcdiff.codd.adapters import (ADAPTERS, Adapter, AdapterOutput, LatentEvidenceAdapter, LowRankAdapter, make_adapter,
                             register_adapter)
from pcdiff.codd import CoDDBlockDistribution
from pcdiff.codd import CoDDLayer
from helpers.strategies import circuits, seeds
from helpers.blocks import coupled_circuits, log_prob_table, random_block, reference_evidence

D = 5
NAMES = ["static", "latent_evidence", "low_rank", "coupling", "backbone_weight"]
VARIANTS = {"static": {}, "latent_evidence": {}, "latent_evidence/per_position": {"per_position": True},
            "low_rank": {"rank": 2}, "coupling": {}, "backbone_weight": {},
            "backbone_weight/global": {"per_sample": False}}
RANDOMIZED = [v for v in VARIANTS if v != "static"]


def build(variant, model):
    name = variant.split("/")[0]
    return make_adapter(name, model, D, **VARIANTS[variant])


def randomize(adapter, rng):
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.from_numpy(rng.normal(size=p.shape)).to(p.dtype))


def block_dist(model, adapter, logits, tokens, masked, t, hidden):
    return CoDDBlockDistribution(model, logits, tokens, masked, t, **_arguments(adapter(model, hidden)))


def _arguments(out: AdapterOutput) -> dict:
    weight = 1.0 if out.backbone_weight is None else out.backbone_weight
    return {"log_params": out.log_params, "node_potentials": out.node_potentials, "backbone_weight": weight}


def _weight(out: AdapterOutput, rows: int) -> np.ndarray:
    """[rows] β of each row (1 without one): the brute force raises the backbone's q to it."""
    if out.backbone_weight is None:
        return np.ones(rows)
    return out.backbone_weight.detach().expand(rows).numpy()


def brute_values(circuit, model, xs, out: AdapterOutput, b: int) -> np.ndarray:
    """log C_b(x) for full assignments xs under row b's adapted circuit (an independent evaluator:
    per-row sum tables, input nodes scaled by exp(node potential))."""
    sums = None if out.log_params is None else [t[b] if t.dim() == 3 else t for t in out.log_params.sums]
    pot = None if out.node_potentials is None else out.node_potentials[b].detach().numpy()
    values = {}
    for i, g in enumerate(circuit.groups):
        if isinstance(g, structures.Categorical):
            v = g.probs[:, xs[:, g.var]].T
            if pot is not None:
                offset = model.layout.input_node_offset[i]
                v = v * np.exp(pot[offset:offset + g.num_nodes])
            values[g.id] = v
        elif isinstance(g, structures.Product):
            out_v = np.ones((len(xs), g.num_nodes))
            for j, child in enumerate(g.children):
                out_v = out_v * values[child.id][:, g.edges[:, j]]
            values[g.id] = out_v
        else:
            w = g.weights if sums is None else sums[model.layout.group_sum_source[i]].detach().exp().numpy()
            values[g.id] = np.concatenate([values[c.id] for c in g.children], axis=1) @ w.T
    with np.errstate(divide="ignore"):
        return np.log(values[circuit.root.id][:, 0])


# ----------------------------------------------------------------------------- identity at init
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", sorted(coupled_circuits()))
def test_adapters_start_as_the_static_circuit(variant, name):
    model = structures.compile(coupled_circuits()[name], dtype=torch.float64)
    logits, tokens, masked, t = random_block(np.random.default_rng(0), model, 3, "normal")
    hidden = torch.randn(3, model.num_vars, D, dtype=torch.float64)
    static = CoDDBlockDistribution(model, logits, tokens, masked, t)
    adapted = block_dist(model, build(variant, model), logits, tokens, masked, t, hidden)
    value = static.sample((4,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adapted.log_prob(value), static.log_prob(value), rtol=0, atol=1e-12)
    torch.testing.assert_close(adapted.marginals(), static.marginals(), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- exactness when non-identity
@settings(max_examples=25, deadline=None)
@given(circuits(), st.sampled_from(RANDOMIZED), seeds)
def test_randomized_adapters_keep_p_hat_exact(circuit, variant, seed):
    rng = np.random.default_rng(seed)
    model = structures.compile(circuit, dtype=torch.float64)
    adapter = build(variant, model)
    randomize(adapter, rng)
    logits, tokens, masked, t = random_block(rng, circuit, 2, "normal")
    hidden = torch.from_numpy(rng.normal(size=(2, circuit.num_vars, D)))
    out = adapter(model, hidden)
    dist = CoDDBlockDistribution(model, logits, tokens, masked, t, **_arguments(out))
    # q^β renormalized is the softmax at T / β: the brute force's evidence at that temperature
    e = reference_evidence(logits.numpy(), masked.numpy(), t.numpy() / _weight(out, 2))
    xs = all_assignments(circuit)
    completions, expected = [], []
    for b in range(2):
        keep = consistent(xs, tokens[b].numpy(), ~masked[b].numpy())
        logp = brute_values(circuit, model, xs[keep], out, b) + e[b][np.arange(circuit.num_vars), xs[keep]].sum(1)
        if np.isneginf(logsumexp(logp)):
            with pytest.raises(ValueError, match="probability zero"):
                dist.log_normalizer
            return
        completions.append(xs[keep])
        expected.append(logp - logsumexp(logp))
    marg = dist.marginals().numpy()
    for b, actual in enumerate(log_prob_table(dist, completions)):
        np.testing.assert_allclose(actual, expected[b], rtol=1e-9, atol=1e-9)
        reference = np.zeros((circuit.num_vars, circuit.vocab_size))
        for i in range(circuit.num_vars):
            np.add.at(reference[i], completions[b][:, i], np.exp(expected[b]))
        np.testing.assert_allclose(marg[b], reference, atol=1e-9)


@pytest.mark.parametrize("variant", ["latent_evidence", "low_rank", "coupling", "backbone_weight"])
def test_samples_follow_p_hat_with_randomized_adapters(variant):
    circuit = coupled_circuits()["hmm"]
    model = structures.compile(circuit, dtype=torch.float64)
    adapter = build(variant, model)
    randomize(adapter, np.random.default_rng(1))
    logits, tokens, masked, t = random_block(np.random.default_rng(2), circuit, 1, "normal")
    masked[:] = torch.tensor([True, True, False, True])
    tokens = torch.where(masked, 3, 1)
    hidden = torch.randn(1, 4, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dist = block_dist(model, adapter, logits, tokens, masked, t, hidden)
    free = np.flatnonzero(masked[0].numpy())
    xs = all_assignments(circuit)
    keep = consistent(xs, tokens[0].numpy(), ~masked[0].numpy())
    probs = np.zeros(27)
    np.add.at(probs, free_index(xs[keep], free, circuit.vocab_sizes),
              dist.log_prob(torch.from_numpy(xs[keep])[:, None]).detach().exp().numpy()[:, 0])
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)
    joint = dist.sample((3000,), generator=torch.Generator().manual_seed(1))[:, 0].numpy()
    assert goodness_of_fit_pvalue(free_index(joint, free, circuit.vocab_sizes), probs) > 1e-3
    rows = CoDDBlockDistribution(model, logits.expand(3000, -1, -1), tokens.expand(3000, -1), masked.expand(3000, -1),
                                 t.expand(3000), **_expanded(adapter(model, hidden), 3000))
    ao = rows.sample_any_order("low_confidence", generator=torch.Generator().manual_seed(1)).numpy()
    assert goodness_of_fit_pvalue(free_index(ao, free, circuit.vocab_sizes), probs) > 1e-3


def _expanded(out: AdapterOutput, n: int) -> dict:
    lp = out.log_params
    if lp is not None:
        lp = structures.LogParams([s.expand(n, -1, -1) if s.dim() == 3 else s for s in lp.sums], lp.inputs)
    pot = None if out.node_potentials is None else out.node_potentials.expand(n, -1)
    weight = 1.0 if out.backbone_weight is None else out.backbone_weight.expand(n)
    return {"log_params": lp, "node_potentials": pot, "backbone_weight": weight}


# ----------------------------------------------------------------------------- details
def test_low_rank_tables_stay_normalized_and_keep_structural_zeros():
    weights = np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [1 / 3, 1 / 3, 1 / 3]])
    model = structures.compile(structures.hmm(3, 3, 2, transition=weights), dtype=torch.float64)
    adapter = make_adapter("low_rank", model, D, rank=3)
    randomize(adapter, np.random.default_rng(0))
    sums = adapter(model, torch.randn(4, 3, D, dtype=torch.float64)).log_params.sums
    assert all(s.shape[0] == 4 and s.dim() == 3 for s in sums)
    for s in sums:
        torch.testing.assert_close(s.logsumexp(-1), torch.zeros(s.shape[:-1], dtype=s.dtype))
    transition = next(s for s in sums if s.shape[-2:] == (3, 3))
    assert torch.isneginf(transition[:, 0, 2]).all() and torch.isneginf(transition[:, 1, 0]).all()


@pytest.mark.parametrize("variant", RANDOMIZED)
def test_adapters_learn_from_the_start(variant):
    model = structures.compile(structures.hmm(4, 3, 5))
    adapter = make_adapter(variant.split("/")[0], model, D, **VARIANTS[variant])
    logits, tokens, masked, t = random_block(np.random.default_rng(0), model, 3, "normal")
    dist = block_dist(model, adapter, logits.float(), tokens, masked, t.float(), torch.randn(3, 4, D))
    (-dist.log_prob(dist.sample()).sum()).backward()
    grads = [p.grad for p in adapter.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_coupling_strength_zero_makes_an_hmm_independent_positions():
    """α → 0: uniform rows over the nonzero entries (structural zeros kept), so the HMM's positions
    decouple; α = e^2 sharpens each row toward its largest entry."""
    weights = np.array([[0.7, 0.3, 0.0], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    model = structures.compile(structures.hmm(3, 3, 2, transition=weights), dtype=torch.float64)
    adapter = make_adapter("coupling", model, D)
    with torch.no_grad():
        adapter.bias.fill_(-adapter.MAX_LOG_STRENGTH)
    sums = adapter(model, torch.randn(2, 3, D, dtype=torch.float64)).log_params.sums
    transition = next(s for s in sums if s.shape[-2:] == (3, 3))
    torch.testing.assert_close(transition[:, 0, :2].exp(), torch.full((2, 2), 0.5, dtype=torch.float64), atol=1e-3,
                               rtol=0)
    assert torch.isneginf(transition[:, 0, 2]).all()
    with torch.no_grad():
        adapter.bias.fill_(2.0)
    sharp = next(s for s in adapter(model, torch.randn(1, 3, D, dtype=torch.float64)).log_params.sums
                 if s.shape[-2:] == (3, 3))
    expected = torch.log_softmax(np.exp(2.0) * torch.tensor(weights).log(), -1)
    torch.testing.assert_close(sharp[0], expected)


def test_backbone_weight_limits_are_the_circuit_alone_and_a_sharper_backbone():
    """β → 0 (log β = −8): p̂ is the circuit's own conditional of the masked positions given the
    decided ones; β = 2 is the product at half the temperature. One β for every row without hidden."""
    model = structures.compile(coupled_circuits()["hmm"], dtype=torch.float64)
    logits, tokens, masked, t = random_block(np.random.default_rng(3), model, 2, "normal")
    adapter = make_adapter("backbone_weight", model, per_sample=False)
    assert not adapter.needs_hidden
    with torch.no_grad():
        adapter.bias.fill_(-adapter.MAX_LOG_WEIGHT)
    alone = block_dist(model, adapter, logits, tokens, masked, t, None)
    flat = CoDDBlockDistribution(model, torch.zeros_like(logits), tokens, masked, t)   # uniform q: C alone
    value = flat.sample((5,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(alone.log_prob(value), flat.log_prob(value), atol=2e-3, rtol=0)
    with torch.no_grad():
        adapter.bias.fill_(np.log(2.0))
    sharper = block_dist(model, adapter, logits, tokens, masked, t, None)
    torch.testing.assert_close(sharper.log_prob(value),
                               CoDDBlockDistribution(model, logits, tokens, masked, t / 2).log_prob(value))
    torch.testing.assert_close(sharper.factorized().logits, CoDDBlockDistribution(model, logits, tokens, masked,
                                                                                  t).factorized().logits)


def test_latent_evidence_addresses_each_positions_input_nodes():
    model = structures.compile(structures.hidden_chain(4, 3, 2, span=[[0], [1, 2], [3]]))
    adapter = LatentEvidenceAdapter(model, D, per_position=True)
    with torch.no_grad():
        adapter.bias.copy_(torch.arange(4.0)[:, None].expand_as(adapter.bias))
    pot = adapter(model, torch.zeros(1, 4, D)).node_potentials[0]
    for i, nodes in enumerate(model.input_nodes_by_var):
        assert (pot[nodes] == i).all()


def test_custom_adapter_follows_the_protocol():
    class FirstStateBonus(Adapter):
        def __init__(self, model, hidden_size):
            super().__init__(model, hidden_size)
            self.bonus = torch.nn.Parameter(torch.zeros(()))

        def forward(self, model, hidden):
            pot = torch.zeros(hidden.shape[0], model.layout.num_input_nodes, dtype=model.dtype)
            first = torch.stack([nodes[0] for nodes in model.input_nodes_by_var])
            return AdapterOutput(node_potentials=pot.index_fill(1, first, 0.0) + 0 * self.bonus)

    register_adapter("first-state-bonus", FirstStateBonus)
    try:
        layer = CoDDLayer(structures.hmm(3, 2, 4), adapter="first-state-bonus", hidden_size=D)
        dist = layer.distribution(torch.randn(2, 3, 4), torch.randn(2, 3, D), torch.zeros(2, 3, dtype=torch.long),
                                  torch.ones(2, 3, dtype=torch.bool))
        assert torch.isfinite(dist.log_normalizer).all()
    finally:
        ADAPTERS.pop("first-state-bonus")


def test_adapter_errors_are_clear():
    model = structures.compile(structures.hmm(3, 2, 4))
    with pytest.raises(ValueError, match="unknown adapter 'lora'"):
        make_adapter("lora", model, D)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        make_adapter("latent_evidence", model, None)
    with pytest.raises(ValueError, match="rank must be a positive int"):
        LowRankAdapter(model, D, rank=0)
    with pytest.raises(ValueError, match="tables must index"):
        LowRankAdapter(model, D, tables=[7])
    with pytest.raises(ValueError, match=r"hidden must have shape \[B, 3, 5\]"):
        make_adapter("low_rank", model, D)(model, torch.randn(2, 3, 6))
    with pytest.raises(TypeError, match="CompiledCircuit"):
        make_adapter("static", structures.hmm(3, 2, 4))
    assert copy.deepcopy(make_adapter("low_rank", model, D)).rank == 4
    with pytest.raises(ValueError, match=r"backbone_weight must be finite and > 0"):
        CoDDBlockDistribution(structures.compile(structures.hmm(3, 2, 4)), torch.randn(1, 3, 4),
                              torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool),
                              backbone_weight=0.0)
