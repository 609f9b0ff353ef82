"""No query returns a sample, a marginal or a score computed from a NaN or an overflow: it raises a
ValueError naming the input that carried it, or saying that the pass overflowed in the circuit's
dtype. -inf stays legal (an impossible event)."""
from __future__ import annotations

import copy

import pytest
import torch

import structures
from structures import CandidateEvidence, Evidence, LogParams

NAN, INF = float("nan"), float("inf")
QUERIES = {
    "log_prob": lambda m, **kw: m.log_prob(**kw),
    "marginals": lambda m, **kw: m.marginals(**kw),
    "sample": lambda m, **kw: m.sample(**kw, num_samples=3, generator=torch.Generator().manual_seed(0)),
    "sample_and_marginals": lambda m, **kw: m.sample_and_marginals(**kw),
    "map": lambda m, **kw: m.map(**kw),
}
LEARNERS = {
    "expected_counts": lambda m, x: structures.expected_counts(m, x),
    "em_step": lambda m, x: structures.em_step(m, x),
    "fit": lambda m, x: structures.fit(m, x, epochs=1, progress=False),
}
X = torch.tensor([[0, 1, 2, 3], [4, 0, 1, 2]])
#: every position unobserved, and the first two observed
OBSERVATIONS = {"none": dict(x=X, observed=torch.zeros_like(X, dtype=torch.bool)),
                "some": dict(x=X, observed=torch.tensor([[True, True, False, False]] * 2))}


@pytest.fixture(scope="module")
def model():
    """Inhomogeneous: four sum tables and four emission tables, each its own."""
    return structures.compile(structures.hmm(4, 3, 5, homogeneous=False, seed=0))


def _log_params(model, kind: str, t: int) -> LogParams:
    lp = model.log_params()
    tables = LogParams([s.detach().clone() for s in lp.sums], [s.detach().clone() for s in lp.inputs])
    getattr(tables, kind)[t][0, 1] = NAN
    return tables


def _tampered(model, kind: str, t: int):
    """A copy whose own parameter table holds a NaN, as loaded from a tampered checkpoint."""
    bad = copy.deepcopy(model)
    with torch.no_grad():
        getattr(bad, kind)[t].logits[1, 1] = NAN
    return bad


# ----------------------------------------------------------------------------- NaN in the parameters
@pytest.mark.parametrize("seen", list(OBSERVATIONS))
@pytest.mark.parametrize("query", list(QUERIES))
@pytest.mark.parametrize("kind", ["sums", "inputs"])
def test_nan_in_log_params_is_named(model, query, seen, kind):
    with pytest.raises(ValueError, match=rf"{query}: NaN in log_params\.{kind}\[2\]"):
        QUERIES[query](model, log_params=_log_params(model, kind, 2), **OBSERVATIONS[seen])


@pytest.mark.parametrize("seen", list(OBSERVATIONS))
@pytest.mark.parametrize("query", list(QUERIES))
@pytest.mark.parametrize("kind", ["sums", "inputs"])
def test_nan_in_the_circuits_own_parameters_is_named(model, query, seen, kind):
    bad = _tampered(model, kind, 0)
    with pytest.raises(ValueError, match=rf"NaN in the circuit's parameters \({kind}\[0\]\.logits\)"):
        QUERIES[query](bad, **OBSERVATIONS[seen])


@pytest.mark.parametrize("learner", list(LEARNERS))
def test_learning_refuses_nan_parameters_and_changes_nothing(model, learner):
    bad = _tampered(model, "sums", 0)
    before = [p.detach().clone() for p in bad.parameters()]
    with pytest.raises(ValueError, match=r"NaN in the circuit's parameters \(sums\[0\]\.logits\)"):
        LEARNERS[learner](bad, X)
    assert all(torch.allclose(a, b, equal_nan=True) for a, b in zip(before, bad.parameters()))


def test_a_nan_emission_row_read_only_by_the_walk_is_caught(model):
    """Unobserved, without evidence, a position adds log 1 to log Z whatever its table holds; the
    walk draws from the table itself, so a sample must not come back."""
    bad = _tampered(model, "inputs", 1)
    with pytest.raises(ValueError, match=r"sample: NaN in the circuit's parameters \(inputs\[1\]\.logits\)"):
        bad.sample(num_samples=4)
    assert torch.isfinite(model.sample(num_samples=4).float()).all()      # the clean model, repeatedly
    assert model.sample(num_samples=4).shape == (4, 1, 4)


