"""Hidden Markov model over a block of positions, as a circuit.

Layout (position t = 0..L-1, H hidden states):

    emit_t   = Categorical(var=t, H)                       node z: P(x_t | z_t = z)
    future_t = Sum(step_{t+1}, weights=transition)         node z: Σ_z' P(z'|z) · step_{t+1}[z']
    step_t   = emit_t ⊙ future_t   (step_{L-1} = emit_{L-1})
    root     = Sum(step_0, weights=initial[None, :])

so ``step_t[z]`` is the probability of ``x_t..x_{L-1}`` given ``z_t = z`` (the backward message).
"""
from __future__ import annotations

import numpy as np

from ..circuit import Circuit
from ..limits import MAX_NODES, MAX_VARIABLES, MAX_VOCAB, check_count, check_plan
from ..nodes import Categorical, Product, StructureError, Sum, random_distribution


def hmm(length: int, num_states: int, vocab: int, homogeneous: bool = True, initial=None, transition=None,
        emission=None, seed: int | None = 0) -> Circuit:
    """An HMM circuit with ``num_states`` latent states over ``length`` positions of a ``vocab``-token alphabet.

    ``initial`` [H], ``transition`` [H, H] (row z is P(z_{t+1} | z_t = z)) and ``emission`` [H, V]
    set the parameters exactly when given (homogeneous only); anything omitted is drawn at random
    from ``seed``. With ``homogeneous=False`` every position gets its own random tables.
    """
    length = check_count(length, "hmm: length", 1, MAX_VARIABLES, StructureError)
    num_states = check_count(num_states, "hmm: num_states", 1, MAX_NODES, StructureError)
    vocab = check_count(vocab, "hmm: vocab", 1, MAX_VOCAB, StructureError)
    per_position = num_states * (num_states + vocab)                   # a transition and an emission table
    check_plan("hmm", groups=3 * length, largest_table=num_states * max(num_states, vocab),
               total_entries=per_position * (1 if homogeneous else length),
               sizes=f"length={length}, num_states={num_states}, vocab={vocab}", error=StructureError)
    if not homogeneous and any(p is not None for p in (transition, emission)):
        raise StructureError("hmm: transition/emission arrays are shared tables; they need homogeneous=True")
    rng = np.random.default_rng(seed)
    if initial is None:
        initial = random_distribution((1, num_states), rng)
    else:
        initial = np.asarray(initial, dtype=np.float64).reshape(1, -1)
    if transition is None:
        transition = random_distribution((num_states, num_states), rng)
    if emission is None:
        emission = random_distribution((num_states, vocab), rng)

    emit_source = Categorical(length - 1, num_states, vocab, probs=emission, name=f"emit[{length - 1}]")
    step = emit_source
    transition_source = None
    for t in range(length - 2, -1, -1):
        if homogeneous and transition_source is not None:
            future = Sum(step, num_nodes=num_states, tie_to=transition_source, name=f"future[{t}]")
        else:
            table = transition if homogeneous else random_distribution((num_states, num_states), rng)
            future = Sum(step, num_nodes=num_states, weights=table, name=f"future[{t}]")
            transition_source = future
        if homogeneous:
            emit = Categorical(t, num_states, vocab, tie_to=emit_source, name=f"emit[{t}]")
        else:
            emit = Categorical(t, num_states, vocab, probs=random_distribution((num_states, vocab), rng),
                               name=f"emit[{t}]")
        step = Product(emit, future, name=f"step[{t}]")
    root = Sum(step, num_nodes=1, weights=initial, name="initial")
    return Circuit(root)
