"""Puzzles with exact answers: the enumerations against the rule checkers (brute force), the held-out
split, completion sets against brute force, and the perfect factorized model's closed forms against
their known values and Monte Carlo."""
import itertools
import math

import numpy as np
import pytest

from pcdiff.data import ItemData, Vocabulary, load_dataset
from pcdiff.data.puzzles import (BLANK, TASKS, cell_marginals, completion_set, completions, factorized_accuracy,
                                 get_task, is_latin_square, is_permutation, is_sudoku, load_task,
                                 perfect_factorized_completion, perfect_factorized_generation)

ROW_ORDERS = ["".join(p) for p in itertools.permutations("1234")]


# ----- enumeration and checkers -----

@pytest.mark.parametrize("name, count", [("latin-4", 576), ("sudoku-4", 288)] +
                         [(f"permutations-{n}", math.factorial(n)) for n in range(2, 9)])
def test_every_solution_is_enumerated_once_and_is_valid(name, count):
    task = get_task(name)
    solutions = task.solutions()
    assert len(solutions) == count == len(set(solutions))
    assert all(task.is_valid(s) and len(s) == task.length for s in solutions)
    assert list(solutions) == sorted(solutions)                          # a fixed (lexicographic) order
    assert task.solution_array().shape == (count, task.length)


def test_task_names_and_the_first_solutions():
    assert set(TASKS) == {f"permutations-{n}" for n in range(2, 9)} | {"latin-4", "sudoku-4"}
    assert get_task("permutations-4").solutions()[:3] == ("abcd", "abdc", "acbd")
    assert get_task("latin-4").solutions()[0] == "1234214334124321"
    assert set(get_task("sudoku-4").solutions()) < set(get_task("latin-4").solutions())
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("latin-5")


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_the_permutation_checker_by_brute_force_over_every_string(n):
    symbols = "abcdefgh"[:n]
    valid = {"".join(s) for s in itertools.product(symbols, repeat=n) if is_permutation("".join(s), symbols)}
    assert valid == set(get_task(f"permutations-{n}").solutions())


def test_the_grid_checkers_by_brute_force_over_grids_of_permuted_rows():
    """Every grid whose first row is 1234 and whose rows are orderings of 1234 (24³ grids; any Latin
    square is one of these up to relabeling its symbols): the checkers keep exactly the enumerated ones."""
    grids = ["1234" + "".join(rows) for rows in itertools.product(ROW_ORDERS, repeat=3)]
    latin = {g for g in grids if is_latin_square(g)}
    sudoku = {g for g in grids if is_sudoku(g)}
    assert latin == {s for s in get_task("latin-4").solutions() if s.startswith("1234")} and len(latin) == 24
    assert sudoku == {s for s in get_task("sudoku-4").solutions() if s.startswith("1234")} and len(sudoku) == 12


@pytest.mark.parametrize("name", ["latin-4", "sudoku-4", "permutations-5"])
def test_every_perturbation_of_a_solution_is_refused(name):
    task = get_task(name)
    solutions = set(task.solutions())
    for s in task.solutions()[::7]:
        for i, c in itertools.product(range(task.length), task.symbols):
            changed = s[:i] + c + s[i + 1:]
            assert task.is_valid(changed) == (changed == s)
        for i, j in itertools.combinations(range(task.length), 2):
            swapped = list(s)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            swapped = "".join(swapped)
            assert task.is_valid(swapped) == (swapped in solutions)
        assert not task.is_valid(s[:-1]) and not task.is_valid(s + s[0]) and not task.is_valid("x" + s[1:])
    assert not task.is_valid(None) and not task.is_valid(list(task.solutions()[0]))


def test_a_latin_square_that_is_no_sudoku():
    grid = "1234" "2143" "3412" "4321"
    assert is_latin_square(grid) and not is_sudoku(grid)                # box (top left) holds 1, 2, 2, 1


# ----- the data set -----

@pytest.mark.parametrize("name", ["latin-4", "sudoku-4", "permutations-4"])
def test_load_task_holds_out_a_seeded_share_unseen_in_training(name):
    task = get_task(name)
    data = load_task(name, heldout_fraction=0.2, seed=3)
    assert isinstance(data, ItemData) and data.name == name
    assert data.block_length == task.length + 1 and data.train_weights is None
    assert data.vocab == Vocabulary(task.symbols)
    assert not set(data.train_items) & set(data.heldout_items)
    assert set(data.train_items) | set(data.heldout_items) == data.valid_set == set(task.solutions())
    assert len(data.heldout_items) == round(0.2 * len(task.solutions()))
    assert data.encode_train().shape == (len(data.train_items), task.length + 1)
    assert load_task(name, heldout_fraction=0.2, seed=3).heldout_items == data.heldout_items
    assert load_task(name, heldout_fraction=0.2, seed=4).heldout_items != data.heldout_items


def test_load_dataset_reaches_the_puzzles_by_name():
    data = load_dataset("latin-4", seed=1)
    assert data.heldout_items == load_task("latin-4", seed=1).heldout_items and data.block_length == 17
    assert load_dataset("sudoku-4", seed=0, max_length=16).block_length == 17
    with pytest.raises(ValueError, match="max_length"):
        load_dataset("permutations-4", max_length=12)
    with pytest.raises(ValueError, match="heldout_fraction"):
        load_task("latin-4", heldout_fraction=1.0)
    with pytest.raises(FileNotFoundError, match="latin-4"):
        load_dataset("latin-9")                                          # neither a name nor a file


