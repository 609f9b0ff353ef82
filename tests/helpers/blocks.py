"""Oracles for the CoDD block distribution: random blocks (logits, tokens, masked positions,
temperatures), the reference soft evidence, and brute-force enumeration of p̂ ∝ C(x) · Π softmax(logits/T)."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

import structures
from helpers.brute import (assert_log_close, brute_free_joint, brute_marginals, consistent, free_index,
                           goodness_of_fit_pvalue, log_measure, logsumexp)


LOGIT_KINDS = ("normal", "huge", "neg_inf")


def reference_evidence(logits: np.ndarray, masked: np.ndarray, temperature, mask_id=None) -> np.ndarray:
    """numpy soft evidence: log softmax(logits / T) at masked positions, 0 at decoded ones."""
    z = logits / np.asarray(temperature, dtype=np.float64).reshape(-1, 1, 1)
    e = z - logsumexp(z, axis=-1)[..., None]
    if mask_id is not None and 0 <= mask_id < logits.shape[-1]:
        e[..., mask_id] = -np.inf
    return np.where(masked[..., None], e, 0.0)


def brute_block_rows(circuit, tokens, masked, e):
    """Per row: (completions [N, L], their exact log p̂ [N]) by enumeration."""
    xs, _ = log_measure(circuit)
    out = []
    for b in range(len(tokens)):
        keep = consistent(xs, tokens[b], ~masked[b])
        _, logp = log_measure(circuit, e[b])
        logp = logp[keep]
        out.append((xs[keep], logp - logsumexp(logp)))
    return out


def random_block(rng, circuit, batch, kind, temperature=None, force_masked=True):
    """(logits, tokens with the mask id V at masked positions, masked, temperature) as float64 tensors."""
    n, vocab = circuit.num_vars, circuit.vocab_size
    scale = {"normal": 2.0, "huge": 1e4, "neg_inf": 3.0}[kind]
    logits = rng.normal(size=(batch, n, vocab)) * scale
    if kind == "neg_inf":
        ban = rng.random(logits.shape) < 0.5
        ban[np.arange(batch)[:, None], np.arange(n)[None, :], rng.integers(0, vocab, (batch, n))] = False
        logits[ban] = -np.inf
    masked = rng.random((batch, n)) < 0.6
    if force_masked:
        masked[np.arange(batch), rng.integers(0, n, batch)] = True
    tokens = np.stack([rng.integers(0, v, batch) for v in circuit.vocab_sizes], 1)
    tokens = np.where(masked, vocab, tokens)                                 # the mask id V sits at masked entries
    t = rng.uniform(0.1, 3.0, size=batch) if temperature is None else np.full(batch, temperature)
    return torch.from_numpy(logits), torch.from_numpy(tokens), torch.from_numpy(masked), torch.from_numpy(t)


def log_prob_table(dist, completions):
    """log_prob of each row's completions, via one [N, B, L] call (rows padded by repetition)."""
    longest = max(len(c) for c in completions)
    value = torch.stack([torch.from_numpy(c[np.arange(longest) % len(c)]) for c in completions], 1)
    lp = dist.log_prob(value).detach().numpy()                               # [N, B]
    return [lp[:len(c), b] for b, c in enumerate(completions)]


def check_exact(circuit, dist, logits, tokens, masked, t, mask_id=None):
    e = reference_evidence(logits.numpy(), masked.numpy(), t.numpy(), mask_id)
    rows = brute_block_rows(circuit, tokens.numpy(), masked.numpy(), e)
    if mask_id is not None:                                                  # log_prob refuses the mask id
        rows = [(xs[keep], lp[keep]) for b, (xs, lp) in enumerate(rows)
                for keep in [~((xs == mask_id) & masked[b].numpy()).any(1)]]
    assert_matches_brute_force(dist, circuit, tokens, masked, e, rows)


def brute_z(circuit, tokens, masked, e):
    xs, _ = log_measure(circuit)
    return np.array([logsumexp(np.where(consistent(xs, tokens[b], ~masked[b]), log_measure(circuit, e[b])[1], -np.inf))
                     for b in range(len(tokens))])


