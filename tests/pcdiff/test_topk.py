"""The top-k CoDD layer is exact (brute force, float64): ``top_k = V`` is the full layer, ``top_k < V``
the restricted renormalized product; ``force_include`` keeps the ground truth in the support; the
decoder's top-k paths draw what the dense ones draw; bad arguments are refused."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import structures
from helpers.blocks import (LOGIT_KINDS, assert_matches_brute_force, brute_block_rows, brute_z, random_block,
                            reference_evidence)
from helpers.brute import assert_log_close, brute_free_joint, free_index, goodness_of_fit_pvalue
from helpers.properties import property_settings
from helpers.strategies import circuits, seeds
from helpers.stubs import StubBackbone, contextual
from pcdiff.codd import CoDDBlockDistribution, CoDDLayer
from pcdiff.decode import BlockDecoder, generate

exact = property_settings(20)
few = property_settings(6, derandomize=True)
SAMPLES, ALPHA = 8000, 1e-5


# ----------------------------------------------------------------------------- the layer with top-k
def restricted_evidence(dist, logits, masked, t, mask_id):
    """numpy evidence of p̂_k: the full log-softmax, -inf outside each masked position's candidates."""
    e = reference_evidence(logits.numpy(), masked.numpy(), t.numpy(), mask_id)
    inside = dist.evidence.scatter(torch.ones_like(dist.evidence.log_potentials), e.shape[-1]).numpy() > 0
    return np.where(masked.numpy()[..., None] & ~inside, -np.inf, e)


def check_restricted(circuit, dist, tokens, masked, e):
    """log_prob of every completion inside the support, log Z, and marginals against brute force."""
    assert_log_close(dist.log_normalizer.detach().numpy(), brute_z(circuit, tokens.numpy(), masked.numpy(), e))
    rows = [(xs[np.isfinite(lp)], lp[np.isfinite(lp)]) for xs, lp in brute_block_rows(circuit, tokens.numpy(),
                                                                                 masked.numpy(), e)]
    marg = assert_matches_brute_force(dist, circuit, tokens, masked, e, rows)
    np.testing.assert_allclose(dist.evidence.scatter(dist.marginals(over_candidates=True), e.shape[-1]).numpy(),
                               marg, atol=1e-12)


@exact
@given(circuits(), st.sampled_from(LOGIT_KINDS), seeds, st.data())
def test_topk_layer_is_brute_force_of_the_restricted_product(circuit, kind, seed, data):
    vocab = circuit.vocab_size
    k = data.draw(st.integers(1, vocab))
    logits, tokens, masked, t = random_block(np.random.default_rng(seed), circuit, 3, kind)
    inside = min(circuit.vocab_sizes) >= 2 and data.draw(st.booleans())
    mask_id = 0 if inside else vocab                                     # inside the vocabulary: banned
    tokens = torch.where(masked, mask_id, torch.where(tokens == 0, 1, tokens) if inside else tokens)
    model = structures.compile(circuit, dtype=torch.float64)
    dist = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, mask_id=mask_id, top_k=k)
    ids = dist.candidate_ids
    assert ids.shape == (3, circuit.num_vars, k)
    q = torch.log_softmax(logits / t.reshape(-1, 1, 1), -1).masked_fill(
        torch.arange(vocab) == mask_id, float("-inf"))                  # the candidates are a top-k set
    chosen = torch.zeros_like(q, dtype=torch.bool).scatter(-1, ids, True)
    worst_in = q.masked_fill(~chosen, float("inf")).amin(-1)
    best_out = q.masked_fill(chosen, float("-inf")).amax(-1)
    assert bool(((worst_in >= best_out) | (best_out == float("-inf")))[masked].all())
    e = restricted_evidence(dist, logits, masked, t, mask_id)
    if np.isneginf(brute_z(circuit, tokens.numpy(), masked.numpy(), e)).any():
        with pytest.raises(ValueError, match="probability zero"):
            dist.log_normalizer
        return
    check_restricted(circuit, dist, tokens, masked, e)
    result = dist.map()
    for b, (xs, logp) in enumerate(brute_block_rows(circuit, tokens.numpy(), masked.numpy(), e)):
        if bool(result.exact[b]):
            assert float(result.log_prob[b]) == pytest.approx(logp.max(), abs=1e-9)


