"""Every builder returns a normalized circuit whose compiled log_prob matches brute force."""
import networkx as nx
import numpy as np
import pytest
import torch

import structures
from helpers.brute import all_assignments, evaluate


def _builders():
    data = np.random.default_rng(0).integers(0, 3, (300, 5))
    return {
        "hmm": lambda: structures.hmm(5, 3, 3, seed=1),
        "hmm-inhomogeneous": lambda: structures.hmm(4, 2, 3, homogeneous=False, seed=2),
        "chain": lambda: structures.hidden_chain(5, 3, 3, span=2),
        "chain-mixture-emitter": lambda: structures.hidden_chain(
            5, 2, 3, span=[[0], [1, 2, 3], [4]], emitter=structures.mixture_emitter(2)),
        "latent-tree": lambda: structures.latent_tree(nx.star_graph(4), 2, 3),
        "hclt": lambda: structures.hclt(data, 3, 3),
        "mixture": lambda: structures.mixture(structures.hmm(5, 2, 3), structures.hclt(data, 2, 3)),
    }


@pytest.mark.parametrize("name", list(_builders()))
def test_builder_normalized_and_exact(name):
    circuit = _builders()[name]()
    model = structures.compile(circuit, dtype=torch.float64)
    xs = all_assignments(circuit)
    with torch.no_grad():
        lp = model.log_prob(torch.from_numpy(xs)).numpy()
    np.testing.assert_allclose(np.exp(lp).sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(lp, np.log(evaluate(circuit, xs)), atol=1e-12)


def test_hmm_given_parameters_are_exact():
    init = np.array([0.2, 0.8])
    trans = np.array([[0.9, 0.1], [0.3, 0.7]])
    emit = np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    model = structures.compile(structures.hmm(3, 2, 3, initial=init, transition=trans, emission=emit),
                               dtype=torch.float64)
    x = [0, 2, 1]
    alpha = init * emit[:, x[0]]
    for t in x[1:]:
        alpha = (alpha @ trans) * emit[:, t]
    assert model.log_prob(torch.tensor([x])).item() == pytest.approx(np.log(alpha.sum()), abs=1e-14)


def test_to_circuit_round_trips_parameters():
    circuit = structures.hmm(4, 3, 5, seed=3)
    model = structures.compile(circuit, dtype=torch.float64)
    again = structures.compile(model.to_circuit(), dtype=torch.float64)
    x = torch.randint(0, 5, (16, 4))
    torch.testing.assert_close(model.log_prob(x), again.log_prob(x))


def test_chow_liu_recovers_a_chain():
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 2, 4000)
    flip = lambda v: np.where(rng.random(len(v)) < 0.05, 1 - v, v)  # noqa: E731
    x1 = flip(x0)
    x2 = flip(x1)
    x3 = rng.integers(0, 2, 4000)
    tree = structures.chow_liu_tree(np.stack([x0, x1, x2, x3], 1), vocab=2)
    assert tree.has_edge(0, 1) and tree.has_edge(1, 2) and not tree.has_edge(0, 2)


def test_long_circuits_compile_and_copy():
    """Copying and compiling must not recurse along the chain (a 500-position HMM)."""
    circuit = structures.hmm(500, 4, 3, seed=0)
    model = structures.compile(circuit, dtype=torch.float64)
    x = torch.randint(0, 3, (2, 500))
    with torch.no_grad():
        torch.testing.assert_close(structures.compile(model.to_circuit(), dtype=torch.float64).log_prob(x),
                                   model.log_prob(x))


def test_inference_table_cache_follows_parameter_updates():
    model = structures.compile(structures.hmm(5, 3, 4, seed=2), dtype=torch.float64)
    x = torch.randint(0, 4, (32, 5))
    with torch.no_grad():
        before = model.log_prob(x)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    (-model.log_prob(x).mean()).backward()
    optimizer.step()
    structures.em_step(model, x, step_size=0.5)
    with torch.no_grad():
        after = model.log_prob(x)
        fresh = structures.compile(model.to_circuit(), dtype=torch.float64).log_prob(x)
    torch.testing.assert_close(after, fresh)
    assert not torch.allclose(before, after)
