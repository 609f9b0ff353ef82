"""The training distribution as an exact empirical distribution: marginals against a loop over rows
(hypothesis), the conditional the controls score with it, its contract's errors."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdiff.app.scoring import circuit_scores
from pcdiff.data import EmpiricalDistribution, ItemData, Vocabulary


@st.composite
def tables(draw):
    length, vocab = draw(st.integers(1, 4)), draw(st.integers(2, 3))
    rows = draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length), min_size=1,
                         max_size=8))
    weights = draw(st.lists(st.floats(0.0, 5.0), min_size=len(rows), max_size=len(rows)).filter(any))
    queries = draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length), min_size=1,
                            max_size=5))
    observed = draw(st.lists(st.lists(st.booleans(), min_size=length, max_size=length), min_size=len(queries),
                             max_size=len(queries)))
    return rows, weights, queries, observed


@settings(max_examples=60, deadline=None)
@given(tables())
def test_marginals_are_the_weight_of_the_agreeing_rows(table):
    rows, weights, queries, observed = table
    dist = EmpiricalDistribution(torch.tensor(rows), torch.tensor(weights, dtype=torch.float64))
    got = dist.log_prob(torch.tensor(queries), observed=torch.tensor(observed))
    total = sum(weights)
    for query, seen, value in zip(queries, observed, got.tolist()):
        mass = sum(w for row, w in zip(rows, weights) if all(r == q or not s for r, q, s in zip(row, query, seen)))
        assert value == (-math.inf if mass == 0 else pytest.approx(math.log(mass / total), rel=1e-9, abs=1e-12))
    nothing = torch.zeros(len(queries), len(rows[0]), dtype=torch.bool)
    torch.testing.assert_close(dist.log_prob(torch.tensor(queries), observed=nothing),
                               torch.zeros(len(queries), dtype=torch.float64))


def test_the_conditional_scored_like_a_circuit_is_the_data_distribution_s():
    # "cab" ×3, "cob" ×1: with the middle masked, -log p(a | c_b) = log(4/3)
    data = ItemData(["cab", "cob", "dab"], [], Vocabulary.from_items(["cab", "cob", "dab"]), 4,
                    train_weights=[3.0, 1.0, 2.0])
    dist = data.train_distribution()
    x0 = data.encode_train()[:1]
    masked = torch.tensor([[False, True, False, False]])
    assert float(circuit_scores(dist, x0, masked)) == pytest.approx(math.log(4 / 3))
    assert float(circuit_scores(dist, x0, torch.zeros_like(masked))) == pytest.approx(0.0)
    assert float(dist.log_prob(x0)) == pytest.approx(math.log(3 / 6))


def test_chunks_agree_with_one_pass(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    rows, x = torch.randint(0, 3, (50, 5), generator=generator), torch.randint(0, 3, (40, 5), generator=generator)
    observed = torch.rand(40, 5, generator=generator) < 0.6
    dist = EmpiricalDistribution(rows, torch.rand(50, generator=generator))
    whole = dist.log_prob(x, observed)
    monkeypatch.setattr("pcdiff.data.empirical._CHUNK_ELEMENTS", 7 * rows.numel())
    torch.testing.assert_close(dist.log_prob(x, observed), whole)


def test_bad_tables_and_queries_are_named():
    with pytest.raises(ValueError, match="rows must be an integer tensor"):
        EmpiricalDistribution(torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="rows must be an integer tensor"):
        EmpiricalDistribution(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"weights must have shape \[2\]"):
        EmpiricalDistribution(torch.zeros(2, 3, dtype=torch.long), torch.ones(3))
    with pytest.raises(ValueError, match="not all zero"):
        EmpiricalDistribution(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2))
    dist = EmpiricalDistribution(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\]"):
        dist.log_prob(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="observed must have the shape of x"):
        dist.log_prob(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool))