def coupled_circuits():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, (300, 1))
    data = np.where(rng.random((300, 4)) < 0.7, base, rng.integers(0, 3, (300, 4)))
    sticky = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    return {
        "hmm": structures.hmm(4, 3, 3, transition=sticky, emission=sticky, initial=[0.3, 0.3, 0.4]),
        "chain": structures.hidden_chain(4, 2, 3, span=[[0], [1, 2], [3]], emitter=structures.mixture_emitter(2),
                                         seed=1),
        "tree": structures.latent_tree(nx.star_graph(3), 3, 3, seed=2),
        "hclt": structures.hclt(data, 2, 3, seed=3),
        "mixture": structures.mixture(structures.hmm(4, 2, 3, seed=4), structures.hmm(4, 2, 3, seed=5)),
    }


#: the backbone noises the distribution must be indifferent to (pcdiff.backbones.protocol.NOISE_KINDS)
NOISE_KINDS = ("mask", "uniform")


def noised(tokens: torch.Tensor, masked: torch.Tensor, noise: str, vocab: int, seed: int = 0):
    """(tokens, mask id to pass) for a backbone of ``noise``: masked models keep the mask id ``vocab``
    at masked entries; uniform-noise models have no mask id and hold a random in-vocabulary token
    there (drawn from its own generator, so the blocks' other draws are unchanged)."""
    if noise == "mask":
        return tokens, vocab
    g = torch.Generator().manual_seed(seed)
    return torch.where(masked, torch.randint(0, vocab, tuple(tokens.shape), generator=g), tokens), None


def block_for(circuit, seed, batch):
    """Two fixed blocks (3 masked positions each, one decoded), repeated to ``batch`` rows."""
    rng = np.random.default_rng(seed)
    logits = torch.from_numpy(rng.normal(size=(2, 4, circuit.vocab_size)) * 2)
    masked = torch.tensor([[True, True, True, False], [True, False, True, True]])
    tokens = torch.where(masked, circuit.vocab_size, torch.from_numpy(rng.integers(0, circuit.vocab_size, (2, 4))))
    t = torch.tensor([0.8, 1.3], dtype=torch.float64)
    reps = batch // 2
    return [x.repeat(reps, *([1] * (x.dim() - 1))) for x in (logits, tokens, masked, t)]


def gof_pvalues(circuit, samples, tokens, masked, logits, t):
    """Goodness of fit of sampled blocks [N, B0·reps, L] to the brute-force p̂ of the first two rows."""
    e = reference_evidence(logits[:2].numpy(), masked[:2].numpy(), t[:2].numpy())
    pvalues = []
    for b in range(2):
        free = np.flatnonzero(masked[b].numpy())
        probs = brute_free_joint(circuit, tokens[b].numpy(), ~masked[b].numpy(), e[b])
        draws = samples[:, b::2].reshape(-1, samples.shape[-1]).numpy()
        assert (draws[:, ~masked[b].numpy()] == tokens[b].numpy()[~masked[b].numpy()]).all()
        pvalues.append(goodness_of_fit_pvalue(free_index(draws, free, circuit.vocab_sizes), probs))
    return pvalues


def assert_matches_brute_force(dist, circuit, tokens, masked, e, rows) -> np.ndarray:
    """log_prob over every completion in ``rows`` (normalized to 1) and the marginals equal brute force;
    returns the marginals."""
    for (xs, expected), actual in zip(rows, log_prob_table(dist, [xs for xs, _ in rows])):
        assert_log_close(actual, expected)
        assert np.exp(actual).sum() == pytest.approx(1.0, abs=1e-9)
    marg = dist.marginals().numpy()
    for b in range(len(tokens)):
        np.testing.assert_allclose(marg[b], brute_marginals(circuit, tokens[b].numpy(), ~masked[b].numpy(), e[b]),
                                   atol=1e-9)
    return marg
