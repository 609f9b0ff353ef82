"""The semi-autoregressive sampler: schedule, remasking rules, threshold, and the CoDD modes.

Stub backbones give known logits and record every input they see, so the tests can replay the
decoding step by step. The CoDD modes' distributions are in test_sampler_codd_modes.py.
"""
from __future__ import annotations

import pytest
import torch

import structures
from helpers.stubs import MASK, V, StubBackbone, contextual, fixed, hmm_layer
from pcdiff.backbones import TinyDiffusionTransformer
from pcdiff.codd import CoDDLayer
from pcdiff.codd.rules import confidence
from pcdiff.decode import generate, select_top, split_evenly


def replay(backbone: StubBackbone, final: torch.Tensor) -> list[torch.Tensor]:
    """The sequence before each backbone call, then the result."""
    return [*backbone.calls, final]


# ------------------------------------------------------------------------------------------ schedule

def test_split_evenly_is_llada_schedule():
    assert split_evenly(10, 4) == [3, 3, 2, 2]
    assert split_evenly(4, 4) == [1, 1, 1, 1]
    assert sum(split_evenly(32, 7)) == 32


@pytest.mark.parametrize("codd", ["off", "joint", "any_order"])
@pytest.mark.parametrize("remasking", ["low_confidence", "margin", "entropy", "random"])
def test_each_position_decoded_once_in_block_order(codd, remasking):
    prompt = torch.tensor([[0, 1, 2], [3, 4, 0]])
    backbone = StubBackbone(contextual(3 + 8))
    layer = hmm_layer(4) if codd != "off" else None
    out = generate(backbone, prompt, layer=layer, gen_length=8, block_length=4, steps=6, remasking=remasking,
                   codd=codd, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 11) and torch.equal(out[:, :3], prompt)
    assert ((out >= 0) & (out < V)).all()
    states = replay(backbone, out)
    assert len(backbone.calls) == 6                                   # steps split 3 + 3 over the blocks
    expected = [2, 1, 1, 2, 1, 1]                                     # 4 positions over 3 steps, per block
    for t, (before, after) in enumerate(zip(states, states[1:])):
        decided = before != MASK
        assert torch.equal(after[decided], before[decided])          # committed positions never change
        new = (before == MASK) & (after != MASK)
        assert (new.sum(-1) == expected[t]).all()
        lo = 3 + 4 * (t // 3)
        assert not new[:, :lo].any() and not new[:, lo + 4:].any()   # only the current block
        assert (before[:, lo + 4:] == MASK).all()                    # later blocks still masked


def test_uneven_steps_and_batch_size_without_prompt():
    backbone = StubBackbone(contextual(8))
    out = generate(backbone, None, gen_length=8, block_length=4, steps=5, batch_size=3,
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 8) and (out != MASK).all()
    states = replay(backbone, out)
    counts = [int(((a == MASK) & (b != MASK)).sum(-1)[0]) for a, b in zip(states, states[1:])]
    assert counts == [2, 1, 1, 2, 2]                                  # blocks get 3 and 2 steps


# ------------------------------------------------------------------------------------------ remasking rules

# three positions whose order differs under each rule (V = 5)
PROBS = torch.tensor([[0.60, 0.25, 0.05, 0.05, 0.05],     # top-1 .60, margin .35,  entropy 1.10
                      [0.55, 0.45, 0.00, 0.00, 0.00],     # top-1 .55, margin .10,  entropy 0.69
                      [0.58, 0.105, 0.105, 0.105, 0.105]])  # top-1 .58, margin .475, entropy 1.26


def test_confidence_scores():
    tokens = torch.zeros(1, 3, dtype=torch.long)
    probs = PROBS.unsqueeze(0)
    torch.testing.assert_close(confidence("low_confidence", probs, tokens)[0], PROBS[:, 0])
    torch.testing.assert_close(confidence("margin", probs, tokens)[0], torch.tensor([0.35, 0.10, 0.475]))
    entropy = -(PROBS * PROBS.clamp_min(1e-30).log()).sum(-1)
    torch.testing.assert_close(confidence("entropy", probs, tokens)[0], torch.exp(-entropy))
    with pytest.raises(ValueError, match="remasking"):
        confidence("topprob", probs, tokens)


def test_select_top_takes_count_best_candidates():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.8, 0.8, 0.1]])
    candidates = torch.tensor([[False, True, True, True], [True, True, True, True]])
    pick = select_top(scores, candidates, torch.tensor([2, 1]))
    assert pick.tolist() == [[False, False, True, True], [False, True, False, False]]   # ties go left


@pytest.mark.parametrize("rule, order", [("low_confidence", [0, 2, 1]), ("margin", [2, 0, 1]),
                                         ("entropy", [1, 0, 2])])
def test_rules_commit_in_their_order(rule, order):
    backbone = StubBackbone(fixed(PROBS.log()))
    out = generate(backbone, None, gen_length=3, block_length=3, steps=3, remasking=rule, temperature=0)
    states = replay(backbone, out)
    committed = [int(((a == MASK) & (b != MASK))[0].nonzero()) for a, b in zip(states, states[1:])]
    assert committed == order
    assert out[0].tolist() == [0, 0, 0]                               # greedy: each position's argmax


def test_random_rule_picks_uniformly():
    backbone = StubBackbone(fixed(PROBS.log()))
    out = generate(backbone, None, gen_length=3, block_length=3, steps=3, remasking="random", batch_size=600,
                   generator=torch.Generator().manual_seed(0))
    first = ((backbone.calls[1] != MASK).long().argmax(-1))
    counts = torch.bincount(first, minlength=3)
    assert (counts > 150).all(), counts                               # about 200 each
    assert (out != MASK).all()