# ----------------------------------------------------------------------------- evidence and overflow
def test_evidence_is_checked_after_the_cast_to_the_circuits_dtype(model):
    """float64 1e39 is finite, float32 +inf: a check before the cast lets it through."""
    huge = torch.zeros(2, 4, 5, dtype=torch.float64)
    huge[0, 1, 2] = 1e39
    with pytest.raises(ValueError, match=r"soft_evidence holds values too large for the circuit's dtype "
                                         r"\(torch.float32\)"):
        model.log_prob(soft_evidence=huge)
    potentials = torch.zeros(2, model.layout.num_input_nodes, dtype=torch.float64)
    potentials[1, 3] = 1e39
    with pytest.raises(ValueError, match=r"node_potentials holds values too large"):
        model.sample(X, node_potentials=potentials)
    ids = torch.zeros(2, 4, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"soft_evidence\.log_potentials holds values too large"):
        model.marginals(soft_evidence=CandidateEvidence(ids, torch.full((2, 4, 2), 1e39, dtype=torch.float64)))
    assert torch.isfinite(model.log_prob(soft_evidence=-huge)).all()   # -1e39 → -inf in float32: legal


@pytest.mark.parametrize("query", list(QUERIES))
def test_overflow_without_a_bad_input_says_so(query, model):
    evidence = torch.full((2, 4, 5), 1e38)                             # finite; log Z is 4e38 > float32's max
    with pytest.raises(ValueError, match=rf"{query}: .* overflowed in the circuit's dtype \(torch.float32\).*"
                                         "dtype=torch.float64"):
        QUERIES[query](model, soft_evidence=evidence)
    wide = structures.compile(model.to_circuit(), dtype=torch.float64)
    assert torch.isfinite(wide.marginals(soft_evidence=evidence.double())).all()


def _prepared(model, which: str) -> Evidence:
    """An Evidence built directly (as a hot loop passes it), NaN in one field: never re-checked."""
    tokens, observed = torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool)
    if which == "soft_evidence":
        soft = torch.zeros(2, 4, 5)
        soft[1, 2, 3] = NAN
        return Evidence(tokens, observed, soft=soft)
    if which == "node_potentials":
        potentials = torch.zeros(2, model.layout.num_input_nodes)
        potentials[0, 4] = NAN
        return Evidence(tokens, observed, node_potentials=potentials)
    log_potentials = torch.zeros(2, 4, 2)
    log_potentials[0, 0, 1] = NAN
    return Evidence(tokens, observed, candidates=CandidateEvidence(torch.zeros(2, 4, 2, dtype=torch.long),
                                                                    log_potentials))


@pytest.mark.parametrize("query", list(QUERIES))
@pytest.mark.parametrize("which", ["soft_evidence", "node_potentials", "soft_evidence.log_potentials"])
def test_prepared_evidence_is_covered_by_the_output_check(model, query, which):
    with pytest.raises(ValueError, match=rf"{query}: NaN in {which.replace('.', '[.]')};"):
        QUERIES[query](model, x=_prepared(model, which))


# ----------------------------------------------------------------------------- -inf stays legal
def test_minus_inf_is_an_impossible_event_not_an_error(model):
    banned = torch.zeros(2, 4, 5)
    banned[:, :, 1:] = -INF                                              # only token 0 allowed
    assert torch.isfinite(model.log_prob(soft_evidence=banned)).all()
    marginals = model.marginals(soft_evidence=banned)
    assert torch.allclose(marginals[..., 0], torch.ones(2, 4))
    impossible = torch.full((2, 4, 5), -INF)
    assert torch.isneginf(model.log_prob(soft_evidence=impossible)).all()
    for query in ("marginals", "sample", "sample_and_marginals", "map"):
        with pytest.raises(ValueError, match="probability zero"):
            QUERIES[query](model, soft_evidence=impossible)


# ----------------------------------------------------------------------------- learning arguments
@pytest.mark.parametrize("kwargs, message", [
    (dict(pseudocount=INF), "pseudocount must be >= 0 and finite"),
    (dict(method="adam", lr=INF), "lr must be > 0 and finite"),
    (dict(seed=2 ** 70), "seed = 1180591620717411303424 is more than the limit"),
    (dict(step_size="1"), r"step_size must be in \(0, 1\], got '1'"),
])
def test_learning_arguments_that_would_give_nan_are_refused(model, kwargs, message):
    fresh = copy.deepcopy(model)
    with pytest.raises(ValueError, match=message):
        structures.fit(fresh, X, epochs=1, progress=False, **kwargs)
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_loading_log_params_refuses_nan_and_bad_shapes(model):
    """load() maps non-finite entries to zero probabilities: a NaN table would load as a plausible one."""
    fresh = copy.deepcopy(model)
    before = [p.detach().clone() for p in fresh.parameters()]
    good = fresh.log_params()
    cases = [(_log_params(fresh, "inputs", 3), r"log_params\.inputs\[3\] holds NaN or \+inf"),
             (LogParams(good.sums[:2], good.inputs), r"log_params\.sums has 2 tables, the circuit 4"),
             (LogParams(good.sums, [t[:1] for t in good.inputs]), r"log_params\.inputs\[0\] must be a tensor of shape")]
    for log_params, message in cases:
        with pytest.raises(ValueError, match=message):
            fresh.load_log_params(log_params)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))
