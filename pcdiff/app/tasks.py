"""Measurements on puzzles with exact answers (:mod:`pcdiff.data.puzzles`) for a trained run: where
factorized parallel decoding provably fails, and how much of it a tractable joint recovers.

  generation   whole items from nothing, at steps per block from 1 (every position at once) to one
               token per step; judged exactly by the task's rules: valid, novel (valid and never seen
               in training), distinct valid, malformed;
  completion   held-out solutions with k cells blanked, filled by :func:`pcdiff.decode.denoise`; right
               iff the result is one of the puzzle's valid completions.

Beside each factorized rate stands a *perfect* factorized model's where it has a closed form: at one
step, independent draws from the exact marginals (n!/nⁿ for permutations); at one token per step, 1
(each token drawn from its exact conditional). Rates carry their binomial standard error.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..arguments import check_int
from ..data import ItemData, Vocabulary
from ..data.puzzles import BLANK, Task, completions, get_task, perfect_factorized_completion, \
    perfect_factorized_generation
from ..decode import CODD_MODES, denoise, generate

__all__ = ["judge_task", "standard_error", "generation_rates", "completion_rates", "generation_markdown",
           "completion_markdown"]

#: How the tables name the decoding modes.
MODE_LABELS = {"off": "factorized", "joint": "CoDD", "any_order": "CoDD any-order"}


def judge_task(tokens: torch.Tensor, data: ItemData, task: str | Task) -> dict:
    """valid (the task's rules hold), novel (valid and not a training item), distinct_valid (count),
    malformed (not a well-formed item), as rates over the ``[N, L]`` rows of ``tokens``."""
    task = _fit(data, task)
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[0] < 1 \
            or tokens.shape[1] != data.block_length:
        raise ValueError(f"tokens must be a [N >= 1, {data.block_length}] tensor (the data's blocks), got "
                         f"{tuple(getattr(tokens, 'shape', ())) or type(tokens).__name__}")
    train = set(data.train_items)
    valid = novel = malformed = 0
    distinct = set()
    for row in tokens.tolist():
        if not data.vocab.is_well_formed(row):
            malformed += 1
            continue
        item = data.vocab.decode(row)
        if task.is_valid(item):
            valid += 1
            novel += item not in train
            distinct.add(item)
    n = len(tokens)
    return {"num": n, "valid": valid / n, "novel": novel / n, "distinct_valid": len(distinct),
            "malformed": malformed / n}


def standard_error(rate: float, n: int) -> float:
    """The binomial standard error of a rate measured on ``n`` independent draws."""
    return math.sqrt(max(rate * (1.0 - rate), 0.0) / n)


@torch.no_grad()
def generation_rates(backbone, layer, data: ItemData, task: str | Task, steps_list=None, num_samples: int = 1000,
                     seed: int = 0, codd_modes=("off", "joint"), batch_size: int = 500,
                     remasking: str = "low_confidence", temperature: float = 1.0, progress: bool = True) -> dict:
    """Unconditional generation of whole items (one block each) at each steps-per-block count of
    ``steps_list`` (default 1, 2, 4, ... up to the block length) and each of ``codd_modes``:
    ``{"task", "num_samples", "rates": {mode: {steps: judge_task + valid_se, novel_se}},
    "perfect_factorized": {steps: rate}}`` (only the steps where it has a closed form)."""
    task = _fit(data, task)
    length = data.block_length
    steps_list = _steps(steps_list, length, "steps_list")
    modes = _modes(codd_modes, layer)
    check_int("num_samples", num_samples, 1)
    check_int("batch_size", batch_size, 1)
    device = _device(backbone)
    rates: dict[str, dict] = {mode: {} for mode in modes}
    jobs = [(steps, mode) for steps in steps_list for mode in modes]
    for steps, mode in tqdm(jobs, total=len(jobs), desc=f"{task.name} generation", disable=not progress):
        generator = torch.Generator(device=device).manual_seed(seed + steps)
        pieces = []
        for start in range(0, num_samples, batch_size):
            prompt = torch.empty(min(batch_size, num_samples - start), 0, dtype=torch.long, device=device)
            pieces.append(generate(backbone, prompt, layer=None if mode == "off" else layer, gen_length=length,
                                   block_length=length, steps=steps, codd=mode, remasking=remasking,
                                   temperature=temperature, generator=generator).cpu())
        cell = judge_task(torch.cat(pieces), data, task)
        rates[mode][str(steps)] = {**cell, "valid_se": standard_error(cell["valid"], num_samples),
                                   "novel_se": standard_error(cell["novel"], num_samples)}
    perfect = {1: perfect_factorized_generation(task), length: 1.0}
    return {"task": task.name, "num_samples": num_samples, "rates": rates,
            "perfect_factorized": {str(s): perfect[s] for s in steps_list if s in perfect}}


@torch.no_grad()
def completion_rates(backbone, layer, data: ItemData, task: str | Task, blanks_list=(4, 8, 12), num_puzzles: int = 200,
                     steps_list=None, seed: int = 0, codd_modes=("off", "joint"), batch_size: int = 500,
                     remasking: str = "low_confidence", temperature: float = 1.0, progress: bool = True) -> dict:
    """Completion of held-out solutions with k blank cells (each k of ``blanks_list``), at each
    steps-per-block count of ``steps_list`` (default 1 and the block length: all blanks at once, one
    per step): ``{"task", "num_puzzles", "rates": {mode: {k: {steps: {exact, exact_se, malformed}}}},
    "perfect_factorized": {k: {steps: rate}}, "completions_per_puzzle": {k: mean}}``; the perfect
    factorized rate is averaged over the same puzzles."""
    task = _fit(data, task)
    if not data.heldout_items:
        raise ValueError(f"data ({data.name}) has no held-out items to build puzzles from; load it with "
                         "heldout_fraction > 0")
    if isinstance(blanks_list, (int, str)) or not list(blanks_list):
        raise ValueError(f"blanks_list must be a non-empty sequence of ints, got {blanks_list!r}")
    for k in blanks_list:
        check_int("blanks_list (an entry)", k, 1, task.length)
    steps_list = _steps([1, data.block_length] if steps_list is None else steps_list, data.block_length, "steps_list")
    modes = _modes(codd_modes, layer)
    check_int("num_puzzles", num_puzzles, 1)
    check_int("batch_size", batch_size, 1)
    puzzles = {k: completions(task, data.heldout_items, k, num_puzzles, seed + k) for k in blanks_list}
    rates: dict[str, dict] = {mode: {str(k): {} for k in blanks_list} for mode in modes}
    device = _device(backbone)
    blank = data.vocab.mask_id if backbone.mask_id is None else backbone.mask_id   # a uniform backbone has none
    encoded = {k: _encode_puzzles([p for p, _ in puzzles[k]], data.vocab, data.block_length, blank)
               for k in blanks_list}
    jobs = [(k, steps, mode) for k in blanks_list for steps in steps_list for mode in modes]
    for k, steps, mode in tqdm(jobs, total=len(jobs), desc=f"{task.name} completion", disable=not progress):
        x = encoded[k].to(device)
        generator = torch.Generator(device=device).manual_seed(seed + k * data.block_length + steps)
        filled = [denoise(backbone, x[rows], to_decide=x[rows] == blank, layer=None if mode == "off" else layer,
                          block_length=data.block_length, steps=steps, codd=mode, remasking=remasking,
                          temperature=temperature, generator=generator).cpu()
                  for rows in _slices(len(x), batch_size)]
        rates[mode][str(k)][str(steps)] = _judge_completions(torch.cat(filled), puzzles[k], data.vocab)
    return {"task": task.name, "num_puzzles": num_puzzles, "rates": rates,
            "perfect_factorized": {str(k): _perfect_completion(task, puzzles[k], k, steps_list) for k in blanks_list},
            "completions_per_puzzle": {str(k): sum(len(s) for _, s in puzzles[k]) / num_puzzles
                                       for k in blanks_list}}


def _perfect_completion(task: Task, puzzles, blanks: int, steps_list) -> dict[str, float]:
    """At one step, the mean over ``puzzles`` of the one-step closed form; at >= ``blanks`` steps
    (one blank per step), 1."""
    one_step = sum(perfect_factorized_completion(task, p) for p, _ in puzzles) / len(puzzles)
    return {str(s): (one_step if s == 1 else 1.0) for s in steps_list if s == 1 or s >= blanks}


def _judge_completions(tokens: torch.Tensor, puzzles, vocab: Vocabulary) -> dict:
    right = malformed = 0
    for row, (_, solutions) in zip(tokens.tolist(), puzzles):
        if not vocab.is_well_formed(row):
            malformed += 1
        else:
            right += vocab.decode(row) in solutions
    n = len(puzzles)
    return {"num": n, "exact": right / n, "exact_se": standard_error(right / n, n), "malformed": malformed / n}


def _encode_puzzles(puzzles: list[str], vocab: Vocabulary, block_length: int, mask_id: int) -> torch.Tensor:
    """``[P, block_length]``: the givens' ids, the mask id at every blank, then end symbols."""
    index = {c: i for i, c in enumerate(vocab.tokens[:-1])}
    rows = [[mask_id if c == BLANK else index[c] for c in p] + [vocab.end_id] * (block_length - len(p))
            for p in puzzles]
    return torch.tensor(rows, dtype=torch.long)


def _fit(data: ItemData, task: str | Task) -> Task:
    """The task, checked against the data: its symbols in the vocabulary, its items within the block."""
    task = get_task(task)
    if not isinstance(data, ItemData):
        raise TypeError(f"data must be an ItemData, got {type(data).__name__}")
    missing = sorted(set(task.symbols) - set(data.vocab.tokens[:-1]))
    if missing or data.block_length < task.length + 1:
        raise ValueError(f"data ({data.name}: blocks of {data.block_length}, {data.vocab!r}) does not hold "
                         f"{task.name} items ({task.length} characters over {task.symbols!r})")
    return task


def _steps(steps_list, block_length: int, name: str) -> list[int]:
    """Distinct ints in [1, block_length], sorted; by default 1, 2, 4, ... and the block length."""
    if steps_list is None:
        steps_list = [2 ** i for i in range(block_length.bit_length()) if 2 ** i < block_length] + [block_length]
    if isinstance(steps_list, (int, str)) or not list(steps_list):
        raise ValueError(f"{name} must be a non-empty sequence of ints, got {steps_list!r}")
    for steps in steps_list:
        check_int(f"{name} (an entry)", steps, 1, block_length)
    return sorted(set(steps_list))


def _modes(codd_modes, layer) -> list[str]:
    if isinstance(codd_modes, str) or not list(codd_modes):
        raise ValueError(f"codd_modes must be a non-empty sequence of {CODD_MODES}, got {codd_modes!r}")
    wrong = [m for m in codd_modes if m not in CODD_MODES]
    if wrong:
        raise ValueError(f"codd_modes must be drawn from {CODD_MODES}, got {wrong[0]!r}")
    if layer is None and any(m != "off" for m in codd_modes):
        raise ValueError(f"codd_modes {tuple(codd_modes)} need a layer, but layer is None")
    return list(dict.fromkeys(codd_modes))


def _slices(n: int, size: int):
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def _device(module) -> torch.device:
    try:
        return next(module.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _fmt(value, error=None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else (f"{value:.3f}" if value == 0 or value >= 1e-3 else f"{value:.2e}")
        return text if error is None else f"{text} ± {error:.3f}"
    return str(value)


def _header(columns: list[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _beside(cells: list, modes: list[str], perfect) -> list:
    """``cells`` (one per mode) with ``perfect`` inserted right after the factorized one (else last)."""
    at = modes.index("off") + 1 if "off" in modes else len(cells)
    return cells[:at] + [perfect] + cells[at:]


def generation_markdown(results: dict) -> str:
    """:func:`generation_rates`'s results as a markdown table (rates ± one standard error)."""
    modes, perfect = list(results["rates"]), results["perfect_factorized"]
    label = [MODE_LABELS.get(m, m) for m in modes]
    columns = (["steps per block"] + _beside([f"valid {x}" for x in label], modes, "valid, perfect factorized")
               + [f"novel {x}" for x in label] + [f"distinct valid {x}" for x in label]
               + [f"malformed {x}" for x in label])
    lines = [f"## {results['task']}: generation ({results['num_samples']} samples per cell; valid = the rules "
             "hold, novel = valid and unseen in training)", "", *_header(columns)]
    for steps in results["rates"][modes[0]]:
        cells = [results["rates"][m][steps] for m in modes]
        row = ([steps] + _beside([_fmt(c["valid"], c["valid_se"]) for c in cells], modes, _fmt(perfect.get(steps)))
               + [_fmt(c["novel"], c["novel_se"]) for c in cells] + [_fmt(c["distinct_valid"]) for c in cells]
               + [_fmt(c["malformed"]) for c in cells])
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def completion_markdown(results: dict) -> str:
    """:func:`completion_rates`'s results as a markdown table (exact rates ± one standard error)."""
    modes, perfect = list(results["rates"]), results["perfect_factorized"]
    label = [MODE_LABELS.get(m, m) for m in modes]
    exact = _beside([f"exact {x}" for x in label], modes, "exact, perfect factorized")
    columns = (["blanks", "steps per block"] + exact
               + [f"malformed {x}" for x in label] + ["completions per puzzle"])
    lines = [f"## {results['task']}: completing held-out solutions ({results['num_puzzles']} puzzles per cell; "
             "exact = one of the puzzle's valid completions)", "", *_header(columns)]
    for k, by_steps in results["rates"][modes[0]].items():
        for steps in by_steps:
            cells = [results["rates"][m][k][steps] for m in modes]
            row = ([k, steps] + _beside([_fmt(c["exact"], c["exact_se"]) for c in cells], modes,
                                        _fmt(perfect[k].get(steps)))
                   + [_fmt(c["malformed"]) for c in cells]
                   + [_fmt(results["completions_per_puzzle"][k])])
            lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
