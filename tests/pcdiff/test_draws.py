"""One draw primitive: the same seed gives the same tokens on every path that makes the same draw
(the distribution's queries, the decoder's steps, dense and top-k with k = V), and the rules have
one vocabulary."""
import pytest
import torch

import structures
from helpers.stubs import StubBackbone, contextual
from pcdiff.codd import REMASKING, CoDDBlockDistribution, CoDDLayer
from pcdiff.codd.rules import confidence, draw
from pcdiff.decode import BlockDecoder, generate

VOCAB, MASK = 5, 7


def block(seed=0, batch=16, length=4):
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(batch, length, VOCAB, generator=g, dtype=torch.float64)
    masked = torch.rand(batch, length, generator=g) < 0.7
    masked[:, 0] = True
    tokens = torch.where(masked, MASK, torch.randint(0, VOCAB, (batch, length), generator=g))
    return logits, tokens, masked


def distributions(top_k):
    model = structures.compile(structures.hmm(4, 3, VOCAB, seed=1), dtype=torch.float64)
    logits, tokens, masked = block()
    return CoDDBlockDistribution(model, logits, tokens, masked, temperature=0.9, mask_id=MASK, top_k=top_k)


def seeded():
    return torch.Generator().manual_seed(5)


@pytest.mark.parametrize("top_k", [None, VOCAB])
def test_a_joint_sample_is_the_same_draw_alone_or_with_its_marginals(top_k):
    dist = distributions(top_k)
    assert torch.equal(dist.sample(generator=seeded()), dist.sample_with_marginals(generator=seeded()).sample)
    assert torch.equal(dist.sample((3,), seeded()), dist.sample_with_marginals((3,), seeded()).sample)


def test_top_k_equal_to_the_vocabulary_draws_the_dense_tokens_on_every_query():
    dense, restricted = distributions(None), distributions(VOCAB)
    assert torch.equal(dense.sample((4,), seeded()), restricted.sample((4,), seeded()))
    for rule in REMASKING:
        assert torch.equal(dense.sample_any_order(rule, seeded()), restricted.sample_any_order(rule, seeded()))
    assert torch.equal(dense.sample_any_order("margin", seeded(), budget=1, greedy=True),
                       restricted.sample_any_order("margin", seeded(), budget=1, greedy=True))


@pytest.mark.parametrize("codd", ["joint", "any_order"])
def test_generate_draws_the_same_tokens_dense_and_with_top_k_equal_to_the_vocabulary(codd):
    layer = CoDDLayer(structures.hmm(4, 3, VOCAB, seed=0), mask_id=MASK, dtype=torch.float64)

    def run(top_k):
        layer.top_k = top_k
        return generate(StubBackbone(contextual(8)), None, layer=layer, gen_length=8, block_length=4, steps=4,
                        codd=codd, remasking="margin", batch_size=16, generator=seeded())
    assert torch.equal(run(None), run(VOCAB))


@pytest.mark.parametrize("rule", REMASKING)
def test_the_decoders_any_order_step_is_the_distributions_any_order_sampler(rule):
    layer = CoDDLayer(structures.hmm(4, 3, VOCAB, seed=2), mask_id=MASK, dtype=torch.float64)
    logits, tokens, masked = block(seed=3)
    decoder = BlockDecoder(layer, mask_id=MASK, remasking=rule, codd="any_order", generator=seeded())
    stepped = decoder.step(logits, logits, tokens, masked, count=2)
    direct = layer.distribution(logits, None, tokens, masked, temperature=1.0).sample_any_order(
        rule, seeded(), budget=2)
    assert torch.equal(stepped, direct)
    assert bool(((stepped != MASK) & masked).sum(-1).le(2).all())


def test_the_factorized_step_draws_with_the_one_primitive():
    logits, tokens, masked = block(seed=4)
    decoder = BlockDecoder(None, mask_id=MASK, remasking="random", generator=seeded())
    got = decoder.step(logits, logits, tokens, masked, count=4)          # commits every masked position
    probs = torch.softmax(logits, -1)
    expected = torch.where(masked, draw(probs, generator=seeded()), tokens)
    assert torch.equal(got, expected)


def test_draw_is_exact_and_never_draws_a_zero_probability_token():
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2], dtype=torch.float64)
    tokens = draw(probs.expand(40000, -1), generator=seeded())
    freq = torch.bincount(tokens, minlength=4).double() / len(tokens)
    assert freq[1] == 0 and torch.allclose(freq, probs, atol=0.01)
    assert torch.equal(draw(probs.expand(3, -1), greedy=True), torch.zeros(3, dtype=torch.long))


def test_the_rules_rank_before_a_draw_by_the_most_likely_token():
    probs = torch.tensor([[[0.6, 0.4], [0.9, 0.1]]])
    assert torch.equal(confidence("low_confidence", probs), torch.tensor([[0.6, 0.9]]))
    assert torch.equal(confidence("low_confidence", probs, torch.tensor([[1, 1]])), torch.tensor([[0.4, 0.1]]))
    with pytest.raises(ValueError, match="remasking must be one of"):
        confidence("confidence", probs)
    with pytest.raises(ValueError, match="order must be one of"):
        distributions(None).sample_any_order("confidence")
