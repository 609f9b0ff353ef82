"""The parallel decoders side by side, each rule on a small hand-computed case: the EB-sampler's
entropy bound, ReMDM's remasking, and the product with an autoregressive model (APD), exact by brute
force where it claims to be. Stub backbones record every input, so runs replay step by step."""
import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from helpers.stubs import MASK, V, StubBackbone, contextual, fixed, hmm_layer
from pcdiff.backbones import Backbone, BackboneOutput
from pcdiff.codd.rules import confidence, draw, entropy, gumbel_noise
from pcdiff.decode import BlockDecoder, commit_count, denoise, entropy_bound_count, generate
from pcdiff.decode.remask import remask_tokens


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class ARStub(Backbone):
    """A causal stub: logits at i = ``table[token at i - 1]`` (the mask id is the start symbol)."""

    def __init__(self, table: torch.Tensor, vocab_size: int = V, mask_id: int = MASK):
        super().__init__()
        self.table, self.vocab_size, self.mask_id, self.hidden_size = table, vocab_size, mask_id, 2
        self.calls: list[torch.Tensor] = []

    def compute(self, tokens):
        self.calls.append(tokens.clone())
        previous = torch.cat([torch.full_like(tokens[:, :1], self.mask_id), tokens[:, :-1]], dim=1)
        return BackboneOutput(self.table[previous].float(), torch.zeros(*tokens.shape, 2))


def random_ar(vocab: int = V, seed: int = 0, scale: float = 1.0) -> ARStub:
    return ARStub(scale * torch.randn(MASK + 1, vocab, generator=seeded(seed)), vocab)


def successor_ar() -> ARStub:
    """Deterministic: the token after t is t + 1 (mod V); the first token is 0."""
    table = torch.zeros(MASK + 1, V)
    table[[*range(V), MASK], [*((torch.arange(V) + 1) % V).tolist(), 0]] = 30.0
    return ARStub(table)


def newly_committed(states: list[torch.Tensor]) -> list[list[int]]:
    """Row 0's positions committed by each call, from the inputs of consecutive calls (and the result)."""
    return [((a == MASK) & (b != MASK))[0].nonzero().flatten().tolist() for a, b in zip(states, states[1:])]


def eb_reference(entropies: list[float], bound: float) -> int:
    """The EB rule as stated: sorted ascending, the longest prefix with sum minus max <= bound."""
    ranked, n = sorted(entropies), 0
    while n < len(ranked) and sum(ranked[:n + 1]) - max(ranked[:n + 1]) <= bound:
        n += 1
    return n


# ------------------------------------------------------------------------------------------ the one draw

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_drawn_ahead_is_the_noise_of_the_one_shot_draw(dtype):
    probs = torch.softmax(torch.randn(64, 3, 7, generator=seeded(1), dtype=dtype), -1)
    assert torch.equal(draw(probs, generator=seeded(5)), draw(probs, noise=gumbel_noise(probs, seeded(5))))
    assert torch.equal(confidence("entropy", probs), torch.exp(-entropy(probs)))      # one entropy for both
    assert math.isclose(entropy(torch.tensor([0.5, 0.5])).item(), math.log(2), rel_tol=1e-6)


# ------------------------------------------------------------------------------------------ entropy bound (EB)

def test_entropy_bound_commits_the_longest_prefix_within_the_bound():
    entropies = torch.tensor([[0.1, 0.2, 0.5, 1.0]])
    masked = torch.ones(1, 4, dtype=torch.bool)
    by_entropy = torch.exp(-entropies)                                   # the "entropy" rule's scores
    assert entropy_bound_count(by_entropy, entropies, masked, 0.35).tolist() == [3]    # 0, .1, .3 <= .35 < .8
    assert eb_reference([0.1, 0.2, 0.5, 1.0], 0.35) == 3
    assert entropy_bound_count(by_entropy, entropies, masked, 0.0).tolist() == [1]     # always one
    assert entropy_bound_count(by_entropy, entropies, masked, 0.8).tolist() == [4]
    shuffled = entropies[:, [3, 0, 2, 1]]                                 # positions do not matter, the order does
    assert entropy_bound_count(torch.exp(-shuffled), shuffled, masked, 0.35).tolist() == [3]
    # another rule's order (0.5 first): sum minus the running max: 0, .1, .3, .8
    assert entropy_bound_count(torch.tensor([[0.3, 0.2, 0.9, 0.1]]), entropies, masked, 0.35).tolist() == [3]


