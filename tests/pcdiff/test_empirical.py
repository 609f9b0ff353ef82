"""The training distribution as an exact empirical distribution: marginals against a loop over rows
(hypothesis), the conditional the controls score with it, its contract's errors."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdiff.app.scoring import circuit_scores, marginal_scores
from pcdiff.data import EmpiricalDistribution, ItemData, Vocabulary


@st.composite
def tables(draw):
    length, vocab = draw(st.integers(1, 4)), draw(st.integers(2, 3))
    rows = draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length), min_size=1,
                         max_size=8))
    weight = st.one_of(st.just(0.0), st.floats(0.01, 5.0))                   # zero weights included
    weights = draw(st.lists(weight, min_size=len(rows), max_size=len(rows)).filter(any))
    queries = draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length), min_size=1,
                            max_size=5))
    observed = draw(st.lists(st.lists(st.booleans(), min_size=length, max_size=length), min_size=len(queries),
                             max_size=len(queries)))
    return rows, weights, queries, observed


def agrees(row, query, seen) -> bool:
    """Whether a table row holds the query's tokens at its observed positions."""
    return all(r == q or not s for r, q, s in zip(row, query, seen))


@settings(max_examples=60, deadline=None)
@given(tables())
def test_log_prob_of_the_observed_tokens_is_the_weight_of_the_agreeing_rows(table):
    rows, weights, queries, observed = table
    dist = EmpiricalDistribution(torch.tensor(rows), torch.tensor(weights, dtype=torch.float64))
    got = dist.log_prob(torch.tensor(queries), observed=torch.tensor(observed))
    total = sum(weights)
    for query, seen, value in zip(queries, observed, got.tolist()):
        mass = sum(w for row, w in zip(rows, weights) if agrees(row, query, seen))
        assert value == (-math.inf if mass == 0 else pytest.approx(math.log(mass / total), rel=1e-9, abs=1e-12))
    nothing = torch.zeros(len(queries), len(rows[0]), dtype=torch.bool)
    torch.testing.assert_close(dist.log_prob(torch.tensor(queries), observed=nothing),
                               torch.zeros(len(queries), dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(tables())
def test_marginals_given_the_observed_tokens_are_ratios_of_agreeing_weight(table):
    rows, weights, queries, observed = table
    vocab = max(max(r) for r in rows + queries) + 1
    dist = EmpiricalDistribution(torch.tensor(rows), torch.tensor(weights, dtype=torch.float64), vocab_size=vocab)
    keep = [i for i, (q, o) in enumerate(zip(queries, observed))
            if any(w > 0 and agrees(r, q, o) for r, w in zip(rows, weights))]
    if not keep:
        with pytest.raises(ValueError, match="agree with no row"):
            dist.marginals(torch.tensor(queries), torch.tensor(observed))
        return
    queries, observed = [queries[i] for i in keep], [observed[i] for i in keep]
    got = dist.marginals(torch.tensor(queries), torch.tensor(observed))
    assert got.shape == (len(queries), len(rows[0]), vocab)
    for query, seen, table_ in zip(queries, observed, got.tolist()):
        evidence = sum(w for r, w in zip(rows, weights) if agrees(r, query, seen))
        for i, probs in enumerate(table_):
            for v, value in enumerate(probs):
                mass = sum(w for r, w in zip(rows, weights) if agrees(r, query, seen) and r[i] == v)
                assert value == pytest.approx(mass / evidence, rel=1e-9, abs=1e-12)
            if seen[i]:
                assert probs[query[i]] == pytest.approx(1.0)


def test_one_step_and_joint_agree_at_one_masked_token_and_differ_by_the_correlation():
    # two equally likely words "ab", "ba": each letter alone is a coin flip, the pair is one bit
    data = ItemData(["ab", "ba"], [], Vocabulary.from_items(["ab", "ba"]), 3)       # + the end symbol
    dist, x0 = data.train_distribution(), data.encode_train()
    both, first = torch.tensor([[True, True, False]] * 2), torch.tensor([[True, False, False]] * 2)
    torch.testing.assert_close(marginal_scores(dist, x0, both), torch.full((2,), 2 * math.log(2), dtype=torch.float64))
    torch.testing.assert_close(circuit_scores(dist, x0, both), torch.full((2,), math.log(2), dtype=torch.float64))
    torch.testing.assert_close(marginal_scores(dist, x0, first), circuit_scores(dist, x0, first))
    with pytest.raises(ValueError, match="agree with no row"):
        dist.marginals(torch.tensor([[0, 0, 0]]), torch.tensor([[True, True, True]]))


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
    x = torch.where(observed, rows[:40], x)                  # observed tokens from a row: p(x_O) > 0
    marginals = dist.marginals(x, observed)
    monkeypatch.setattr("pcdiff.data.empirical._CHUNK_ELEMENTS", 1 << 25)
    torch.testing.assert_close(dist.marginals(x, observed), marginals)


def test_bad_tables_and_queries_are_named():
    with pytest.raises(ValueError, match="rows must be an integer tensor"):
        EmpiricalDistribution(torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="rows must be an integer tensor"):
        EmpiricalDistribution(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"weights must have shape \[2\]"):
        EmpiricalDistribution(torch.zeros(2, 3, dtype=torch.long), torch.ones(3))
    with pytest.raises(ValueError, match="not all zero"):
        EmpiricalDistribution(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match=r"token ids in \[0, vocab_size=2\)"):
        EmpiricalDistribution(torch.tensor([[0, 2]]), vocab_size=2)
    dist = EmpiricalDistribution(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\]"):
        dist.log_prob(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="observed must have the shape of x"):
        dist.log_prob(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool))