@exact
@given(circuits(), st.sampled_from(LOGIT_KINDS), seeds)
def test_top_k_equal_to_the_vocabulary_is_the_full_layer(circuit, kind, seed):
    rng = np.random.default_rng(seed)
    logits, tokens, masked, t = random_block(rng, circuit, 3, kind)
    weight = torch.from_numpy(rng.uniform(0.2, 3.0, 3))            # a learned trust in the backbone, per row
    model = structures.compile(circuit, dtype=torch.float64)
    full = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, mask_id=circuit.vocab_size,
                                 backbone_weight=weight)
    every = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, mask_id=circuit.vocab_size,
                                  top_k=circuit.vocab_size, backbone_weight=weight)
    try:
        log_z = full.log_normalizer
    except ValueError:
        with pytest.raises(ValueError, match="probability zero"):
            every.log_normalizer
        return
    torch.testing.assert_close(every.log_normalizer, log_z, rtol=1e-10, atol=0)
    torch.testing.assert_close(every.marginals(), full.marginals(), rtol=0, atol=1e-10)
    sample = full.sample(generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(every.log_prob(sample), full.log_prob(sample), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(every.map().log_prob, full.map().log_prob, rtol=1e-10, atol=1e-10)


def _small_block(seed=0, batch=2, length=4, vocab=5):
    circuit = structures.hmm(length, 3, vocab, seed=seed)
    logits, tokens, masked, t = random_block(np.random.default_rng(seed), circuit, batch, "normal")
    return circuit, structures.compile(circuit, dtype=torch.float64), logits, tokens, masked, t


@pytest.mark.parametrize("k", [2, 5])
def test_topk_samples_follow_the_restricted_joint(k):
    circuit, model, logits, tokens, masked, t = _small_block(seed=3)
    dist = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, mask_id=5, top_k=k)
    e = restricted_evidence(dist, logits, masked, t, 5)
    generator = torch.Generator().manual_seed(4)
    for samples in (dist.sample((SAMPLES,), generator=generator),
                    dist.sample_with_marginals((SAMPLES,), generator=generator).sample):
        for b in range(len(tokens)):
            free = np.flatnonzero(masked[b].numpy())
            probs = brute_free_joint(circuit, tokens[b].numpy(), ~masked[b].numpy(), e[b])
            assert goodness_of_fit_pvalue(free_index(samples[:, b].numpy(), free, circuit.vocab_sizes), probs) > ALPHA
    order = dist.sample_any_order("margin", generator=generator)
    assert bool(((order.unsqueeze(-1) == dist.candidate_ids).any(-1)).all())


def test_sample_with_marginals_is_sample_and_marginals_in_one_pass():
    circuit, model, logits, tokens, masked, t = _small_block(seed=5)
    for k in (None, 3):
        dist = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, mask_id=5, top_k=k)
        sample, marg = dist.sample_with_marginals(generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(marg, dist.marginals(), rtol=0, atol=1e-12)
        assert torch.equal(sample, dist.sample(generator=torch.Generator().manual_seed(6)))   # same walk, same noise
        assert dist.sample_with_marginals(over_candidates=True).marginals.shape == dist.candidate_ids.shape
        slots = dist.candidate_slot(sample).unsqueeze(-1)
        assert torch.equal(dist.candidate_ids.gather(-1, slots).squeeze(-1), sample)


# ----------------------------------------------------------------------------- training: force_include
def test_force_include_puts_the_ground_truth_among_the_candidates():
    circuit, model, logits, tokens, masked, t = _small_block(seed=7, batch=4, vocab=8)
    x0 = torch.where(masked, torch.from_numpy(np.random.default_rng(8).integers(0, 8, tokens.shape)), tokens)
    plain = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, mask_id=8, top_k=2)
    forced = CoDDBlockDistribution(model, logits, tokens, masked, temperature=t, mask_id=8, top_k=2, force_include=x0)
    before, after = plain.candidate_ids, forced.candidate_ids
    had = (before == x0.unsqueeze(-1)).any(-1)
    assert bool(((after == x0.unsqueeze(-1)).any(-1) | ~masked).all())
    assert torch.equal(after[had & masked], before[had & masked])                 # nothing to force: unchanged
    replaced = masked & ~had
    assert bool(replaced.any())
    q = torch.gather(logits, -1, before)
    lowest = q.argmin(-1, keepdim=True)                                          # the least likely one goes
    kept_before = before.masked_fill(torch.zeros_like(before, dtype=torch.bool).scatter(-1, lowest, True), -1)
    for b, i in replaced.nonzero().tolist():
        assert set(after[b, i].tolist()) == {x0[b, i].item()} | (set(kept_before[b, i].tolist()) - {-1})
    with pytest.raises(ValueError, match="force_include"):
        plain.log_prob(x0)
    e = restricted_evidence(forced, logits, masked, t, 8)
    check_restricted(circuit, forced, tokens, masked, e)
    assert torch.isfinite(forced.log_prob(x0)).all()


