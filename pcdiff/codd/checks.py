"""Argument checks of :class:`~pcdiff.codd.CoDDBlockDistribution`, run once when it is built (its
circuit queries then take the checked evidence as it is): every error names the argument and what
is wrong with it."""
from __future__ import annotations

import torch

import structures


def check_finite(tensor: torch.Tensor, name: str, allow_neg_inf: bool = False) -> None:
    """Raise ValueError if ``tensor`` holds NaN or ±inf (-inf is allowed with ``allow_neg_inf``: a
    banned token), naming it and the first bad entry. One reduction; the search runs only on failure."""
    values = tensor.detach()
    if not values.numel():
        return
    if allow_neg_inf:
        top = values.amax()                                           # NaN or +inf iff one is held
        ok = not (bool(torch.isnan(top)) or bool(top == float("inf")))
    else:
        ok = bool(torch.isfinite(values).all())
    if ok:
        return
    bad = torch.isnan(values) | (values == float("inf"))
    if not allow_neg_inf:
        bad |= values == float("-inf")
    where = [int(i) for i in bad.nonzero()[0]]
    what = "NaN or +inf" if allow_neg_inf else "NaN or ±inf"
    hint = " (use -inf to ban a token)" if allow_neg_inf else ""
    raise ValueError(f"{name} contain {what}: {name}{where} = {float(values[tuple(where)])}, "
                     f"{int(bad.sum())} such value(s) in all{hint}")


def check_value(value: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, vocab: int, mask_id: int | None,
                candidate_ids: torch.Tensor | None) -> None:
    """``log_prob``'s value [..., B, L] must complete the block (within the candidates, with top-k)."""
    if value.is_floating_point() or value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"log_prob: value must be an integer tensor of token ids, got dtype {value.dtype}")
    if value.dim() < 2 or value.shape[-2:] != tokens.shape:
        raise ValueError(f"log_prob: value must have shape [..., {', '.join(map(str, tokens.shape))}], "
                         f"got {tuple(value.shape)}")
    if mask_id is not None and bool((masked & (value == mask_id)).any()):
        raise ValueError(f"log_prob: value holds the mask id {mask_id} at a masked position; "
                         "it must be a completion of the block")
    if bool(((value < 0) | (value >= vocab)).any()):
        raise ValueError(f"log_prob: value has token ids outside [0, {vocab})")
    if bool((~masked & (value != tokens)).any()):
        raise ValueError("log_prob: value differs from tokens at a decoded (unmasked) position")
    if candidate_ids is not None:
        outside = masked & ~(value.unsqueeze(-1) == candidate_ids).any(-1)
        if bool(outside.any()):
            where = tuple(int(i) for i in outside.nonzero()[0])
            raise ValueError(f"log_prob: value{list(where)} is not among the top-{candidate_ids.shape[-1]} "
                             "candidates of its position (probability 0 under the restricted p̂); build the "
                             "distribution with force_include=value to score it")


def temperature_tensor(temperature, batch: int, device, dtype, validate: bool,
                       name: str = "temperature") -> torch.Tensor:
    """A positive per-row scale of the logits (``name`` says which, in errors) as a [batch] tensor."""
    t = torch.as_tensor(temperature, device=device, dtype=dtype)
    if t.dim() == 0:
        t = t.expand(batch)
    if validate:
        if t.shape != (batch,):
            raise ValueError(f"{name} must be a float or a [{batch}] tensor, got shape {tuple(t.shape)}")
        if not bool((torch.isfinite(t) & (t > 0)).all()):
            raise ValueError(f"{name} must be finite and > 0, got {temperature!r}")
    return t


