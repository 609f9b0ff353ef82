"""Circuits designed for all-different constraints are exactly uniform over their solutions: the
permutation circuit by brute force over every assignment, the Latin-square and sudoku circuits by
putting probability 1/count on each of the enumerated grids (so nothing else has mass); their samples
are solutions, while independent draws from the exact marginals are permutations only n!/nⁿ of the time."""
import itertools
import math

import numpy as np
import pytest
import torch

import structures
from helpers.brute import all_assignments, evaluate
from structures import StructureError


@pytest.mark.parametrize("n, length, pad", [(1, 1, None), (2, 2, None), (3, 3, None), (4, 5, 4), (5, 6, 5)])
def test_the_permutation_circuit_is_uniform_over_permutations(n, length, pad):
    circuit = structures.permutation(n, length, pad=pad)
    xs = all_assignments(circuit)
    probs = evaluate(circuit, xs)
    valid = np.array([sorted(x[:n]) == list(range(n)) and all(v == pad for v in x[n:]) for x in xs])
    np.testing.assert_allclose(probs[valid], 1 / math.factorial(n), rtol=1e-12)
    np.testing.assert_array_equal(probs[~valid], 0.0)
    assert valid.sum() == math.factorial(n)


def test_its_samples_marginals_and_conditionals_are_those_of_a_random_permutation():
    n = 6
    model = structures.compile(structures.permutation(n), dtype=torch.float64)
    samples = model.sample(num_samples=3000, generator=torch.Generator().manual_seed(0))[:, 0]
    assert all(sorted(row.tolist()) == list(range(n)) for row in samples)
    np.testing.assert_allclose(model.marginals().numpy(), np.full((1, n, n), 1 / n), atol=1e-12)
    x = torch.tensor([[2, 0, 0, 0, 0, 5]])
    observed = torch.tensor([[True, False, False, False, False, True]])
    marg = model.marginals(x, observed)[0]
    np.testing.assert_allclose(marg[1:5, [2, 5]].numpy(), 0.0, atol=1e-12)      # used symbols are gone
    np.testing.assert_allclose(marg[1:5, [0, 1, 3, 4]].numpy(), 0.25, atol=1e-12)
    assert float(model.log_prob(torch.tensor([list(range(n))])).detach().exp()) == pytest.approx(1 / math.factorial(n))
    # drawn independently from these exact marginals, a row is a permutation with probability n!/n^n
    independent = torch.multinomial(model.marginals()[0], 20000, replacement=True).T
    valid = np.mean([sorted(row) == list(range(n)) for row in independent.tolist()])
    assert valid == pytest.approx(math.factorial(n) / n ** n, abs=0.01)


def grids(boxes: bool) -> list[list[int]]:
    """Every 4×4 Latin square (with boxes: every sudoku grid), by brute force over rows."""
    rows = list(itertools.permutations(range(4)))
    out = []
    for grid in itertools.product(rows, repeat=4):
        columns_ok = all(len({row[c] for row in grid}) == 4 for c in range(4))
        boxes_ok = not boxes or all(len({grid[r + i][c + j] for i in (0, 1) for j in (0, 1)}) == 4
                                    for r in (0, 2) for c in (0, 2))
        if columns_ok and boxes_ok:
            out.append([v for row in grid for v in row])
    return out


@pytest.mark.parametrize("boxes, count", [(None, 576), ((2, 2), 288)])
def test_latin_square_and_sudoku_circuits_are_uniform_over_their_grids(boxes, count):
    solutions = grids(boxes is not None)
    assert len(solutions) == count
    model = structures.compile(structures.latin_square(4, boxes=boxes, length=17, pad=4), dtype=torch.float64)
    x = torch.tensor([grid + [4] for grid in solutions])
    np.testing.assert_allclose(model.log_prob(x).detach().exp().numpy(), 1 / count, rtol=1e-10)   # sums to one
    samples = model.sample(num_samples=2000, generator=torch.Generator().manual_seed(0))[:, 0].tolist()
    allowed = {tuple(grid + [4]) for grid in solutions}
    assert all(tuple(row) in allowed for row in samples)
    given = torch.tensor([solutions[7] + [4]])
    observed = torch.ones(1, 17, dtype=torch.bool)
    observed[0, [0, 5, 10, 15]] = False                          # the diagonal blank: few completions
    marg = model.marginals(given, observed)[0]
    completions = [g for g in solutions if all(g[i] == solutions[7][i] for i in range(16) if observed[0, i])]
    for i in (0, 5, 10, 15):
        expected = np.bincount([g[i] for g in completions], minlength=5) / len(completions)
        np.testing.assert_allclose(marg[i].numpy(), expected, atol=1e-12)


def test_it_is_built_from_the_node_api_with_two_to_the_n_states():
    n = 5
    circuit = structures.permutation(n)
    sums = [g for g in circuit.groups if isinstance(g, structures.Sum)]
    assert sum(g.num_nodes for g in sums) == 2 ** n - 1                 # every subset but the full set
    assert len([g for g in circuit.groups if isinstance(g, structures.Product)]) == n - 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n must be a positive int"),
    (dict(n=40), "more than the limit"),
    (dict(n=3, length=2), "length must be an int >= 3"),
    (dict(n=3, length=4), "need a pad token"),
    (dict(n=3, length=4, pad=1), "pad"),
    (dict(n=3, vocab=2), "vocab must be an int >= 3"),
    (dict(n=3, length=10 ** 12, pad=3), "more than the limit"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(StructureError, match=message):
        structures.permutation(**kwargs)


@pytest.mark.parametrize("groups, symbols, message", [
    ([], 3, "non-empty list"), ([[0, 0]], 3, "distinct cells"), ([[0, 1, 2, 3]], 3, "more than 3 cells"),
    ([[0, -1]], 3, "a cell must be a non-negative int"), ([[0, 1], [1, 2], [0, 2]], 2, "no assignment"),
])
def test_bad_constraints_are_named(groups, symbols, message):
    with pytest.raises(StructureError, match=message):
        structures.all_different(groups, symbols)
    with pytest.raises(StructureError, match="must tile"):
        structures.latin_square(4, boxes=(3, 2))
