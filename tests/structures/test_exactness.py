"""The compiled circuit is exact: every query on random circuits of every kind, with random masks and
soft evidence (tame, ±1e4, 1e-12, -inf), equals brute-force enumeration (tests/brute.py)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import structures
from helpers.brute import assert_log_close, brute_log_prob, brute_marginals, brute_max_product, evaluate
from helpers.properties import EXAMPLES, exact
from helpers.queries import brute_query_rows, compiled, kwargs, random_sum_tables, reference, row_tables
from helpers.strategies import POTENTIAL_KINDS, Query, circuits, evidence_array, queries, seeds
from structures.queries import make_evidence


# ----------------------------------------------------------------------------- exact queries
@exact
@given(circuits(), st.data())
def test_log_prob_matches_brute_force(circuit, data):
    q = data.draw(queries(circuit))
    model = compiled(circuit)
    assert_log_close(model.log_prob(**kwargs(q)).detach().numpy(), brute_query_rows(circuit, model, q))


@exact
@given(circuits(), st.data())
def test_all_unobserved_is_the_log_normalizer(circuit, data):
    q = data.draw(queries(circuit))
    q.observed[:] = False
    model = compiled(circuit)
    assert_log_close(model.log_prob(**kwargs(q)).detach().numpy(), brute_query_rows(circuit, model, q))
    # Without evidence the circuit is normalized: log Z = 0.
    assert_log_close(model.log_prob(observed=torch.from_numpy(q.observed)).detach().numpy(), np.zeros(q.batch), 1e-12)


@exact
@given(circuits(), st.data())
def test_marginals_match_brute_force(circuit, data):
    q = data.draw(queries(circuit))
    model = compiled(circuit)
    possible = np.isfinite(brute_query_rows(circuit, model, q))
    if not possible.all():
        with pytest.raises(ValueError, match="probability zero"):
            model.marginals(**kwargs(q))
        q = q.rows(possible)
        if q.batch == 0:
            return
    np.testing.assert_allclose(model.marginals(**kwargs(q)).numpy(),
                               brute_query_rows(circuit, model, q, brute_marginals), rtol=0, atol=1e-9)


@exact
@given(circuits(), st.data())
def test_map_is_the_max_product_completion(circuit, data):
    q = data.draw(queries(circuit))
    model = compiled(circuit)
    best = brute_query_rows(circuit, model, q, brute_max_product)
    if np.isneginf(best).any():
        with pytest.raises(ValueError, match="probability zero"):
            model.map(**kwargs(q))
        return
    assignment, score = (t.numpy() for t in model.map(**kwargs(q)))
    assert np.array_equal(assignment[q.observed], q.x[q.observed])
    assert np.all((assignment >= 0) & (assignment < np.array(circuit.vocab_sizes)))
    root_max = model.upward(make_evidence(model, **kwargs(q)), semiring="max")[model.layout.root][:, 0]
    assert_log_close(root_max.detach().numpy(), best)
    everything = np.ones(circuit.num_vars, dtype=bool)
    for b in range(q.batch):
        ref, _, _, soft = reference(circuit, model, q, b)
        evidence = 0.0 if soft is None else soft[np.arange(circuit.num_vars), assignment[b]].sum()
        with np.errstate(divide="ignore"):
            value = np.log(evaluate(ref, assignment[b:b + 1], semiring="max")[0]) + evidence
        assert_log_close(value, best[b])                                    # the completion attains the max
        assert_log_close(score[b], brute_log_prob(ref, assignment[b], everything, soft))


# ----------------------------------------------------------------------------- precision and edge cases
def _scale(q: Query) -> np.ndarray:
    """Per row, the magnitude of the log-potentials a float32 computation has to carry."""
    def magnitude(a):                                  # largest finite |entry| along the last axis
        return np.where(np.isfinite(a), np.abs(a), 0.0).max(-1)
    soft = magnitude(q.soft).sum(-1) if q.soft is not None else 0.0
    potentials = q.x.shape[1] * magnitude(q.potentials) if q.potentials is not None else 0.0
    return 1.0 + soft + potentials + np.zeros(q.batch)


@exact
@given(circuits(), st.data())
def test_float32_agrees_with_float64(circuit, data):
    q = data.draw(queries(circuit, potential_kinds=POTENTIAL_KINDS + ("huge",)))
    m64, m32 = compiled(circuit), compiled(circuit, torch.float32)
    lp64 = m64.log_prob(**kwargs(q)).detach().numpy()
    lp32 = m32.log_prob(**kwargs(q, torch.float32)).detach().double().numpy()
    assert np.array_equal(np.isneginf(lp32), np.isneginf(lp64)) and not np.isnan(lp32).any()
    finite = np.isfinite(lp64)
    tol = (1e-4 + 1e-6 * _scale(q)) * np.maximum(1, np.abs(lp64))
    assert np.all(np.abs(lp32[finite] - lp64[finite]) <= tol[finite])
    if finite.all():
        mg64 = m64.marginals(**kwargs(q)).numpy()
        mg32 = m32.marginals(**kwargs(q, torch.float32)).double().numpy()
        assert np.all(np.abs(mg32 - mg64) <= (1e-4 + 1e-6 * _scale(q))[:, None, None])


@settings(exact, max_examples=EXAMPLES * 5 // 8)
@given(circuits(), st.data(), st.sampled_from([torch.float32, torch.float64]))
def test_impossible_evidence_is_minus_inf_and_refused(circuit, data, dtype):
    q = data.draw(queries(circuit))
    position = data.draw(st.integers(0, circuit.num_vars - 1))
    q.soft = evidence_array(np.random.default_rng(data.draw(seeds)), "neg_inf", q.batch, circuit.vocab_sizes,
                            impossible_at=position)
    model = compiled(circuit, dtype)
    lp = model.log_prob(**kwargs(q, dtype))
    assert torch.isneginf(lp).all(), lp
    for query in (model.marginals, model.map, lambda **a: model.sample(**a, num_samples=3)):
        with pytest.raises(ValueError, match="probability zero"):
            query(**kwargs(q, dtype))


@exact
@given(circuits(), st.data(), st.sampled_from(["huge", "neg_inf", "normal"]))
def test_gradients_are_finite_with_extreme_evidence(circuit, data, kind):
    q = data.draw(queries(circuit, kinds=(kind,), potential_kinds=("none", kind)))
    impossible = evidence_array(np.random.default_rng(0), "neg_inf", 1, circuit.vocab_sizes, impossible_at=0)
    q = Query(*(None if a is None else np.concatenate([a, a[:1]]) for a in (q.x, q.observed, q.soft, q.potentials)))
    q.soft[-1] = impossible[0]                                       # one extra row, with impossible evidence
    args = kwargs(q)
    for name in ("soft_evidence", "node_potentials"):
        if args[name] is not None:
            args[name].requires_grad_(True)
    model = compiled(circuit)
    lp = model.log_prob(**args)
    assert torch.isneginf(lp[-1])
    lp.sum().backward()
    leaves = [args["soft_evidence"], args["node_potentials"], *model.parameters()]
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves if t is not None)
    possible = torch.isfinite(lp).nonzero().flatten()
    if len(possible):
        # The gradient w.r.t. the evidence is the posterior marginal (the circuit's differential).
        args = {k: None if v is None else v.detach()[possible] for k, v in args.items()}
        torch.testing.assert_close(leaves[0].grad[possible], model.marginals(**args), rtol=0, atol=1e-9)


@exact
@given(circuits(), st.data())
def test_per_sample_sum_tables_match_row_by_row(circuit, data):
    q = data.draw(queries(circuit, kinds=("none", "normal", "neg_inf")))
    model = compiled(circuit)
    inputs = [t.detach() for t in model.log_params().inputs]
    tables = random_sum_tables(model, data, q.batch)
    batched = structures.LogParams(tables, inputs)
    args = kwargs(q)
    lp = model.log_prob(**args, log_params=batched).detach().numpy()
    assert_log_close(lp, brute_query_rows(circuit, model, q, sum_tables=tables))
    root_max = model.upward(make_evidence(model, **args), batched, "max")[model.layout.root][:, 0].detach().numpy()
    assert_log_close(root_max, brute_query_rows(circuit, model, q, brute_max_product, sum_tables=tables))
    for b in range(q.batch):                      # each row alone, with its own [K, C] tables
        row_args = {k: None if v is None else v[b:b + 1] for k, v in args.items()}
        own = structures.LogParams(row_tables(tables, b), inputs)
        assert_log_close(lp[b:b + 1], model.log_prob(**row_args, log_params=own).detach().numpy())
        own_max = model.upward(make_evidence(model, **row_args), own, "max")[model.layout.root][:, 0]
        assert_log_close(root_max[b:b + 1], own_max.detach().numpy())
    if np.isfinite(lp).all():
        marginals = model.marginals(**args, log_params=batched).numpy()
        np.testing.assert_allclose(marginals, brute_query_rows(circuit, model, q, brute_marginals, sum_tables=tables),
                                   rtol=0, atol=1e-9)
        assignment, score = model.map(**args, log_params=batched)
        for b in range(q.batch):
            ref, _, _, soft = reference(circuit, model, q, b, row_tables(tables, b))
            assert_log_close(score[b].item(), brute_log_prob(ref, assignment[b].numpy(),
                                                             np.ones(circuit.num_vars, dtype=bool), soft))


# ----------------------------------------------------------------------------- learning
@settings(exact, max_examples=EXAMPLES * 5 // 8)
@given(circuits(), st.data())
def test_em_step_never_decreases_the_likelihood(circuit, data):
    model = compiled(circuit)
    generator = torch.Generator().manual_seed(data.draw(seeds))
    x = model.sample(num_samples=64, generator=generator)[:, 0]                       # [N, n], all possible
    with torch.no_grad():                                                              # move away from the optimum
        for p in model.parameters():
            p.add_(2 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    before = model.log_prob(x).mean().item()
    for _ in range(3):
        reported = structures.em_step(model, x, step_size=1.0).item()
        assert reported == pytest.approx(before, rel=1e-12, abs=1e-12)
        after = model.log_prob(x).mean().item()
        assert after >= before - 1e-9 * max(1.0, abs(before))
        before = after


@pytest.mark.parametrize("method", ["adam", "em"])
def test_fit_improves_the_likelihood(method):
    truth = compiled(structures.hmm(5, 3, 4, seed=11))
    data = truth.sample(num_samples=256, generator=torch.Generator().manual_seed(0))[:, 0]
    model = compiled(structures.hmm(5, 3, 4, seed=12))
    start = model.log_prob(data).mean().item() / 5
    history = structures.fit(model, data, epochs=4, batch_size=64, method=method, lr=0.1, progress=False)
    assert len(history) == 4 and history[-1] > start + 0.01
    assert history[-1] == pytest.approx(model.log_prob(data).mean().item() / 5)


@exact
@given(circuits(), st.data())
def test_a_root_only_pass_keeps_the_root_alone_and_agrees_with_the_full_pass(circuit, data):
    q = data.draw(queries(circuit))
    model = compiled(circuit)
    args = kwargs(q)
    evidence = make_evidence(model, args["x"], args["observed"], args["soft_evidence"], args["node_potentials"])
    full = model.upward(evidence)
    lean = model.upward(evidence, keep_all=False)
    root = model.layout.root
    assert all(v is None for g, v in enumerate(lean) if g != root)
    assert all(v is not None for v in full)
    torch.testing.assert_close(lean[root], full[root], rtol=0, atol=0)
