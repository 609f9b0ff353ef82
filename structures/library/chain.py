"""Hidden chain: a Markov chain of latent states, each state emitting a sub-circuit over a span.

The chain runs over spans (consecutive groups of positions). Latent state z at span s emits the
span's tokens through node z of an *emitter* sub-circuit; the HMM is the case of spans of one
position with a categorical emitter. Any function ``emitter(positions, num_states, vocab, rng)``
returning a node group of ``num_states`` nodes over exactly ``positions`` can be plugged in.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..circuit import Circuit
from ..limits import MAX_NODES, MAX_VARIABLES, MAX_VOCAB, brief, check_count, check_plan
from ..nodes import Categorical, NodeGroup, Product, StructureError, Sum, random_distribution

Emitter = Callable[[Sequence[int], int, int, np.random.Generator], NodeGroup]


def factorized_emitter(positions: Sequence[int], num_states: int, vocab: int, rng: np.random.Generator) -> NodeGroup:
    """State z emits each position of the span independently, from its own table per position."""
    leaves = [Categorical(p, num_states, vocab, rng=rng, name=f"emit[{p}]") for p in positions]
    return leaves[0] if len(leaves) == 1 else Product(*leaves, name=f"span{list(positions)}")


def mixture_emitter(components: int) -> Emitter:
    """State z emits its span from a mixture of ``components`` factorized distributions, so a state
    can couple the tokens inside its span."""
    components = check_count(components, "mixture_emitter: components", 1, MAX_NODES, StructureError)

    def emit(positions, num_states, vocab, rng):
        inner = factorized_emitter(positions, components, vocab, rng)
        return Sum(inner, num_nodes=num_states, rng=rng, name=f"span-mixture{list(positions)}")
    return emit


def split_spans(length: int, span: int) -> list[list[int]]:
    return [list(range(s, min(s + span, length))) for s in range(0, length, span)]


def hidden_chain(length: int, num_states: int, vocab: int, span: int | Sequence[Sequence[int]] = 2,
                 emitter: Emitter = factorized_emitter, homogeneous: bool = True, seed: int | None = 0) -> Circuit:
    """A chain of ``num_states``-state latents over spans of positions, each emitting via ``emitter``.

    ``span`` is a span width (positions split into consecutive runs) or an explicit list of spans
    that must partition ``0..length-1`` in order. ``homogeneous`` ties the transition table.
    """
    length = check_count(length, "hidden_chain: length", 1, MAX_VARIABLES, StructureError)
    num_states = check_count(num_states, "hidden_chain: num_states", 1, MAX_NODES, StructureError)
    vocab = check_count(vocab, "hidden_chain: vocab", 1, MAX_VOCAB, StructureError)
    if isinstance(span, (int, np.integer)):
        spans = split_spans(length, check_count(span, "hidden_chain: span", 1, error=StructureError))
    else:
        spans = [list(s) for s in span]
    if [p for s in spans for p in s] != list(range(length)) or any(not s for s in spans):
        raise StructureError(f"hidden_chain: spans {brief(spans)} must partition positions 0..{length - 1} in order")
    # with the default emitters: per span, its leaves, a transition and a product; tables of H x H and H x V
    check_plan("hidden_chain", groups=length + 3 * len(spans), largest_table=num_states * max(num_states, vocab),
               total_entries=num_states * (num_states * len(spans) + vocab * length),
               sizes=f"length={length}, num_states={num_states}, vocab={vocab}", error=StructureError)
    rng = np.random.default_rng(seed)
    step = emitter(spans[-1], num_states, vocab, rng)
    tied: Sum | None = None
    for s in range(len(spans) - 2, -1, -1):
        if homogeneous and tied is not None:
            future = Sum(step, num_nodes=num_states, tie_to=tied, name=f"transition[{s}]")
        else:
            future = Sum(step, num_nodes=num_states, rng=rng, name=f"transition[{s}]")
            tied = future
        step = Product(emitter(spans[s], num_states, vocab, rng), future, name=f"chain[{s}]")
    root = Sum(step, num_nodes=1, weights=random_distribution((1, num_states), rng), name="initial")
    return Circuit(root)