# ------------------------------------------------------------------------------------ threshold, temperature, seeds

THRESHOLD_PROBS = torch.tensor([[0.95, 0.05, 0, 0, 0], [0.3, 0.7, 0, 0, 0],
                                [0.92, 0.08, 0, 0, 0], [0.5, 0.5, 0, 0, 0]]) + 1e-9


def test_threshold_commits_everything_confident_then_follows_schedule():
    backbone = StubBackbone(fixed(THRESHOLD_PROBS.log()))
    out = generate(backbone, None, gen_length=4, block_length=4, steps=4, threshold=0.9, temperature=0)
    states = replay(backbone, out)
    new = [((a == MASK) & (b != MASK))[0].nonzero().flatten().tolist() for a, b in zip(states, states[1:])]
    assert new == [[0, 2], [1], [3]]                                  # the block ends after 3 calls, not 4
    assert out[0].tolist() == [0, 1, 0, 0]


@pytest.mark.parametrize("codd", ["off", "joint", "any_order"])
def test_threshold_extremes(codd):
    layer = hmm_layer(4) if codd != "off" else None
    everything = StubBackbone(contextual(8))
    generate(everything, None, layer=layer, gen_length=8, block_length=4, steps=8, threshold=0.0, codd=codd)
    assert len(everything.calls) == 2                                 # one call per block
    nothing = StubBackbone(contextual(8))
    generate(nothing, None, layer=layer, gen_length=8, block_length=4, steps=8, threshold=1.0, codd=codd)
    assert len(nothing.calls) == 8                                    # plain schedule


def test_temperature_zero_is_greedy_and_ignores_the_seed():
    table = torch.randn(6, V, generator=torch.Generator().manual_seed(3))
    runs = [generate(StubBackbone(fixed(table)), None, gen_length=6, block_length=3, steps=2, temperature=0,
                     batch_size=2, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][0], table.argmax(-1))


@pytest.mark.parametrize("codd", ["off", "joint", "any_order"])
def test_seeded_runs_reproduce(codd):
    layer = hmm_layer(4) if codd != "off" else None

    def run(seed):
        return generate(StubBackbone(contextual(8)), None, layer=layer, gen_length=8, block_length=4, steps=4,
                        codd=codd, batch_size=16, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))



@pytest.mark.parametrize("codd", ["off", "joint", "any_order"])
def test_a_mask_id_inside_the_vocabulary_is_never_generated(codd):
    favour_mask = torch.tensor([0.0, 0.0, 0.0, 0.0, 9.0]).expand(8, -1)   # mask id 4 is a vocabulary row
    backbone = StubBackbone(fixed(favour_mask), mask_id=4)
    layer = CoDDLayer(structures.hmm(4, 3, V), mask_id=4) if codd != "off" else None
    out = generate(backbone, None, layer=layer, gen_length=8, block_length=4, steps=4, codd=codd, batch_size=8,
                   generator=torch.Generator().manual_seed(0))
    assert len(backbone.calls) == 4 and not (out == 4).any()


def test_tiny_transformer_end_to_end():
    torch.manual_seed(0)
    backbone = TinyDiffusionTransformer(V, MASK, block_length=8, dim=16, depth=1, heads=2).eval()
    layer = hmm_layer(4)
    prompt = torch.randint(0, V, (2, 4))
    for codd in ("off", "joint", "any_order"):
        out = generate(backbone, prompt, layer=layer, gen_length=4, block_length=4, steps=2, codd=codd,
                       generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, 8) and torch.equal(out[:, :4], prompt) and (out < V).all()


# ------------------------------------------------------------------------------------------ argument checks

@pytest.mark.parametrize("kwargs, match", [
    (dict(gen_length=6, block_length=4), "multiple of block_length"),
    (dict(steps=0), "steps"),
    (dict(steps=9), "steps"),
    (dict(remasking="topprob"), "remasking"),
    (dict(temperature=-1.0), "temperature"),
    (dict(threshold=1.5), "threshold"),
    (dict(threshold=0.5, remasking="random"), "random"),
    (dict(codd="pc"), "codd"),
    (dict(codd="joint"), "needs a CoDD layer"),
    (dict(codd="joint", layer="block3"), "block_length"),
    (dict(codd="joint", layer="vocab3"), "vocabulary"),
    (dict(codd="joint", layer="mask0"), "mask id"),
    (dict(pc_frac=0.5), "pc_frac"),
    (dict(codd="joint", layer="ok", pc_frac=0.0), "pc_frac"),
    (dict(generator=0), "generator"),
    (dict(prompt=torch.zeros(2, 3)), "prompt"),
    (dict(prompt=torch.zeros(3, dtype=torch.long)), "prompt"),
    (dict(prompt=torch.full((1, 2), MASK)), r"prompt\[0, 0\]"),
    (dict(prompt=torch.zeros(2, 1, dtype=torch.long), batch_size=3), "batch_size"),
])
def test_arguments_are_checked(kwargs, match):
    layers = {"ok": hmm_layer(4), "block3": hmm_layer(3), "vocab3": hmm_layer(4, vocab=3),
              "mask0": CoDDLayer(structures.hmm(4, 3, V), mask_id=0)}
    args = dict(prompt=None, gen_length=8, block_length=4, steps=4) | kwargs
    if isinstance(args.get("layer"), str):
        args["layer"] = layers[args["layer"]]
    with pytest.raises(ValueError, match=match):
        generate(StubBackbone(contextual(8)), args.pop("prompt"), **args)