def test_entropy_bound_counts_masked_positions_only_and_the_schedule_is_the_floor():
    entropies = torch.tensor([[0.1, 0.0, 0.5, 1.0], [0.3, 0.3, 0.3, 0.3]])
    masked = torch.tensor([[True, False, True, True], [False] * 4])
    scores = torch.exp(-entropies)
    assert entropy_bound_count(scores, entropies, masked, 0.35).tolist() == [2, 0]       # .1, .5: spent .1
    assert commit_count(1, scores, masked, None, entropies, 0.35).tolist() == [2, 0]
    assert commit_count(torch.tensor([3, 2]), scores, masked, None, entropies, 0.35).tolist() == [3, 0]


EB_PROBS = torch.tensor([[0.80, 0.20], [0.98, 0.02], [0.50, 0.50], [0.95, 0.05]])   # entropies .50 .10 .69 .20


def test_entropy_bound_decodes_by_the_rule_with_steps_as_an_upper_bound():
    table = torch.cat([EB_PROBS, torch.zeros(4, V - 2)], dim=1).log()
    assert eb_reference(entropy(EB_PROBS).tolist(), 0.35) == 3
    backbone = StubBackbone(fixed(table))
    out = generate(backbone, None, gen_length=4, block_length=4, steps=4, remasking="entropy", entropy_bound=0.35,
                   temperature=0)
    assert newly_committed([*backbone.calls, out]) == [[0, 1, 3], [2]]    # the block ends after 2 calls, not 4
    assert out[0].tolist() == [0, 0, 0, 0]
    tight = StubBackbone(fixed(table))
    generate(tight, None, gen_length=4, block_length=4, steps=2, remasking="entropy", entropy_bound=0.0, temperature=0)
    assert newly_committed([*tight.calls, out]) == [[1, 3], [0, 2]]      # the schedule's 2 + 2 is the floor


@pytest.mark.parametrize("codd", ["joint", "any_order"])
def test_entropy_bound_reads_the_layers_exact_marginals(codd):
    layer, backbone = hmm_layer(4), StubBackbone(contextual(4))
    out = generate(backbone, None, layer=layer, gen_length=4, block_length=4, steps=4, codd=codd,
                   remasking="entropy", entropy_bound=0.9, batch_size=32, generator=seeded(2))
    first, logits = backbone.calls[0], backbone.logits_fn(backbone.calls[0]).double()
    marginals = layer.distribution(logits, None, first, first == MASK, temperature=1.0).marginals()
    expected = [max(1, eb_reference(row, 0.9)) for row in entropy(marginals).tolist()]
    states = [*backbone.calls, out]
    committed = ((states[0] == MASK) & (states[1] != MASK)).sum(-1).tolist()
    assert committed == expected
    factorized = [max(1, eb_reference(row, 0.9)) for row in entropy(torch.softmax(logits, -1)).tolist()]
    assert committed != factorized                                       # the backbone's entropies would differ
    assert (out != MASK).all()


# ------------------------------------------------------------------------------------------ remasking (ReMDM)

def test_remask_tokens_masks_eligible_positions_with_probability_sigma():
    tokens = torch.zeros(20000, 2, dtype=torch.long)
    eligible = torch.tensor([True, False]).expand(20000, -1)
    out, again = remask_tokens(tokens, eligible, 0.3, MASK, seeded())
    assert not again[:, 1].any() and torch.equal(out == MASK, again)
    assert abs(again[:, 0].double().mean().item() - 0.3) < 0.015
    assert not remask_tokens(tokens, eligible, 0.0, MASK, seeded())[1].any()


def decoders(layer=None):
    return {"off": {}, "joint": dict(layer=layer, codd="joint"), "any_order": dict(layer=layer, codd="any_order"),
            "ar_product": dict(codd="ar_product", ar_model=random_ar(), ar_weight=0.5)}


@pytest.mark.parametrize("mode", ["off", "joint", "any_order", "ar_product"])
def test_remask_zero_is_todays_decoding_token_for_token(mode):
    kwargs = decoders(hmm_layer(4))[mode]
    prompt = torch.tensor([[0, 1], [2, 3], [4, 4]])

    def run(**extra):
        return generate(StubBackbone(contextual(10)), prompt, gen_length=8, block_length=4, steps=6,
                        generator=seeded(3), **kwargs, **extra)
    assert torch.equal(run(remask=0.0), run())


