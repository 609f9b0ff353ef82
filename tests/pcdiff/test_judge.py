"""The judge of generated items on hand-computed cases: rates and their standard errors, novelty,
distinct counts, valid among well-formed, total variation to the training distribution (and its
finite-sample floor); Python's tokenizer and the bracket / quote balance on hand-picked lines."""
import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdiff.app.judge import (LENGTH_BINS, bin_shares, code_reference_rates, decode_items, judge_code_lines, judge_items,
                              length_bin, length_bin_labels, reference_distribution, total_variation, tv_floor)
from pcdiff.data import ItemData, Vocabulary

A, B, END, MASK = 0, 1, 2, 3


@pytest.fixture
def tiny():
    """Training items ab (weight 2), ba, a (weight 1 each); the held-out type b; blocks of 3."""
    return ItemData(train_items=["ab", "ba", "a"], heldout_items=["b"], vocab=Vocabulary("ab"), block_length=3,
                    train_weights=[2.0, 1.0, 1.0])


ROWS = [[A, B, END], [A, B, END],         # ab twice: valid, a training item
        [B, END, END],                    # b: valid and novel (the held-out type)
        [B, A, END],                      # ba: valid
        [B, B, END],                      # bb: well formed, not a real item
        [END, END, END],                  # empty: not a proper item
        [A, END, B],                      # a character after the end: malformed
        [A, MASK, END]]                   # a mask left: malformed


def test_rates_counts_and_standard_errors_by_hand(tiny):
    judged = judge_items(torch.tensor(ROWS), tiny)
    assert judged["num"] == 8
    assert judged["well_formed"] == 5 / 8 and judged["malformed"] == 3 / 8
    assert judged["valid"] == 4 / 8 and judged["novel"] == 1 / 8
    assert judged["distinct_valid"] == 3 and judged["distinct_novel"] == 1
    assert judged["valid_among_well_formed"] == 4 / 5
    assert judged["mean_length"] == (2 + 2 + 1 + 2 + 2) / 5                  # ab, ab, b, ba, bb
    assert judged["valid_se"] == pytest.approx(math.sqrt(0.5 * 0.5 / 8))
    assert judged["novel_se"] == pytest.approx(math.sqrt(1 / 8 * 7 / 8 / 8))
    assert judged["valid_among_well_formed_se"] == pytest.approx(math.sqrt(0.8 * 0.2 / 5))   # over the 5 formed
    # q = {ab: 1/2, ba: 1/4, a: 1/4}; p̂ = {ab: 2/8, b: 1/8, ba: 1/8, bb: 1/8, malformed: 3/8}
    # ½ (|2/8 − 1/2| + |1/8 − 1/4| + |0 − 1/4| + 1/8 + 1/8 + 3/8) = ½ (0.625 + 0.625)
    assert judged["tv"] == pytest.approx(0.625)
    assert 0 < judged["tv_floor"] < 1


def test_decoding_and_reference(tiny):
    assert decode_items(torch.tensor(ROWS), tiny.vocab) == ["ab", "ab", "b", "ba", "bb", None, None, None]
    assert reference_distribution(tiny) == pytest.approx({"ab": 0.5, "ba": 0.25, "a": 0.25})
    unweighted = ItemData(train_items=["a", "b"], heldout_items=[], vocab=Vocabulary("ab"), block_length=2)
    assert reference_distribution(unweighted) == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="tokens"):
        decode_items(torch.zeros(3, dtype=torch.long), tiny.vocab)


def test_nothing_well_formed_gives_nan_not_an_error(tiny):
    judged = judge_items(torch.tensor([[A, END, B]]), tiny)
    assert judged["well_formed"] == 0 and math.isnan(judged["valid_among_well_formed"])
    assert judged["tv"] == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=20),
       st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3))
def test_tv_is_the_largest_gap_over_events(samples, weights):
    """TV = Σ_x max(p̂(x) − q(x), 0) = max over events E of p̂(E) − q(E), brute forced over subsets."""
    q = {x: w / sum(weights) for x, w in zip("abd", weights)}
    counts, n = Counter(samples), len(samples)
    outcomes = sorted(set(q) | set(counts), key=str)
    p = {x: counts.get(x, 0) / n for x in outcomes}
    best = max(sum(p[x] - q.get(x, 0.0) for i, x in enumerate(outcomes) if mask >> i & 1)
               for mask in range(2 ** len(outcomes)))
    assert total_variation(counts, q) == pytest.approx(best, abs=1e-12)


def test_tv_floor_by_hand():
    assert tv_floor({"a": 1.0}, 5) == 0.0                       # one item: every draw is the reference
    assert tv_floor({"a": 0.5, "b": 0.5}, 1) == 0.5             # one sample: half the mass is always off
    # two samples of a fair coin: TV 0 half the time (one of each), 0.5 otherwise → mean near 0.25
    assert tv_floor({"a": 0.5, "b": 0.5}, 2, draws=2000) == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="n"):
        tv_floor({"a": 1.0}, 0)


