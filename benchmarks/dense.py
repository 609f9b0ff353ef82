"""A hand-written dense HMM forward algorithm in plain torch: the speed limit for the circuit core.

This is the best straightforward torch implementation of what ``structures.hmm`` compiles to,
written without any circuit machinery, so that :mod:`benchmarks.hmm` can measure what the generic
compiled layout costs over it:

* parameters are logits, normalized by a softmax on every call (as the compiled circuit does), so
  that autograd reaches the same leaves;
* the emission terms of all positions are computed once before the recursion: a gather for
  observed tokens, or one [B·L, V] @ [V, H] GEMM for soft evidence (every position unobserved);
* each step of the alpha recursion is max-shifted exp → one [B, H] @ [H, H] GEMM → log;
* the backward pass is plain autograd (the per-position leaves come from one ``unbind``).

It assumes strictly positive parameters (the benchmark draws them from a Dirichlet): with zeros
the plain ``log`` would need the guarded gradient the compiled circuit uses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def shifted_log_matmul_exp(log_values: torch.Tensor, probs_t: torch.Tensor) -> torch.Tensor:
    """``out[b, k] = log Σ_c exp(log_values[b, c]) · probs_t[c, k]``; log_values [N, C], probs_t [C, K].

    The max is detached: ``log Σ exp(x - m) + m`` does not depend on it, so gradients stay exact.
    """
    shift = log_values.detach().amax(dim=-1, keepdim=True)                  # [N, 1]
    return torch.log(torch.exp(log_values - shift) @ probs_t) + shift


class DenseHMM(nn.Module):
    """A homogeneous HMM with H num_states states over a V-token alphabet, as three logit tables.

    initial_logits [H], transition_logits [H, H] (row z: logits of P(z_{t+1} | z_t = z)),
    emission_logits [H, V] (row z: logits of P(x_t | z_t = z)).
    """

    def __init__(self, initial_logits: torch.Tensor, transition_logits: torch.Tensor,
                 emission_logits: torch.Tensor):
        super().__init__()
        num_states = initial_logits.shape[-1]
        if initial_logits.dim() != 1:
            raise ValueError(f"initial_logits must have shape [H], got {tuple(initial_logits.shape)}")
        if tuple(transition_logits.shape) != (num_states, num_states):
            raise ValueError(f"transition_logits must have shape [{num_states}, {num_states}], "
                             f"got {tuple(transition_logits.shape)}")
        if emission_logits.dim() != 2 or emission_logits.shape[0] != num_states:
            raise ValueError(f"emission_logits must have shape [{num_states}, V], got {tuple(emission_logits.shape)}")
        self.initial_logits = nn.Parameter(initial_logits.detach().clone())
        self.transition_logits = nn.Parameter(transition_logits.detach().clone())
        self.emission_logits = nn.Parameter(emission_logits.detach().clone())

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``[B]``: log P(x) of fully observed sequences x [B, L] (long token ids)."""
        log_emission = torch.log_softmax(self.emission_logits, dim=-1)         # [H, V]
        # Rows of a contiguous [V, H] gather (and scatter back) faster than strided columns, and an
        # embedding lookup is several times faster than advanced indexing on small tables.
        leaves = F.embedding(x, log_emission.t().contiguous())                 # [B, L, H], gathered once
        return self._forward(leaves)

    def soft_log_normalizer(self, soft_evidence: torch.Tensor) -> torch.Tensor:
        """``[B]``: log Σ_x P(x) · Π_t exp(soft_evidence[b, t, x_t]), every position unobserved
        (the CoDD product-of-experts normalizer); soft_evidence [B, L, V] log-potentials."""
        batch, length, vocab = soft_evidence.shape
        emission_t = torch.softmax(self.emission_logits, dim=-1).t()           # [V, H]
        flat = soft_evidence.reshape(batch * length, vocab)                    # [(B L), V]
        leaves = shifted_log_matmul_exp(flat, emission_t)                      # [(B L), H], one GEMM
        return self._forward(leaves.reshape(batch, length, -1))

    def _forward(self, leaves: torch.Tensor) -> torch.Tensor:
        """The alpha recursion over per-position leaf log-values [B, L, H]; returns [B]."""
        transition = torch.softmax(self.transition_logits, dim=-1)             # [H, H], row = from-state
        # unbind, not leaves[:, t]: L selects would each backpropagate a zero-filled [B, L, H].
        first, *rest = leaves.unbind(1)                                        # L x [B, H]
        alpha = torch.log_softmax(self.initial_logits, dim=-1) + first         # [B, H]
        for leaf in rest:
            alpha = shifted_log_matmul_exp(alpha, transition) + leaf           # [B, H] @ [H, H]
        return torch.logsumexp(alpha, dim=-1)