def test_layer_top_k_trains_on_the_forced_support_and_k_equal_v_is_the_full_nll():
    layer = CoDDLayer.from_structure("hmm", 4, 12, num_states=3, mask_id=12, dtype=torch.float64, top_k=2)
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 8, 12, generator=gen, dtype=torch.float64)).requires_grad_(True)
    x0 = torch.randint(0, 12, (3, 8), generator=gen)
    masked = torch.rand(3, 8, generator=gen) < 0.7
    forced = layer.nll(logits, None, x0, masked)
    forced.sum().backward()
    assert torch.isfinite(forced).all() and torch.isfinite(logits.grad).all() and bool(logits.grad.abs().sum() > 0)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
    layer.top_k = None
    full = layer.nll(logits, None, x0, masked)
    assert bool((forced <= full + 1e-9).all())                                    # Z_k sums over fewer completions
    layer.top_k = 12
    torch.testing.assert_close(layer.nll(logits, None, x0, masked), full, rtol=1e-10, atol=1e-10)
    rebuilt = CoDDLayer.from_config(layer.config())
    assert rebuilt.top_k == 12 and "top_k=12" in repr(rebuilt)


@pytest.mark.parametrize("top_k", [0, -1, 13, 1.5, True, "4"])
def test_bad_top_k_is_refused(top_k):
    with pytest.raises(ValueError, match="top_k must be None or an int in"):
        CoDDLayer.from_structure("hmm", 4, 12, num_states=2, top_k=top_k)
    _, model, logits, tokens, masked, t = _small_block(vocab=12)
    with pytest.raises(ValueError, match="top_k"):
        CoDDBlockDistribution(model, logits, tokens, masked, t, top_k=top_k)
    layer = CoDDLayer(model)
    with pytest.raises(ValueError, match="top_k"):
        layer.top_k = top_k


def test_bad_force_include_is_refused():
    _, model, logits, tokens, masked, t = _small_block()
    x0 = torch.where(masked, 1, tokens)
    for kwargs_, error, message in [(dict(force_include=x0), ValueError, "force_include needs top_k"),
                                    (dict(top_k=2, force_include=x0[:, :2]), ValueError, "must have shape"),
                                    (dict(top_k=2, force_include=x0.float()), TypeError, "integer tensor"),
                                    (dict(top_k=2, force_include=x0 + 5 * masked), ValueError, r"outside \[0, 5\)")]:
        with pytest.raises(error, match=message):
            CoDDBlockDistribution(model, logits, tokens, masked, t, **kwargs_)


# ----------------------------------------------------------------------------- decoding with top-k
def test_joint_step_is_unchanged_by_the_single_pass():
    """BlockDecoder.joint now asks for sample and marginals together: same tokens as three passes."""
    circuit, model, logits, tokens, masked, t = _small_block(seed=9, batch=3)
    layer = CoDDLayer(model, mask_id=5)
    for rule in ("low_confidence", "margin", "entropy"):
        decoder = BlockDecoder(layer, mask_id=5, remasking=rule, codd="joint",
                               generator=torch.Generator().manual_seed(1))
        got = decoder.step(logits, logits, tokens, masked, 2)
        dist = layer.distribution(logits, None, tokens, masked)
        proposal = dist.sample(generator=torch.Generator().manual_seed(1))
        expected = decoder._commit(dist.marginals(), proposal, tokens, masked, 2)
        assert torch.equal(got, expected)


