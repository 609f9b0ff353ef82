"""The one place generated items are judged: rates with their standard errors, novelty, diversity and
the distance to the data distribution; and, for Python source lines, an oracle nobody here wrote.

A generated row (``[L]`` token ids) is

  well formed  it decodes to a proper item: at least one character, then end symbols only (no mask id,
               no character after the first end symbol; :meth:`Vocabulary.is_well_formed` plus
               non-empty, since no loader ever yields an empty item);
  valid        well formed and a real item (:meth:`ItemData.is_real`: for words, any word of the list,
               training or held-out type);
  novel        valid and not a training item: for words exactly the valid *held-out types*, items the
               models never saw. Valid rate alone rewards collapse onto a few frequent training items;
               novelty and the distinct counts expose it.

Total variation. The reference is the **training distribution** q: the training items with their
sampling weights (``ItemData.train_weights``, word frequencies for words; uniform when unweighted),
normalized: exactly the distribution the backbone's and the layer's training batches are drawn from
(:meth:`ItemData.sample_train_batch`), so it is the target both models were fit to and a perfect fit
would sample from it. Held-out types have no weight in it (the models are never shown their
frequencies), so mass on novel items counts as distance: read TV beside novelty, not alone. The
generated distribution p̂ is the empirical one over the N rows; every malformed or unknown row is
mass outside q's support. TV = ½ Σ_x |p̂(x) − q(x)|. With finite N even a perfect sampler of q has
TV > 0 (unseen rare items): ``tv_floor`` is the mean TV of N draws from q itself, the figure a
perfect model would get with this many samples.

Code lines: :mod:`.code_oracle`'s :func:`tokenizes` and :func:`balanced` (their docstrings give the exact rules).
"""
from __future__ import annotations

import bisect
import math
from collections import Counter

import torch

from ..arguments import check_int
from ..data import ItemData, Vocabulary
from ..data.sources import PYTHON_MAX_LENGTH
from .code_oracle import balanced, tokenizes
from .tasks import standard_error

__all__ = ["decode_items", "judge_items", "reference_distribution", "total_variation", "tv_floor",
           "judge_code_lines", "code_reference_rates", "LENGTH_BINS", "WORD_LENGTH_BINS",
           "length_bin", "length_bin_labels", "bin_shares"]


def decode_items(tokens: torch.Tensor, vocab: Vocabulary) -> list[str | None]:
    """Each row of ``tokens`` [N, L] decoded, or None where it is not well formed (see the module)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[0] < 1:
        raise ValueError(f"tokens must be a [N >= 1, L] tensor, got "
                         f"{tuple(getattr(tokens, 'shape', ())) or type(tokens).__name__}")
    out = []
    for row in tokens.tolist():
        item = vocab.decode(row) if vocab.is_well_formed(row) else ""
        out.append(item or None)
    return out


def reference_distribution(data: ItemData) -> dict[str, float]:
    """q: the training items with their sampling weights, normalized (uniform without weights)."""
    weights = data.train_weights or [1.0] * len(data.train_items)
    total = math.fsum(weights)
    q: dict[str, float] = {}
    for item, w in zip(data.train_items, weights):
        q[item] = q.get(item, 0.0) + w / total
    return q


def total_variation(counts: Counter, reference: dict[str, float]) -> float:
    """½ Σ_x |p̂(x) − q(x)| with p̂ = counts / their total; keys outside ``reference`` (None included,
    for malformed rows) are mass outside q's support."""
    n = sum(counts.values())
    if n < 1:
        raise ValueError("counts must hold at least one sample")
    inside = math.fsum(abs(counts.get(x, 0) / n - q) for x, q in reference.items())
    outside = math.fsum(c for x, c in counts.items() if x not in reference) / n
    return 0.5 * (inside + outside)


