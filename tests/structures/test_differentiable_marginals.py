"""``marginals(differentiable=True)``: the same marginals, with a gradient that is theirs (finite
differences through the parameters and the soft evidence)."""
import networkx as nx
import numpy as np
import pytest
import torch

import structures

BUILDERS = {
    "hmm": lambda: structures.hmm(4, 3, 3, seed=1),
    "tree": lambda: structures.latent_tree(nx.star_graph(3), 2, 3, seed=2),
    "mixture": lambda: structures.mixture(structures.hmm(4, 2, 3, seed=4), structures.hmm(4, 2, 3, seed=5)),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_values_equal_and_gradient_is_their_own(name):
    model = structures.compile(BUILDERS[name](), dtype=torch.float64)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 3, (2, 4)))
    observed = torch.tensor([[True, False, False, True], [False, False, True, False]])
    soft = torch.from_numpy(rng.normal(size=(2, 4, 3))).requires_grad_(True)
    weights = torch.from_numpy(rng.normal(size=(2, 4, 3)))
    params = list(model.parameters())

    def objective(soft_evidence, differentiable=True):
        return (model.marginals(x, observed, soft_evidence, differentiable=differentiable) * weights).sum()

    with torch.no_grad():
        torch.testing.assert_close(model.marginals(x, observed, soft, differentiable=True),
                                   model.marginals(x, observed, soft))
    objective(soft).backward()
    directions = [torch.from_numpy(rng.normal(size=tuple(p.shape))) for p in params + [soft]]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params + [soft], directions))

    def shifted(eps):
        with torch.no_grad():
            for p, d in zip(params, directions):
                p.add_(eps * d)
            value = float(objective(soft + eps * directions[-1], differentiable=False))
            for p, d in zip(params, directions):
                p.sub_(eps * d)
        return value

    assert analytic == pytest.approx((shifted(1e-6) - shifted(-1e-6)) / 2e-6, rel=1e-5, abs=1e-9)


def test_without_the_flag_they_are_constants():
    model = structures.compile(structures.hmm(3, 2, 3, seed=0), dtype=torch.float64)
    soft = torch.zeros(1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert not model.marginals(soft_evidence=soft).requires_grad
    assert model.marginals(soft_evidence=soft, differentiable=True).requires_grad