@pytest.mark.parametrize("codd", ["joint", "any_order"])
def test_generate_propagates_a_top_k_layer(codd):
    layer = CoDDLayer(structures.hmm(4, 3, 5, seed=0), mask_id=7, dtype=torch.float64, top_k=2)
    backbone = StubBackbone(contextual(11))
    seen, build = [], layer.distribution
    layer.distribution = lambda *args, **kw: seen.append(build(*args, **kw)) or seen[-1]
    prompt = torch.tensor([[0, 1, 2], [3, 4, 0]])
    out = generate(backbone, prompt, layer=layer, gen_length=8, block_length=4, steps=4, codd=codd,
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 11) and ((out >= 0) & (out < 5)).all()
    assert seen and all(d.top_k == 2 for d in seen)
    greedy = generate(backbone, prompt, layer=layer, gen_length=8, block_length=4, steps=8, codd="joint",
                      temperature=0)
    assert ((greedy >= 0) & (greedy < 5)).all()


@pytest.mark.parametrize("remasking, temperature, vocab, mask_id", [
    ("low_confidence", 1.0, 5, 7), ("margin", 1.0, 5, 7), ("entropy", 1.0, 5, 7), ("random", 1.0, 5, 7),
    ("low_confidence", 0, 5, 7), ("margin", 1.0, 6, 5)])                  # last: a mask id inside the vocabulary
def test_any_order_with_top_k_equal_to_the_vocabulary_draws_the_dense_tokens(remasking, temperature, vocab, mask_id):
    layer = CoDDLayer(structures.hmm(4, 3, vocab, seed=1), mask_id=mask_id, dtype=torch.float64)
    seen, build = [], layer.distribution
    layer.distribution = lambda *args, **kw: seen.append(build(*args, **kw)) or seen[-1]

    def run(top_k):
        layer.top_k = top_k
        backbone = StubBackbone(contextual(8, vocab), vocab_size=vocab, mask_id=mask_id)
        return generate(backbone, None, layer=layer, gen_length=8, block_length=4, steps=4, codd="any_order",
                        remasking=remasking, temperature=temperature, batch_size=32,
                        generator=torch.Generator().manual_seed(2))
    dense = run(None)
    assert {d.top_k for d in seen} == {None}
    seen.clear()
    assert torch.equal(run(vocab), dense)
    assert {d.top_k for d in seen} == {vocab}                             # the candidate path really ran


@pytest.mark.parametrize("temperature", [1.0, 0])
def test_any_order_with_top_k_commits_candidates_from_candidate_marginals(monkeypatch, temperature):
    k, vocab, batch, length = 2, 8, 64, 4
    layer = CoDDLayer(structures.hmm(length, 3, vocab, seed=2), mask_id=vocab, dtype=torch.float64, top_k=k)
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64)
    masked = torch.rand(batch, length, generator=gen) < 0.75
    masked[:, 0] = True
    tokens = torch.where(masked, vocab, torch.randint(0, vocab, (batch, length), generator=gen))
    shapes, marginals = [], layer.circuit.marginals

    def recording(*args, **kwargs):                                    # every marginals query of the circuit
        out = marginals(*args, **kwargs)
        shapes.append(tuple(out.shape))
        return out
    monkeypatch.setattr(layer.circuit, "marginals", recording)
    decoder = BlockDecoder(layer, mask_id=vocab, codd="any_order", temperature=temperature, generator=gen)
    out = decoder.step(logits, logits, tokens, masked, count=length)     # every masked position, one at a time
    assert len(shapes) == int(masked.sum(-1).max()) and set(shapes) == {(batch, length, k)}   # never [B, L, V]
    assert torch.equal(out[~masked], tokens[~masked]) and bool((out < vocab).all())
    candidates = logits.topk(k, dim=-1).indices                         # each position's k most likely tokens
    assert bool((out.unsqueeze(-1) == candidates).any(-1)[masked].all())
