"""Candidate (top-k) evidence and the one-pass sample + marginals query are exact (brute force,
float64): a ``CandidateEvidence`` is the dense evidence it stands for in every query, and
``sample_and_marginals`` is the separate queries in one pass; malformed candidates are refused."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import structures
from helpers.brute import (assert_log_close, brute_free_joint, brute_log_prob, brute_marginals, brute_max_product,
                           evaluate, free_index, goodness_of_fit_pvalue)
from helpers.queries import kwargs, random_sum_tables, reference, row_tables
from helpers.properties import property_settings
from helpers.strategies import circuits, queries, seeds
from structures.queries import make_evidence

exact = property_settings(20)
few = property_settings(6, derandomize=True)
SAMPLES, ALPHA = 8000, 1e-5


# ----------------------------------------------------------------------------- core: candidate evidence
def candidates_for(rng, circuit, q):
    """Random candidates for the query: (CandidateEvidence, the dense evidence it means [B, n, V]).

    k in 1..V+1 slots per position, duplicates and ids past a variable's vocabulary allowed, the
    observed token usually among them; potentials from the query's soft evidence (tame, ±1e4, -inf)."""
    batch, n, vocab = q.batch, circuit.num_vars, circuit.vocab_size
    k = int(rng.integers(1, vocab + 2))
    ids = rng.integers(0, vocab, size=(batch, n, k))
    keep_observed = rng.random((batch, n)) < 0.8
    ids[..., 0] = np.where(keep_observed, q.x, ids[..., 0])
    soft = q.soft if q.soft is not None else rng.normal(size=(batch, n, vocab))
    pot = np.take_along_axis(soft, ids, axis=-1)
    dense = np.full((batch, n, vocab), -np.inf)
    for b, i, j in np.ndindex(batch, n, k):
        dense[b, i, ids[b, i, j]] = np.logaddexp(dense[b, i, ids[b, i, j]], pot[b, i, j])
    return structures.CandidateEvidence(torch.from_numpy(ids), torch.from_numpy(pot)), dense


def brute_with(circuit, model, q, dense, brute, b):
    c, x, observed, _ = reference(circuit, model, q, b)
    return brute(c, x, observed, dense[b])