# ----- completions -----

def _brute_force(task, puzzle):
    blanks = [i for i, c in enumerate(puzzle) if c == BLANK]
    found = set()
    for filling in itertools.product(task.symbols, repeat=len(blanks)):
        grid = list(puzzle)
        for i, c in zip(blanks, filling):
            grid[i] = c
        if task.is_valid("".join(grid)):
            found.add("".join(grid))
    return found


@pytest.mark.parametrize("name, blanks", [("latin-4", 4), ("latin-4", 6), ("sudoku-4", 6), ("permutations-6", 5)])
def test_completion_sets_agree_with_brute_force(name, blanks):
    task = get_task(name)
    source = load_task(name, seed=0).heldout_items
    puzzles = completions(task, source, blanks, count=12, seed=5)
    assert len(puzzles) == 12
    for puzzle, solutions in puzzles:
        assert len(puzzle) == task.length and puzzle.count(BLANK) == blanks
        assert solutions == _brute_force(task, puzzle) == completion_set(task, puzzle)
        assert any(s in solutions for s in source)                       # built from one of the given solutions
    assert completions(task, source, blanks, count=12, seed=5) == puzzles          # seeded
    assert completions(task, source, blanks, count=12, seed=6) != puzzles


def test_completion_puzzles_use_each_solution_once_before_repeating():
    source = get_task("permutations-3").solutions()[:4]
    puzzles = completions("permutations-3", source, 1, count=4, seed=0)
    assert {next(iter(s)) for _, s in puzzles} == set(source)            # one blank: the completion is unique


@pytest.mark.parametrize("kwargs, message", [
    (dict(blanks=0), "blanks"), (dict(blanks=17), "blanks"), (dict(count=0), "count"),
    (dict(solutions=[]), "solutions"), (dict(solutions=["1234123412341234"]), "solutions"),
])
def test_completion_arguments_are_named(kwargs, message):
    arguments = {"task": "latin-4", "solutions": get_task("latin-4").solutions()[:3], "blanks": 4, "count": 2,
                 **kwargs}
    with pytest.raises(ValueError, match=message):
        completions(**arguments)
    with pytest.raises(ValueError, match="puzzle"):
        completion_set("latin-4", "12x4" + BLANK * 12)


# ----- closed forms -----

def test_perfect_factorized_generation_matches_the_known_values():
    assert perfect_factorized_generation("permutations-4") == pytest.approx(0.094, abs=5e-4)
    for n in range(2, 9):
        task = get_task(f"permutations-{n}")
        assert perfect_factorized_generation(task) == pytest.approx(math.factorial(n) / n ** n)
        assert factorized_accuracy(task.solutions(), task) == pytest.approx(math.factorial(n) / n ** n)
    for name, count in (("latin-4", 576), ("sudoku-4", 288)):
        assert np.allclose(cell_marginals(get_task(name).solutions(), name), 0.25)
        assert perfect_factorized_generation(name) == pytest.approx(count / 4 ** 16, rel=1e-12)


def _monte_carlo(task, marginals, members, draws, rng):
    cells = np.stack([rng.choice(task.order, size=draws, p=m) for m in marginals], axis=1)
    strings = ["".join(task.symbols[i] for i in row) for row in cells]
    return np.mean([s in members and task.is_valid(s) for s in strings])


@pytest.mark.parametrize("name", ["permutations-3", "permutations-4"])
def test_generation_closed_form_against_monte_carlo(name):
    task = get_task(name)
    rng = np.random.default_rng(0)
    rate = _monte_carlo(task, cell_marginals(task.solutions(), task), set(task.solutions()), 40000, rng)
    exact = perfect_factorized_generation(task)
    assert abs(rate - exact) < 4 * math.sqrt(exact * (1 - exact) / 40000)


def test_completion_closed_form_against_monte_carlo_and_special_cases():
    task = get_task("latin-4")
    rng = np.random.default_rng(1)
    puzzles = completions(task, task.solutions(), 11, count=6, seed=2)
    assert any(len(s) > 1 for _, s in puzzles)                           # some puzzle has several completions
    for puzzle, solutions in puzzles:
        exact = perfect_factorized_completion(task, puzzle)
        marginals = cell_marginals(solutions, task)
        given = [i for i, c in enumerate(puzzle) if c != BLANK]
        assert np.all(marginals[given].max(axis=1) == 1.0)               # a given cell is certain
        rate = _monte_carlo(task, marginals, solutions, 8000, rng)
        assert abs(rate - exact) < 4 * math.sqrt(exact * (1 - exact) / 8000) + 1e-9
        if len(solutions) == 1:
            assert exact == 1.0
    # permutations with k blanks: the k missing symbols in any order, k!/kᵏ
    for puzzle, solutions in completions("permutations-6", get_task("permutations-6").solutions(), 4, 3, seed=0):
        assert len(solutions) == 24
        assert perfect_factorized_completion("permutations-6", puzzle) == pytest.approx(24 / 4 ** 4)
