"""Puzzles with exact answers, generated here (nothing downloaded): where parallel decoding provably fails.

Three families, every solution enumerated in a fixed order and every item checkable by its rules:

  permutations-n   the n! orderings of the letters ``a``.. (n = 2..8), one item a string like "cadb";
  latin-4          the 576 Latin squares of order 4 over ``1234``, row-major, 16 characters;
  sudoku-4         the 288 of them whose four 2×2 boxes also hold every symbol.

A *perfect factorized* model, drawing every position at once and independently from the exact
per-position marginals, is right only with the probability :func:`factorized_accuracy` computes
(n!/nⁿ for permutations, 0.094 at n = 4; 576/4¹⁶ for Latin squares), however good its marginals: the
answers' dependencies, not the model, are what such a model cannot express. A completion puzzle
(:func:`completions`) blanks k cells of a solution and is judged against the set of *all* its valid
completions.

The checkers (:func:`is_permutation`, :func:`is_latin_square`, :func:`is_sudoku`) test the rules on a
string and share nothing with the enumeration, so the tests can hold one against the other.
"""
from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from ..arguments import check_int
from .items import ItemData, split_types
from .vocabulary import Vocabulary

__all__ = ["Task", "TASKS", "BLANK", "get_task", "is_permutation", "is_latin_square", "is_sudoku", "load_task",
           "completion_set", "completions", "cell_marginals", "factorized_accuracy",
           "perfect_factorized_generation", "perfect_factorized_completion"]

#: The blank cell of a completion puzzle: never a symbol of any task.
BLANK = "?"
#: permutations-2 .. permutations-8 (8! = 40320 items); a grid is of order 4 (4×4 cells, symbols 1..4).
PERMUTATION_SIZES = range(2, 9)
GRID_SYMBOLS = "1234"


@dataclass(frozen=True)
class Task:
    """One puzzle family: items over ``symbols``; ``kind`` is "permutations", "latin" or "sudoku"."""

    name: str
    kind: str
    symbols: str

    @property
    def order(self) -> int:
        return len(self.symbols)

    @property
    def length(self) -> int:
        """Characters per item (the block is one longer: the end symbol)."""
        return self.order if self.kind == "permutations" else self.order ** 2

    def is_valid(self, item) -> bool:
        """The task's rules, checked on the string (not membership in the enumeration)."""
        if self.kind == "permutations":
            return is_permutation(item, self.symbols)
        return is_latin_square(item, self.symbols, boxes=self.kind == "sudoku")

    def solutions(self) -> tuple[str, ...]:
        """Every solution, in a fixed order (lexicographic in the symbols' order), cached."""
        return _solutions(self)

    def solution_array(self) -> np.ndarray:
        """``[num_solutions, length]`` symbol indices of :meth:`solutions`, cached (read-only)."""
        return _solution_array(self)


TASKS: dict[str, Task] = {f"permutations-{n}": Task(f"permutations-{n}", "permutations", "abcdefgh"[:n])
                          for n in PERMUTATION_SIZES}
TASKS.update({"latin-4": Task("latin-4", "latin", GRID_SYMBOLS), "sudoku-4": Task("sudoku-4", "sudoku", GRID_SYMBOLS)})