def check_arguments(model, logits, tokens, masked, mask_id) -> None:
    if not isinstance(model, structures.CompiledCircuit):
        raise TypeError(f"model must be a structures.CompiledCircuit, got {type(model).__name__}")
    length, vocab = model.num_vars, model.vocab_size
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a float tensor [B, L, V], got {getattr(logits, 'dtype', type(logits))}")
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape [B, L, V], got {tuple(logits.shape)}")
    if logits.shape[1] != length:
        raise ValueError(f"logits cover {logits.shape[1]} positions but the circuit's block length is {length}")
    if logits.shape[2] != vocab:
        raise ValueError(f"vocabulary mismatch: the backbone's logits have V = {logits.shape[2]} but the circuit's "
                         f"vocabulary is {vocab}")
    check_finite(logits, "logits", allow_neg_inf=True)
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be an integer tensor [B, L], got {getattr(tokens, 'dtype', type(tokens))}")
    if tokens.shape != logits.shape[:2]:
        raise ValueError(f"tokens must have shape {tuple(logits.shape[:2])} (logits' [B, L]), "
                         f"got {tuple(tokens.shape)}")
    if not isinstance(masked, torch.Tensor) or masked.dtype != torch.bool:
        raise TypeError(f"masked must be a bool tensor [B, L] (True = masked), "
                        f"got {getattr(masked, 'dtype', type(masked))}")
    if masked.shape != tokens.shape:
        raise ValueError(f"masked must have shape {tuple(tokens.shape)}, got {tuple(masked.shape)}")
    limits = torch.tensor(model.vocab_sizes, device=tokens.device)
    bad = ~masked & ((tokens < 0) | (tokens >= limits))
    if bool(bad.any()):
        b, i = (int(v) for v in bad.nonzero()[0])
        hint = " (the mask id at a position marked decoded?)" if int(tokens[b, i]) == mask_id else ""
        raise ValueError(f"tokens[{b}, {i}] = {int(tokens[b, i])} is a decoded token out of range for position {i} "
                         f"(vocab {model.vocab_sizes[i]}){hint}")
    if mask_id is not None and 0 <= mask_id < vocab and bool((~masked & (tokens == mask_id)).any()):
        raise ValueError(f"tokens hold the mask id {mask_id} at a position marked decoded (masked False)")


def check_force_include(force_include, masked, top_k, vocab: int) -> None:
    if top_k is None:
        raise ValueError("force_include needs top_k (without it every token is a candidate already)")
    if not isinstance(force_include, torch.Tensor) or force_include.is_floating_point() \
            or force_include.dtype == torch.bool:
        raise TypeError(f"force_include must be an integer tensor [B, L] of token ids, "
                        f"got {getattr(force_include, 'dtype', type(force_include))}")
    if force_include.shape != masked.shape:
        raise ValueError(f"force_include must have shape {tuple(masked.shape)}, got {tuple(force_include.shape)}")
    masked = masked.to(force_include.device)
    if bool((masked & ((force_include < 0) | (force_include >= vocab))).any()):
        raise ValueError(f"force_include has token ids outside [0, {vocab}) at masked positions")


def check_node_potentials(model, node_potentials, batch: int) -> None:
    """An adapter's ``node_potentials``: None, or a float [batch, num_input_nodes] tensor below +inf."""
    if node_potentials is None:
        return
    width = model.layout.num_input_nodes
    if not isinstance(node_potentials, torch.Tensor) or not node_potentials.is_floating_point():
        raise TypeError(f"node_potentials must be a float tensor [B, {width}], "
                        f"got {getattr(node_potentials, 'dtype', type(node_potentials))}")
    if node_potentials.shape != (batch, width):
        raise ValueError(f"node_potentials must have shape [{batch}, {width}], got {tuple(node_potentials.shape)}")
    check_finite(node_potentials, "node_potentials", allow_neg_inf=True)


def raise_if_impossible(log_z: torch.Tensor) -> None:
    nan = torch.isnan(log_z) | torch.isposinf(log_z)
    if bool(nan.any()):     # not "probability zero": a NaN came in through a parameter or the adapter
        rows = nan.nonzero().flatten().tolist()
        raise ValueError(f"CoDDBlockDistribution: log Z is NaN or +inf in batch row(s) {rows[:10]}: a NaN or "
                         "inf reached the circuit (its parameters, log_params or node_potentials); this is not a "
                         "block of probability zero")
    bad = torch.isneginf(log_z)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"CoDDBlockDistribution: the block has probability zero in batch row(s) {rows[:10]}: "
                         "no completion of the masked positions is possible under the circuit and the backbone "
                         "(e.g. every candidate token banned, or decided tokens the circuit forbids)")
