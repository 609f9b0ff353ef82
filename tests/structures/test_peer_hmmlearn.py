"""Peer check: an HMM circuit scores real English words exactly as hmmlearn's CategoricalHMM does,
and its max-product root value is hmmlearn's Viterbi log-probability."""
import numpy as np
import pytest
import torch

import structures
from structures.queries import make_evidence

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
wordfreq = pytest.importorskip("wordfreq")

LENGTH = 8
END = 26                                   # the end symbol padding a word to the block length
VOCAB = 27


def word_blocks(count: int = 300) -> np.ndarray:
    """The most frequent lowercase a-z English words of fewer than LENGTH letters, char-level,
    padded with END: ``[count, LENGTH]``."""
    words = [w for w in wordfreq.top_n_list("en", 2000) if w.isascii() and w.isalpha() and len(w) < LENGTH]
    blocks = np.full((len(words), LENGTH), END, dtype=np.int64)
    for row, word in enumerate(words):
        blocks[row, :len(word)] = [ord(c) - ord("a") for c in word.lower()]
    assert len(blocks) >= count
    return blocks[:count]


def random_parameters(num_states: int, seed: int):
    rng = np.random.default_rng(seed)
    def rows(shape):
        table = rng.gamma(0.5, size=shape) + 1e-3
        return table / table.sum(-1, keepdims=True)
    return rows(num_states), rows((num_states, num_states)), rows((num_states, VOCAB))


def peer(initial, transition, emission):
    model = hmmlearn_hmm.CategoricalHMM(n_components=len(initial), init_params="", params="")
    model.n_features = emission.shape[1]
    model.startprob_, model.transmat_, model.emissionprob_ = initial, transition, emission
    return model


def both(num_states: int, seed: int):
    """(our compiled HMM, hmmlearn's) with the same random parameters, and the parameters."""
    initial, transition, emission = random_parameters(num_states, seed)
    ours = structures.compile(structures.hmm(LENGTH, num_states, VOCAB, initial=initial, transition=transition,
                                             emission=emission), dtype=torch.float64)
    return ours, peer(initial, transition, emission), (initial, transition, emission)


@pytest.mark.parametrize("num_states,seed", [(3, 0), (8, 1)])
def test_hmm_scores_words_like_hmmlearn(num_states, seed):
    ours, theirs, (initial, transition, emission) = both(num_states, seed)
    words = word_blocks()
    with torch.no_grad():
        scores = ours.log_prob(torch.from_numpy(words)).numpy()
    expected = np.array([theirs.score(w.reshape(-1, 1), [LENGTH]) for w in words])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    # Sanity: the two disagree once a parameter differs, so agreement above is not vacuous.
    other = peer(initial, transition[::-1].copy(), emission)
    assert np.abs(np.array([other.score(w.reshape(-1, 1), [LENGTH]) for w in words[:20]]) - scores[:20]).max() > 1e-3


@pytest.mark.parametrize("num_states,seed", [(3, 2), (8, 3)])
def test_max_product_is_viterbi(num_states, seed):
    ours, theirs, _ = both(num_states, seed)
    words = word_blocks(100)
    with torch.no_grad():
        evidence = make_evidence(ours, torch.from_numpy(words))             # every position observed
        best_path = ours.upward(evidence, semiring="max")[ours.layout.root][:, 0].numpy()
        map_tokens, _ = ours.map(torch.from_numpy(words))
    expected = np.array([theirs.decode(w.reshape(-1, 1), [LENGTH], algorithm="viterbi")[0] for w in words])
    np.testing.assert_allclose(best_path, expected, rtol=0, atol=1e-6)
    assert torch.equal(map_tokens, torch.from_numpy(words))                   # nothing left to complete
    # The best path is one path: never more than the total over paths.
    assert np.all(best_path <= ours.log_prob(torch.from_numpy(words)).detach().numpy() + 1e-12)
