"""denoise(): the loop behind generate() and infilling fills every mask of arbitrary sequences, keeps
what is known, splits each row's masks evenly over the steps, and spends no call on a finished block."""
import pytest
import torch

import structures
from helpers.stubs import MASK, V, StubBackbone, contextual
from pcdiff.codd import CoDDLayer
from pcdiff.decode import denoise, generate, per_row_counts, split_evenly


def test_per_row_counts_split_each_rows_masks_evenly():
    masked = torch.tensor([[True] * 7, [True, False] * 3 + [True], [False] * 7])
    counts = per_row_counts(masked, 3)
    assert counts.T.tolist() == [split_evenly(7, 3), split_evenly(4, 3), [0, 0, 0]]


@pytest.mark.parametrize("codd", ["off", "joint", "any_order"])
def test_generate_is_denoise_of_a_prompt_followed_by_masks(codd):
    layer = CoDDLayer(structures.hmm(4, 3, V, seed=0), mask_id=MASK, dtype=torch.float64)
    prompt = torch.tensor([[0, 1], [2, 3]])
    kwargs = dict(layer=layer, block_length=4, steps=4, codd=codd)
    generated = generate(StubBackbone(contextual(10)), prompt, gen_length=8,
                         generator=torch.Generator().manual_seed(1), **kwargs)
    x = torch.cat([prompt, torch.full((2, 8), MASK)], dim=1)
    assert torch.equal(denoise(StubBackbone(contextual(10)), x, start=2, generator=torch.Generator().manual_seed(1),
                               **kwargs), generated)


def test_denoise_fills_only_the_masks_within_its_step_budget():
    backbone = StubBackbone(contextual(8))
    x = torch.tensor([[0, MASK, 2, MASK, 1, 1, 1, 1],              # second block: nothing to fill
                      [MASK, MASK, MASK, 4, 3, 2, 1, 0]])
    out = denoise(backbone, x, block_length=4, steps=4, generator=torch.Generator().manual_seed(0))
    known = x != MASK
    assert torch.equal(out[known], x[known]) and bool(((out >= 0) & (out < V)).all())
    assert len(backbone.calls) == 2                               # the first block's 2 steps; none for the second
    assert torch.equal(denoise(StubBackbone(contextual(8)), out, block_length=4, steps=2), out)


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=torch.zeros(2, 8)), "torch.long"), (dict(start=8), r"start must be an int in \[0, 8\)"),
    (dict(block_length=3), "multiple of block_length"), (dict(steps=0), "steps must be an int"),
])
def test_bad_arguments_are_named(kwargs, message):
    arguments = {**dict(x=torch.full((2, 8), MASK), block_length=4, steps=2), **kwargs}
    with pytest.raises(ValueError, match=message):
        denoise(StubBackbone(contextual(8)), **arguments)