def test_code_line_rates_by_hand():
    data = ItemData(train_items=["f(x)", "x"], heldout_items=["y"], vocab=Vocabulary("()fxy"), block_length=5)
    v = data.vocab
    rows = [v.encode("f(x)", 5), v.encode("f(x", 5), v.encode("x)", 5), v.encode("y", 5),
            [v.end_id] * 5]                                        # empty: fails both
    judged = judge_code_lines(torch.tensor(rows), data)
    assert judged["tokenizable"] == 2 / 5 and judged["balanced"] == 2 / 5
    assert judged["tokenizable_se"] == pytest.approx(math.sqrt(0.4 * 0.6 / 5))
    assert judged["valid"] == 2 / 5 and judged["novel"] == 1 / 5 and judged["distinct_tokenizable"] == 2
    assert judged["tokenizable_among_well_formed"] == 2 / 4                  # the empty row is not well formed
    assert judged["mean_length"] == (4 + 3 + 2 + 1) / 4
    assert judged["tokenizable_among_well_formed_se"] == pytest.approx(math.sqrt(0.5 * 0.5 / 4))
    # the demo's judge adds the same rates on Python lines alone
    lines = ItemData(train_items=data.train_items, heldout_items=data.heldout_items, vocab=v, block_length=5,
                     name="python")
    demo = judge_items(torch.tensor(rows), lines)
    assert {k: demo[k] for k in judged} == judged and "tv" in demo
    assert "tokenizable" not in judge_items(torch.tensor(rows), data)
    nothing = judge_code_lines(torch.tensor([[v.end_id] * 5]), data)
    assert all(math.isnan(nothing[k]) for k in ("tokenizable_among_well_formed", "tokenizable_among_well_formed_se",
                                                "mean_length"))
    assert "tv" not in judged
    ceiling = code_reference_rates(["f(x)", "foo(a,"])
    assert ceiling["tokenizable"] == 0.5 and ceiling["balanced"] == 0.5 and ceiling["mean_length"] == 5


def test_length_matched_rate_by_hand():
    vocab = Vocabulary("()fx =")
    data = ItemData(train_items=["x"], heldout_items=["f"], vocab=vocab, block_length=32)
    short, long_ok, long_bad = "f(x)", "x = f(x) " + "x" * 8, "x = f(x " + "x" * 9   # 4, 17 and 17 characters
    assert [length_bin(x, LENGTH_BINS) for x in (short, long_ok, long_bad)] == [0, 1, 1]
    rows = torch.tensor([vocab.encode(x, 32) for x in (short, short, short, long_ok, long_bad)])
    # generated: mostly short lines, which all tokenize, and long ones, half of which do; real lines:
    # a quarter short
    shares = code_reference_rates([short, long_ok, long_ok, long_bad])["length_shares"]
    assert shares == [0.25, 0.75]
    judged = judge_code_lines(rows, data, length_shares=shares)
    assert judged["tokenizable_among_well_formed"] == 4 / 5
    assert judged["tokenizable_length_matched"] == pytest.approx(0.25 * 1.0 + 0.75 * 0.5)
    assert judged["tokenizable_length_matched_se"] == pytest.approx(math.sqrt(0.75 ** 2 * 0.25 / 2))
    # a bin the real lines weigh but no generated line falls in: the matched rate is unknown, not guessed
    unknown = judge_code_lines(rows[:3], data, length_shares=shares)
    assert math.isnan(unknown["tokenizable_length_matched"])
    with pytest.raises(ValueError, match="length_shares"):
        judge_code_lines(rows, data, length_shares=[1.0, 1.0])


@given(st.lists(st.text(alphabet="()fx =", min_size=1, max_size=31), min_size=1, max_size=30))
def test_length_matched_rate_equals_the_plain_rate_at_the_generated_lengths(lines):
    """Weighed by the generated lines' own length shares, standardization changes nothing."""
    vocab = Vocabulary("()fx =")
    data = ItemData(train_items=["x"], heldout_items=["f"], vocab=vocab, block_length=32)
    judged = judge_code_lines(torch.tensor([vocab.encode(x, 32) for x in lines]), data,
                              length_shares=code_reference_rates(lines)["length_shares"])
    assert judged["tokenizable_length_matched"] == pytest.approx(judged["tokenizable_among_well_formed"])


def test_counts_by_length_by_hand():
    """Words counted in their length's bin; a valid rate at equal length is valid / well-formed per bin."""
    vocab = Vocabulary("abcdefg")
    data = ItemData(train_items=["ab", "abcde"], heldout_items=["abc"], vocab=vocab, block_length=8)
    words = ["ab", "ba", "abc", "abcde", "abcdefg", "gfedcba"]          # lengths 2, 2, 3, 5, 7, 7
    rows = torch.tensor([vocab.encode(w, 8) for w in words] + [[vocab.end_id] * 8])   # and one malformed row
    judged = judge_items(rows, data, length_bins=(2, 4, 6))
    assert [judged[f"well_formed_length_{b}"] for b in range(3)] == [2, 1, 3]
    assert [judged[f"valid_length_{b}"] for b in range(3)] == [1, 1, 1]
    assert "valid_length_0" not in judge_items(rows, data)
    assert [length_bin(w, (2, 4, 6)) for w in words] == [0, 0, 1, 2, 2, 2]
    assert length_bin_labels((2, 4, 6)) == ["1–2", "3–4", "5+"]
    assert length_bin_labels((1, 3)) == ["1", "2+"]
    assert bin_shares({"ab": 3.0, "abcde": 1.0}, (2, 4, 6)) == [0.75, 0.0, 0.25]
    with pytest.raises(ValueError, match="positive weight"):
        bin_shares({}, (2, 4))
