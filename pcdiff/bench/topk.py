"""A top-k CoDD proposal: the circuit's leaves computed from the k most likely tokens of each position.

At LLaDA's vocabulary (V = 126,464) the full leaves cost a [L, V] @ [V, H] product per step; later
pyjuice versions of CoDD keep only each position's top-k candidates (k ≈ 1,024). This module does
that on top of the core's public API, without a sparse leaf path in the core:

1. leaves by hand: ``leaf[b, i, h] = log Σ_{v ∈ top-k(i)} g_h(v) · q_i(v)`` from a gather of the
   emission table, [H, B, L, k];
2. the core's upward pass with those leaves as ``node_potentials`` (masked positions unobserved and
   without soft evidence: their leaf is exactly the potential), giving log Z; its gradient w.r.t.
   the potentials is the posterior of every position's latent state;
3. exact token marginals over the candidates: ``P(x_i = v) = Σ_h post[i, h] · g_h(v) q_i(v) / e^{leaf[i, h]}``.

The proposal then draws each masked position from its marginals and commits by the remasking rule
(like the factorized proposal, with the layer's marginals): no joint sample, since the core's
sampler has no top-k leaf path. Restricted to a homogeneous HMM (one emission table).
"""
from __future__ import annotations

import torch

from ..distribution import soft_evidence
from ..sampler import confidence, select_top


def _latent_order(model) -> torch.Tensor:
    """[L·H] flat input-node index of (position i, latent state h), in that order."""
    by_var = model.input_nodes_by_var
    if len(model.input_logits) != 1 or len({len(n) for n in by_var}) != 1:
        raise ValueError("the top-k proposal needs a homogeneous HMM circuit (one emission table)")
    order = torch.cat(by_var)
    if order.numel() != model.layout.num_input_nodes:
        raise ValueError("the top-k proposal needs one input group per position")
    return order


def topk_marginals(layer, logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, k: int,
                   temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact marginals of p̂ restricted to each position's top-k tokens of q = softmax(logits / T).

    logits [B, L, V], tokens [B, L], masked [B, L] -> (probs [B, L, k], candidate ids [B, L, k]).
    Rows at decoded positions are meaningless (callers look at masked positions only).
    """
    model = layer.circuit
    batch, length, vocab = logits.shape
    order = _latent_order(model)
    temp = torch.full((batch,), float(temperature), device=logits.device, dtype=model.dtype)
    q = soft_evidence(logits.to(model.dtype), masked, temp, layer.mask_id)              # [B, L, V], 0 if decoded
    values, ids = q.topk(min(k, vocab), dim=-1)                                          # [B, L, k]
    with torch.no_grad():
        emission = model.log_params().inputs[0]                                          # [H, V]
    hidden = emission.shape[0]
    # Gathered along the table's contiguous rows (H of them): a gather of [V, H] rows from the
    # transposed view would stride through the whole table.
    terms = values + emission[:, ids]                                                    # [H, B, L, k]
    leaf = torch.logsumexp(terms, dim=-1)                                                # [H, B, L]
    potentials = torch.zeros(batch, model.layout.num_input_nodes, device=logits.device, dtype=model.dtype)
    by_position = leaf.permute(1, 2, 0)                                                  # [B, L, H]
    potentials[:, order] = torch.where(masked.unsqueeze(-1), by_position, 0.0).reshape(batch, length * hidden)
    with torch.enable_grad():
        potentials.requires_grad_(True)
        log_z = model.log_prob(tokens, ~masked, node_potentials=potentials)               # [B]
        (grad,) = torch.autograd.grad(log_z.sum(), potentials)
    posterior = grad[:, order].reshape(batch, length, hidden)                            # [B, L, H]
    probs = torch.einsum("blh,hblk->blk", posterior, torch.exp(terms - leaf.unsqueeze(-1)))
    return probs, ids


def topk_step(layer, logits, tokens, masked, count: int, k: int, rule: str = "low_confidence",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One decoding step with the top-k proposal: tokens [B, L] with ``count`` more positions committed."""
    probs, ids = topk_marginals(layer, logits, tokens, masked, k)
    flat = probs.reshape(-1, probs.shape[-1]).clamp_min(0)
    pick = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])      # [B, L] candidate slot
    proposal = ids.gather(-1, pick.unsqueeze(-1)).squeeze(-1)
    scores = confidence(rule, probs, pick, generator)
    n = torch.minimum(torch.full_like(masked.sum(-1), count), masked.sum(-1))
    return torch.where(select_top(scores, masked, n), proposal, tokens)
