"""Exact samples: drawn conditioned on random masks and soft evidence, they follow the posterior
that brute-force enumeration gives (chi-square); the test itself rejects three plausible wrong samplers."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import structures
from helpers.brute import brute_free_joint, brute_marginals, free_index, goodness_of_fit_pvalue
from helpers.properties import EXAMPLES, exact
from helpers.queries import brute_query_rows, compiled, kwargs, random_sum_tables, reference, row_tables
from helpers.strategies import circuits, queries, seeds

SAMPLES = 10_000
ALPHA = 1e-5


def assert_samples_match(samples: np.ndarray, probs: np.ndarray, free: np.ndarray, vocab_sizes) -> None:
    """Chi-square goodness of fit of samples [S, n] on the joint of the positions ``free``."""
    p = goodness_of_fit_pvalue(free_index(samples, free, vocab_sizes), probs)
    assert p > ALPHA, f"samples do not follow the exact posterior (chi-square p = {p:.3g})"


@settings(exact, max_examples=EXAMPLES // 2, derandomize=True)
@given(circuits(), st.data())
def test_samples_follow_the_exact_posterior(circuit, data):
    q = data.draw(queries(circuit, max_batch=2, max_free_configs=64))
    model = compiled(circuit)
    generator = torch.Generator().manual_seed(data.draw(seeds))
    tables = random_sum_tables(model, data, q.batch) if data.draw(st.booleans()) else None
    log_params = None if tables is None else \
        structures.LogParams(tables, [t.detach() for t in model.log_params().inputs])
    args = dict(kwargs(q), generator=generator, log_params=log_params)
    if np.isneginf(brute_query_rows(circuit, model, q, sum_tables=tables)).any():
        with pytest.raises(ValueError, match="probability zero"):
            model.sample(**args, num_samples=2)
        return
    samples = model.sample(**args, num_samples=SAMPLES).numpy()
    assert samples.shape == (SAMPLES, q.batch, circuit.num_vars)
    for b in range(q.batch):
        observed = samples[:, b][:, q.observed[b]]
        assert np.array_equal(observed, np.broadcast_to(q.x[b, q.observed[b]], observed.shape))
        own = None if tables is None else row_tables(tables, b)
        probs = brute_free_joint(*reference(circuit, model, q, b, own))
        assert_samples_match(samples[:, b], probs, np.flatnonzero(~q.observed[b]), circuit.vocab_sizes)


COMPONENT_WEIGHTS = np.array([0.6, 0.4])
COMPONENT_EMISSIONS = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])


def _coupled_mixture():
    """Two components that make x0, x1, x2 strongly dependent: the case a wrong sampler gets wrong."""
    leaves = [structures.Categorical(i, 2, 3, probs=COMPONENT_EMISSIONS) for i in range(3)]
    return structures.Circuit(structures.Sum(structures.Product(*leaves), num_nodes=1,
                                             weights=COMPONENT_WEIGHTS[None]))


def test_goodness_of_fit_catches_wrong_samplers():
    circuit = _coupled_mixture()
    model = compiled(circuit)
    x, observed = np.zeros(3, dtype=np.int64), np.zeros(3, dtype=bool)
    soft = np.log(np.array([[1.0, 1.0, 3.0], [1.0, 1.0, 1.0], [1.0, 2.0, 1.0]]))
    free, vocab = np.arange(3), circuit.vocab_sizes
    probs = brute_free_joint(circuit, x, observed, soft)
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)

    def draw(soft_evidence):
        return model.sample(torch.from_numpy(x[None]), torch.from_numpy(observed[None]), soft_evidence,
                            num_samples=SAMPLES, generator=generator)[:, 0].numpy()

    assert_samples_match(draw(torch.from_numpy(soft[None])), probs, free, vocab)       # the real sampler passes
    # Wrong 1: each token from its exact marginal, independently.
    marginals = brute_marginals(circuit, x, observed, soft)
    independent = np.stack([rng.choice(3, size=SAMPLES, p=marginals[i]) for i in range(3)], axis=1)
    # Wrong 2: the sampler ignores the soft evidence.
    no_evidence = draw(None)
    # Wrong 3: one latent path (the posterior's most likely component), then tokens independently.
    tilted = COMPONENT_EMISSIONS[:, None, :] * np.exp(soft)[None]                       # [component, position, token]
    component = int(np.argmax(COMPONENT_WEIGHTS * tilted.sum(-1).prod(-1)))
    path = tilted[component] / tilted[component].sum(-1, keepdims=True)
    one_path = np.stack([rng.choice(3, size=SAMPLES, p=path[i]) for i in range(3)], axis=1)
    for wrong in (independent, no_evidence, one_path):
        with pytest.raises(AssertionError, match="do not follow"):
            assert_samples_match(wrong, probs, free, vocab)