@exact
@given(circuits(), st.data())
def test_candidate_evidence_is_the_dense_evidence_it_stands_for(circuit, data):
    q = data.draw(queries(circuit))
    model = structures.compile(circuit, dtype=torch.float64)
    cand, dense = candidates_for(np.random.default_rng(data.draw(seeds)), circuit, q)
    args = {**kwargs(q), "soft_evidence": cand}
    expected = np.array([brute_with(circuit, model, q, dense, brute_log_prob, b) for b in range(q.batch)])
    assert_log_close(model.log_prob(**args).detach().numpy(), expected)
    if np.isneginf(expected).any():
        for query in (model.marginals, model.sample_and_marginals, model.map):
            with pytest.raises(ValueError, match="probability zero"):
                query(**args)
        return
    marginals = model.marginals(**args)
    assert marginals.shape == cand.ids.shape
    for b in range(q.batch):
        np.testing.assert_allclose(cand.scatter(marginals, circuit.vocab_size)[b].numpy(),
                                   brute_with(circuit, model, q, dense, brute_marginals, b), atol=1e-9)
    best = [brute_with(circuit, model, q, dense, brute_max_product, b) for b in range(q.batch)]
    merged = make_evidence(model, **{**args, "soft_evidence": cand.merged()})     # as map does
    root_max = model.upward(merged, semiring="max")[model.layout.root][:, 0]
    assert_log_close(root_max.detach().numpy(), best)
    assignment, score = model.map(**args)
    for b in range(q.batch):                                            # the completion attains the max
        ref = reference(circuit, model, q, b)[0]
        picked = dense[b][np.arange(circuit.num_vars), assignment[b].numpy()].sum()
        with np.errstate(divide="ignore"):
            assert_log_close(np.log(evaluate(ref, assignment[b:b + 1].numpy(), semiring="max")[0]) + picked, best[b])
        assert_log_close(score[b].numpy(), brute_log_prob(ref, assignment[b].numpy(), np.ones(circuit.num_vars, bool),
                                                          dense[b]))
    joint = model.sample_and_marginals(**args, num_samples=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(joint.marginals, marginals, rtol=0, atol=1e-12)
    assert_log_close(joint.log_normalizer.numpy(), expected)
    for tokens in (assignment, *joint.sample):                          # every free token is a candidate
        assert bool(((tokens.unsqueeze(-1) == cand.ids).any(-1) | torch.from_numpy(q.observed)).all())


# ----------------------------------------------------------------------------- core: one pass
@settings(few, max_examples=10)
@given(circuits(), st.data())
def test_sample_and_marginals_is_the_separate_queries_in_one_pass(circuit, data):
    """With dense or candidate evidence (and per-sample sum tables): the marginals and log Z of the
    separate queries, and samples (its own and ``sample``'s) that pass goodness of fit."""
    q = data.draw(queries(circuit, max_batch=2, max_free_configs=48))
    model = structures.compile(circuit, dtype=torch.float64)
    tables = random_sum_tables(model, data, q.batch) if data.draw(st.booleans()) else None
    inputs = [t.detach() for t in model.log_params().inputs]
    args = {**kwargs(q), "log_params": None if tables is None else structures.LogParams(tables, inputs)}
    dense = None
    if data.draw(st.booleans()):
        args["soft_evidence"], dense = candidates_for(np.random.default_rng(data.draw(seeds)), circuit, q)
    log_z = model.log_prob(**args).detach()
    if torch.isneginf(log_z).any():
        with pytest.raises(ValueError, match="probability zero"):
            model.sample_and_marginals(**args)
        return
    joint = model.sample_and_marginals(**args, num_samples=SAMPLES, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(joint.marginals, model.marginals(**args), rtol=0, atol=1e-12)
    torch.testing.assert_close(joint.log_normalizer, log_z, rtol=1e-12, atol=1e-12)
    assert joint.sample.shape == (SAMPLES, q.batch, circuit.num_vars)
    separate = model.sample(**args, num_samples=SAMPLES, generator=torch.Generator().manual_seed(3))
    for samples in (joint.sample, separate):
        for b in range(q.batch):
            ref, x, observed, soft = reference(circuit, model, q, b, None if tables is None else row_tables(tables, b))
            probs = brute_free_joint(ref, x, observed, soft if dense is None else dense[b])
            index = free_index(samples[:, b].numpy(), np.flatnonzero(~q.observed[b]), circuit.vocab_sizes)
            assert goodness_of_fit_pvalue(index, probs) > ALPHA


def test_candidate_evidence_is_refused_when_malformed():
    model = structures.compile(structures.hmm(3, 2, 4))
    ids, pot = torch.zeros(2, 3, 2, dtype=torch.long), torch.zeros(2, 3, 2)
    bad = [(structures.CandidateEvidence(ids.float(), pot), TypeError, "ids must be an integer"),
           (structures.CandidateEvidence(ids, pot.long()), TypeError, "log_potentials must be a float"),
           (structures.CandidateEvidence(ids[:, :2], pot[:, :2]), ValueError, r"shape \[batch, 3, k\]"),
           (structures.CandidateEvidence(ids[..., :0], pot[..., :0]), ValueError, "k >= 1"),
           (structures.CandidateEvidence(ids, pot[..., :1]), ValueError, "shape of ids"),
           (structures.CandidateEvidence(ids + 4, pot), ValueError, r"outside \[0, 4\)"),
           (structures.CandidateEvidence(ids, torch.full_like(pot, float("nan"))), ValueError, "NaN")]
    for cand, error, message in bad:
        with pytest.raises(error, match=message):
            model.log_prob(soft_evidence=cand)
    with pytest.raises(ValueError, match="batch size"):
        model.log_prob(torch.zeros(3, 3, dtype=torch.long), soft_evidence=structures.CandidateEvidence(ids, pot))