def get_task(task: str | Task) -> Task:
    """The :class:`Task` named ``task`` (or ``task`` itself); a ValueError naming the known ones."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str) and task in TASKS:
        return TASKS[task]
    raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def is_permutation(item, symbols: str) -> bool:
    """True iff ``item`` holds each of ``symbols`` exactly once (and nothing else)."""
    return isinstance(item, str) and len(item) == len(symbols) and set(item) == set(symbols)


def is_latin_square(item, symbols: str = GRID_SYMBOLS, boxes: bool = False) -> bool:
    """True iff ``item`` is an n×n grid (row-major, n = len(symbols)) whose every row and column
    (and, with ``boxes``, every √n×√n box) holds each symbol exactly once."""
    n = len(symbols)
    if not isinstance(item, str) or len(item) != n * n:
        return False
    groups = [item[r * n:(r + 1) * n] for r in range(n)] + [item[c::n] for c in range(n)]
    if boxes:
        b = math.isqrt(n)
        if b * b != n:
            raise ValueError(f"boxes need a square number of symbols, got {len(symbols)} ({symbols!r})")
        groups += [[item[(top + i) * n + left + j] for i in range(b) for j in range(b)]
                   for top in range(0, n, b) for left in range(0, n, b)]
    return all(len(group) == n and set(group) == set(symbols) for group in groups)


def is_sudoku(item, symbols: str = GRID_SYMBOLS) -> bool:
    """True iff ``item`` is a Latin square whose boxes also hold every symbol (a solved sudoku)."""
    return is_latin_square(item, symbols, boxes=True)


@functools.lru_cache(maxsize=None)
def _solutions(task: Task) -> tuple[str, ...]:
    if task.kind == "permutations":
        return tuple("".join(p) for p in itertools.permutations(task.symbols))
    return _fill_grids(task.symbols, boxes=task.kind == "sudoku")


def _fill_grids(symbols: str, boxes: bool) -> tuple[str, ...]:
    """Backtracking over the cells in row-major order, symbols tried in their order."""
    n = len(symbols)
    b = math.isqrt(n)
    used = {("row", i): set() for i in range(n)} | {("col", i): set() for i in range(n)} | \
        {("box", i): set() for i in range(n)}
    cells: list[str] = []
    found: list[str] = []

    def fill(i: int) -> None:
        if i == n * n:
            found.append("".join(cells))
            return
        r, c = divmod(i, n)
        keys = [("row", r), ("col", c)] + ([("box", (r // b) * b + c // b)] if boxes else [])
        for s in symbols:
            if any(s in used[k] for k in keys):
                continue
            for k in keys:
                used[k].add(s)
            cells.append(s)
            fill(i + 1)
            cells.pop()
            for k in keys:
                used[k].discard(s)

    fill(0)
    return tuple(found)


@functools.lru_cache(maxsize=None)
def _solution_array(task: Task) -> np.ndarray:
    index = {s: i for i, s in enumerate(task.symbols)}
    array = np.array([[index[c] for c in item] for item in task.solutions()], dtype=np.int8)
    array.setflags(write=False)
    return array


def load_task(name: str, heldout_fraction: float = 0.2, seed: int = 0, max_length: int | None = None) -> ItemData:
    """Every solution of the task ``name`` as an item, a seeded ``heldout_fraction`` of them held out of
    training (so generation can be judged on novelty), uniform weights, blocks of the item length + 1,
    ``valid_set`` every solution. ``max_length`` (what the CLI's --max-length passes) must be None or
    the item length: a puzzle's items all have one length."""
    task = get_task(name)
    if max_length is not None and max_length != task.length:
        raise ValueError(f"max_length: {task.name} items are exactly {task.length} characters, got {max_length!r} "
                         "(leave it out)")
    solutions = list(task.solutions())
    train, heldout = split_types(solutions, heldout_fraction, seed)
    return ItemData(train_items=train, heldout_items=heldout, vocab=Vocabulary(task.symbols),
                    block_length=task.length + 1, valid_set=frozenset(solutions), name=task.name)


def completion_set(task: str | Task, puzzle: str) -> frozenset[str]:
    """Every valid item that agrees with ``puzzle`` (a string with :data:`BLANK` at unknown cells)."""
    task = get_task(task)
    if not isinstance(puzzle, str) or len(puzzle) != task.length:
        raise ValueError(f"puzzle must be a string of {task.length} characters for {task.name}, got {puzzle!r}")
    wrong = re.sub(f"[{re.escape(task.symbols)}{re.escape(BLANK)}]", "", puzzle)
    if wrong:
        raise ValueError(f"puzzle {puzzle!r} has characters that are neither symbols of {task.name} nor "
                         f"{BLANK!r}: {sorted(set(wrong))}")
    given = [i for i, c in enumerate(puzzle) if c != BLANK]
    values = np.array([task.symbols.index(puzzle[i]) for i in given], dtype=np.int8)
    keep = (task.solution_array()[:, given] == values).all(axis=1)
    solutions = task.solutions()
    return frozenset(solutions[i] for i in np.flatnonzero(keep))


def completions(task: str | Task, solutions, blanks: int, count: int,
                seed: int = 0) -> list[tuple[str, frozenset[str]]]:
    """``count`` puzzles: a solution from ``solutions`` (each once, in a seeded order, before any
    repeats) with ``blanks`` seeded cells replaced by :data:`BLANK`, each with the set of *all* its
    valid completions over the task's full solution set."""
    task = get_task(task)
    solutions = list(solutions)
    if not solutions:
        raise ValueError("solutions must not be empty")
    wrong = [s for s in solutions if not task.is_valid(s)]
    if wrong:
        raise ValueError(f"solutions: {wrong[0]!r} is not a valid {task.name} item")
    check_int("blanks", blanks, 1, task.length)
    check_int("count", count, 1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(solutions), generator=generator).tolist()
    puzzles = []
    for i in range(count):
        solution = solutions[order[i % len(order)]]
        cells = set(torch.randperm(task.length, generator=generator)[:blanks].tolist())
        puzzle = "".join(BLANK if j in cells else c for j, c in enumerate(solution))
        puzzles.append((puzzle, completion_set(task, puzzle)))
    return puzzles


def cell_marginals(items, task: str | Task) -> np.ndarray:
    """``[length, order]``: each position's distribution over the symbols when an item is drawn
    uniformly from ``items`` (the exact marginals of a model that is uniform on them)."""
    task = get_task(task)
    array = _as_array(items, task)
    counts = np.stack([np.bincount(array[:, i], minlength=task.order) for i in range(task.length)])
    return counts / len(array)


def factorized_accuracy(items, task: str | Task) -> float:
    """The probability that independent draws, one per position from :func:`cell_marginals` of
    ``items``, form one of ``items``: Σ_{x ∈ items} Π_i m_i(x_i). With ``items`` every solution this is
    a perfect factorized model's one-step accuracy; with a puzzle's completions, its one-step
    completion accuracy (given cells have marginal one)."""
    task = get_task(task)
    array = _as_array(items, task)
    marginals = cell_marginals(items, task)
    return float(marginals[np.arange(task.length), array].prod(axis=1).sum())


def perfect_factorized_generation(task: str | Task) -> float:
    """One-step accuracy of a perfect factorized model generating whole items: n!/nⁿ for
    permutations-n, (number of solutions)/4¹⁶ for the grids (uniform marginals)."""
    task = get_task(task)
    if task.kind == "permutations":
        return math.factorial(task.order) / task.order ** task.order
    return factorized_accuracy(task.solutions(), task)


def perfect_factorized_completion(task: str | Task, puzzle: str) -> float:
    """One-step accuracy of a perfect factorized model on ``puzzle``: every blank drawn at once and
    independently from its exact conditional marginal given the givens."""
    return factorized_accuracy(completion_set(task, puzzle), task)


def _as_array(items, task: Task) -> np.ndarray:
    items = list(items)
    if not items:
        raise ValueError("items must not be empty")
    wrong = [x for x in items if not isinstance(x, str) or len(x) != task.length or set(x) - set(task.symbols)]
    if wrong:
        raise ValueError(f"items: {wrong[0]!r} is not {task.length} symbols of {task.name} ({task.symbols!r})")
    index = {s: i for i, s in enumerate(task.symbols)}
    return np.array([[index[c] for c in x] for x in items], dtype=np.int64)