def tv_floor(reference: dict[str, float], n: int, seed: int = 0, draws: int = 3) -> float:
    """Mean TV between ``n`` draws from ``reference`` and ``reference`` itself, over ``draws`` seeded
    repetitions: what a perfect sampler of q scores with ``n`` samples."""
    check_int("n", n, 1)
    check_int("draws", draws, 1)
    items = list(reference)
    probs = torch.tensor([reference[x] for x in items], dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(draws):
        picks = torch.multinomial(probs, n, replacement=True, generator=generator)
        values.append(total_variation(Counter(items[i] for i in picks.tolist()), reference))
    return math.fsum(values) / draws


def judge_items(tokens: torch.Tensor, data: ItemData, seed: int = 0,
                length_bins: tuple[int, ...] | None = None) -> dict:
    """Rates over the ``[N, L]`` rows of ``tokens`` (each rate ``r`` with ``r_se``, its binomial
    standard error): well_formed, malformed (= 1 − well_formed), valid, novel, and
    valid_among_well_formed (its standard error over the well-formed rows; nan when there are none);
    counts distinct_valid, distinct_novel; mean_length, the well-formed items' mean length in characters
    (nan without any); tv and tv_floor (``seed`` draws the floor's samples). On
    Python lines (``data.name == "python"``) also the code oracle's rates (:func:`judge_code_lines`).

    Given ``length_bins`` (e.g. :data:`WORD_LENGTH_BINS`), also counts by length, for a valid rate at
    equal length (a short string is more often a word): ``well_formed_length_<b>``, the well-formed items
    in bin b (:func:`length_bin`), and ``valid_length_<b>``, the valid among them."""
    items = decode_items(tokens, data.vocab)
    reference = reference_distribution(data)
    code = _code_rates(items) if data.name == "python" else {}
    by_length = {}
    if length_bins:
        counted = zip(("well_formed", "valid"), _count_by_length(items, length_bins, data.is_real))
        by_length = {f"{name}_length_{b}": counts[b] for name, counts in counted for b in range(len(length_bins))}
    return {**_item_rates(items, data), **code, **by_length, "tv": total_variation(Counter(items), reference),
            "tv_floor": tv_floor(reference, len(items), seed)}


def _item_rates(items: list[str | None], data: ItemData) -> dict:
    n = len(items)
    train = set(data.train_items)
    formed = [x for x in items if x is not None]
    valid = [x for x in formed if data.is_real(x)]
    novel = [x for x in valid if x not in train]
    out = {"num": n, "distinct_valid": len(set(valid)), "distinct_novel": len(set(novel)),
           "mean_length": _mean_length(formed)}
    for name, count in (("well_formed", len(formed)), ("valid", len(valid)), ("novel", len(novel))):
        out[name], out[f"{name}_se"] = count / n, standard_error(count / n, n)
    out["malformed"], out["malformed_se"] = 1.0 - out["well_formed"], out["well_formed_se"]
    out["valid_among_well_formed"], out["valid_among_well_formed_se"] = _among_well_formed(len(valid), len(formed))
    return out


def _among_well_formed(count: int, formed: int) -> tuple[float, float]:
    """``count``'s share of the ``formed`` well-formed rows and its standard error (nan, nan without any)."""
    if formed == 0:
        return float("nan"), float("nan")
    return count / formed, standard_error(count / formed, formed)


# ---- Python source lines, judged by :mod:`.code_oracle` ----


def _line_rates(lines: list[str | None], n: int) -> dict:
    """tokenizable and balanced rates (None rows fail both), each with its standard error."""
    out = {}
    for name, rule in (("tokenizable", tokenizes), ("balanced", balanced)):
        rate = sum(1 for x in lines if x is not None and rule(x)) / n
        out[name], out[f"{name}_se"] = rate, standard_error(rate, n)
    return out


def judge_code_lines(tokens: torch.Tensor, data: ItemData, length_shares: list[float] | None = None) -> dict:
    """Generated Python lines: :func:`judge_items`' rates without TV (``valid`` = a real stdlib line),
    plus ``tokenizable`` and ``balanced`` rates over all N rows (a malformed row fails both),
    ``tokenizable_among_well_formed`` (its standard error over the well-formed rows), the count of
    distinct tokenizable lines and ``mean_length``, the well-formed lines' mean length in characters
    (nan without any): a short line tokenizes more easily, so read the rates beside it.

    Given ``length_shares`` (:func:`code_reference_rates`' of real lines), also
    ``tokenizable_length_matched``: the tokenizable rate among well-formed lines of each length bin
    (:data:`LENGTH_BINS`), weighed by those shares, so decoders whose lines differ in length are
    compared as if their lines were as long as the real ones (direct standardization); nan when a
    bin the shares weigh holds no generated line."""
    items = decode_items(tokens, data.vocab)
    judged = {**_item_rates(items, data), **_code_rates(items)}
    if length_shares is not None:
        judged.update(_length_matched(items, length_shares))
    return judged


def _code_rates(items: list[str | None]) -> dict:
    formed = [x for x in items if x is not None]
    tokenizable = [x for x in formed if tokenizes(x)]
    among, among_se = _among_well_formed(len(tokenizable), len(formed))
    return {**_line_rates(items, len(items)), "tokenizable_among_well_formed": among,
            "tokenizable_among_well_formed_se": among_se, "distinct_tokenizable": len(set(tokenizable))}


def code_reference_rates(lines: list[str]) -> dict:
    """The same two rates and the mean length on real lines (e.g. the held-out lines): the data's own
    ceiling, below 1 because a stdlib line may open a bracket that a later line closes; and
    ``length_shares``, the lines' share in each bin of :data:`LENGTH_BINS`."""
    if not lines:
        raise ValueError("lines must not be empty")
    return {**_line_rates(list(lines), len(lines)), "mean_length": _mean_length(lines),
            "length_shares": bin_shares(dict(Counter(lines)), LENGTH_BINS)}


#: upper edges, in characters, of the line-length bins a length-matched rate is weighed over: two, since
#: with more (four of 8 characters were tried) a decoder whose lines cluster in length leaves a bin empty
#: in most cells, and the rate unknown
LENGTH_BINS = (16, PYTHON_MAX_LENGTH)
#: upper edges of the word-length bins (the last takes longer words): length alone moves a word's odds of being valid
WORD_LENGTH_BINS = (2, 4, 6, 7)


def length_bin(item: str, bins: tuple[int, ...]) -> int:
    """The index of ``item``'s bin in ``bins``, upper edges in characters (a longer item falls in the last)."""
    return min(bisect.bisect_left(bins, len(item)), len(bins) - 1)


def length_bin_labels(bins: tuple[int, ...]) -> list[str]:
    """Each bin's lengths for a table: ``(2, 4, 7)`` → ``["1–2", "3–4", "5+"]``."""
    lows = [1, *(edge + 1 for edge in bins[:-1])]
    return [f"{low}–{high}" if low < high else str(low) for low, high in zip(lows[:-1], bins[:-1])] + [f"{lows[-1]}+"]


def bin_shares(weights: dict[str, float], bins: tuple[int, ...]) -> list[float]:
    """The share of ``weights`` (item → weight, e.g. :func:`reference_distribution`) in each bin of ``bins``."""
    total = math.fsum(weights.values())
    if total <= 0:
        raise ValueError("weights must hold at least one item with a positive weight")
    shares = [0.0] * len(bins)
    for item, weight in weights.items():
        shares[length_bin(item, bins)] += weight / total
    return shares


def _count_by_length(items: list[str | None], bins: tuple[int, ...], passes) -> tuple[Counter, Counter]:
    """Per bin, the well-formed items and those of them that ``passes``."""
    formed, passed = Counter(), Counter()
    for item in items:
        if item is not None:
            b = length_bin(item, bins)
            formed[b], passed[b] = formed[b] + 1, passed[b] + bool(passes(item))
    return formed, passed


def _length_matched(items: list[str | None], shares: list[float]) -> dict:
    if len(shares) != len(LENGTH_BINS) or any(w < 0 for w in shares) or not math.isclose(sum(shares), 1.0):
        raise ValueError(f"length_shares must be {len(LENGTH_BINS)} non-negative shares summing to 1, got {shares}")
    formed, passed = _count_by_length(items, LENGTH_BINS, tokenizes)
    if any(w > 0 and formed[b] == 0 for b, w in enumerate(shares)):
        return {"tokenizable_length_matched": float("nan"), "tokenizable_length_matched_se": float("nan")}
    rates = {b: passed[b] / formed[b] for b, w in enumerate(shares) if w > 0}
    variance = sum(shares[b] ** 2 * standard_error(r, formed[b]) ** 2 for b, r in rates.items())
    return {"tokenizable_length_matched": sum(shares[b] * r for b, r in rates.items()),
            "tokenizable_length_matched_se": math.sqrt(variance)}


def _mean_length(lines: list[str]) -> float:
    return sum(map(len, lines)) / len(lines) if lines else float("nan")