@pytest.mark.parametrize("mode", ["off", "joint", "any_order", "ar_product"])
def test_remask_never_touches_given_positions_and_ends_decoded_within_the_steps(mode, monkeypatch):
    steps_seen, step = [], BlockDecoder.step

    def recording(self, logits, hidden, tokens, masked, count, context=None, return_committed=False):
        out, committed = step(self, logits, hidden, tokens, masked, count, context, return_committed=True)
        assert torch.equal(committed, masked & (out != MASK))     # what it says it committed is what it unmasked
        steps_seen.append((masked.sum(-1), torch.as_tensor(count).expand(masked.shape[:1]), (out == MASK).sum(-1)))
        return (out, committed) if return_committed else out
    monkeypatch.setattr(BlockDecoder, "step", recording)
    backbone = StubBackbone(contextual(10))
    x = torch.full((32, 10), MASK)
    x[:, :2] = torch.tensor([0, 1])                                       # a prompt
    x[:, 4] = 3                                                           # a given position inside a block
    given = x != MASK
    out = denoise(backbone, x, start=2, block_length=4, steps=6, remask=0.5, generator=seeded(1),
                  **decoders(hmm_layer(4))[mode])
    assert (out != MASK).all() and len(backbone.calls) == 6
    assert all(torch.equal(call[given], x[given]) for call in [*backbone.calls, out])
    # more masks at a step than the step before left: positions were masked again in between
    assert any(bool((steps_seen[k][0] > steps_seen[k - 1][2]).any()) for k in (1, 2, 4, 5))
    # each step commits its schedule plus what was re-masked: the masks left follow the schedule
    schedules = [[1, 1, 1], [2, 1, 1]]                                    # block 0 holds the given position
    for k, (masked, count, left) in enumerate(steps_seen):
        assert torch.equal(left, masked - count)
        schedule = schedules[k // 3]
        assert (left == sum(schedule) - sum(schedule[:k % 3 + 1])).all()


# ------------------------------------------------------------------------------------------ AR product (APD)

@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_ar_weight_zero_is_the_factorized_proposal(temperature):
    prompt = torch.tensor([[0, 1, 2], [3, 4, 0]]).repeat(8, 1)
    kwargs = dict(gen_length=8, block_length=4, steps=2, temperature=temperature)
    factorized = generate(StubBackbone(contextual(11)), prompt, generator=seeded(4), **kwargs)
    product, calls = generate(StubBackbone(contextual(11)), prompt, codd="ar_product", ar_model=random_ar(),
                              ar_weight=0.0, generator=seeded(4), return_calls=True, **kwargs)
    assert torch.equal(product, factorized) and calls == (2, 0)


@pytest.mark.parametrize("steps, temperature", [(2, 1.0), (6, 1.0), (6, 0.0), (2, 0.0)])
def test_ar_weight_one_is_the_ar_models_continuation(steps, temperature):
    prompt = torch.tensor([[2], [4]])
    out = generate(StubBackbone(contextual(7)), prompt, gen_length=6, block_length=3, steps=steps,
                   temperature=temperature, codd="ar_product", ar_model=successor_ar(), ar_weight=1.0,
                   generator=seeded())
    assert out.tolist() == [[2, 3, 4, 0, 1, 2, 3], [4, 0, 1, 2, 3, 4, 0]]
    start = generate(StubBackbone(contextual(3)), None, gen_length=3, block_length=3, steps=1, batch_size=2,
                     codd="ar_product", ar_model=successor_ar(), ar_weight=1.0)
    assert start.tolist() == [[0, 1, 2]] * 2                              # the start symbol's continuation


def test_ar_product_commits_leftmost_first_and_reads_given_tokens():
    backbone = StubBackbone(contextual(4))
    x = torch.tensor([[MASK, 2, MASK, MASK]])
    out, calls = denoise(backbone, x, block_length=4, steps=3, codd="ar_product", ar_model=successor_ar(),
                         ar_weight=1.0, return_calls=True)
    assert newly_committed([*backbone.calls, out]) == [[0], [2], [3]]
    assert out.tolist() == [[0, 2, 3, 4]] and calls == (3, 3)             # one AR pass per drawn position


def test_ar_passes_are_counted_apart_from_backbone_calls():
    ar = random_ar()
    _, calls = generate(StubBackbone(contextual(8)), None, gen_length=8, block_length=4, steps=4, batch_size=3,
                        codd="ar_product", ar_model=ar, generator=seeded(), return_calls=True)
    assert calls == (4, 8) and len(ar.calls) == 8
    assert [c.shape[1] for c in ar.calls] == [1, 2, 3, 4, 5, 6, 7, 8]    # the prefix up to each drawn position


def product_table(q_logits, ar_table, prompt_token, weight, temperature):
    """Every assignment of a 3-position block and its probability under the chain of renormalized
    products r_i ∝ q_i^(1-w) p_AR(· | x_{i-1})^w, by brute force."""
    def softmax(z):
        z = np.asarray(z, dtype=np.float64) / temperature
        e = np.exp(z - z.max())
        return e / e.sum()
    outcomes = list(itertools.product(range(3), repeat=3))
    probs = []
    for outcome in outcomes:
        p, previous = 1.0, prompt_token
        for i, token in enumerate(outcome):
            r = softmax(q_logits[i + 1]) ** (1 - weight) * softmax(ar_table[previous]) ** weight
            p, previous = p * r[token] / r.sum(), token
        probs.append(p)
    return outcomes, np.array(probs)


@pytest.mark.parametrize("weight, temperature, steps", [(0.5, 1.0, 1), (0.5, 1.0, 3), (0.7, 0.6, 2), (1.0, 1.0, 1)])
def test_ar_product_draws_the_normalized_product_chain(weight, temperature, steps):
    q_logits = 1.5 * torch.randn(4, 3, generator=seeded(7))
    ar = random_ar(vocab=3, seed=8, scale=1.5)
    prompt = torch.ones(6000, 1, dtype=torch.long)
    backbone = StubBackbone(fixed(q_logits), vocab_size=3)
    out = generate(backbone, prompt, gen_length=3, block_length=3, steps=steps, codd="ar_product", ar_model=ar,
                   ar_weight=weight, temperature=temperature, generator=seeded(9))[:, 1:]
    outcomes, probs = product_table(q_logits.numpy(), ar.table.numpy(), 1, weight, temperature)
    index = {o: k for k, o in enumerate(outcomes)}
    counts = np.bincount([index[tuple(s)] for s in out.tolist()], minlength=len(outcomes))
    assert chisquare(counts, probs * len(out)).pvalue > 1e-3


def test_ar_product_never_draws_a_mask_id_inside_the_vocabulary():
    table = torch.zeros(8, V)
    table[:, 4] = 9.0                                                     # the AR model favours token 4 = the mask id
    ar = ARStub(table, mask_id=4)
    out = generate(StubBackbone(contextual(8), mask_id=4), None, gen_length=8, block_length=4, steps=4,
                   batch_size=8, codd="ar_product", ar_model=ar, ar_weight=1.0, generator=seeded())
    assert not (out == 4).any()


# ------------------------------------------------------------------------------------------ argument checks

@pytest.mark.parametrize("kwargs, match", [
    (dict(entropy_bound=-0.1), "entropy_bound"),
    (dict(entropy_bound="1"), "entropy_bound"),
    (dict(entropy_bound=0.5, remasking="random"), "random"),
    (dict(entropy_bound=0.5, threshold=0.9), "not both"),
    (dict(remask=1.0), "remask"), (dict(remask=-0.1), "remask"), (dict(remask="0.5"), "remask"),
    (dict(codd="ar_product"), "ar_model"),
    (dict(ar_model="ar"), "ar_model is read only with codd='ar_product'"),
    (dict(codd="ar_product", ar_model="ar", ar_weight=1.5), "ar_weight"),
    (dict(codd="ar_product", ar_model="ar", threshold=0.9), "threshold"),
    (dict(codd="ar_product", ar_model="ar", entropy_bound=0.5), "entropy_bound"),
    (dict(codd="ar_product", ar_model="ar", pc_frac=0.5), "pc_frac"),
    (dict(codd="ar_product", ar_model="vocab3"), "vocab_size"),
    (dict(codd="ar_product", ar_model="mask0"), "mask_id"),
    (dict(codd="ar_product", ar_model="short"), "block_length"),
    (dict(return_calls="yes"), "return_calls"),
    (dict(steps=1), r"steps must be an int in \[2 \(one per block\)"),
])
def test_new_knobs_are_checked_by_name(kwargs, match):
    models = {"ar": random_ar(), "vocab3": random_ar(vocab=3), "mask0": ARStub(torch.zeros(8, V), mask_id=0),
              "short": random_ar()}
    models["short"].block_length = 4
    if isinstance(kwargs.get("ar_model"), str):
        kwargs = {**kwargs, "ar_model": models[kwargs["ar_model"]]}
    with pytest.raises(ValueError, match=match):
        generate(StubBackbone(contextual(8)), None, **{"gen_length": 8, "block_length": 4, "steps": 4, **kwargs})

