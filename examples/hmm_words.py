"""Fit an HMM to real English words (char-level, from wordfreq) and query it.

    python examples/hmm_words.py

Builds a homogeneous HMM with `structures.hmm`, compiles it, fits it by mini-batch EM, then
prints held-out log-likelihood, exact samples, an infill with marginals, and a MAP completion.
"""
import string

import torch
import wordfreq

import structures

LENGTH = 8            # block of 8 characters: a word then '.' padding
ALPHABET = string.ascii_lowercase + "."
END = ALPHABET.index(".")


def encode(word: str) -> list[int]:
    return [ALPHABET.index(ch) for ch in word] + [END] * (LENGTH - len(word))


def decode(ids) -> str:
    return "".join(ALPHABET[i] for i in ids).split(".")[0]


def main() -> None:
    torch.manual_seed(0)
    words = [w for w in wordfreq.top_n_list("en", 20000) if w.isalpha() and w.isascii() and len(w) < LENGTH]
    heldout, train = words[::10], [w for i, w in enumerate(words) if i % 10]
    data = torch.tensor([encode(w) for w in train])
    test = torch.tensor([encode(w) for w in heldout])

    circuit = structures.hmm(LENGTH, num_states=64, vocab=len(ALPHABET), seed=0)
    print(circuit.summary())
    model = structures.compile(circuit)
    history = structures.fit(model, data, epochs=6, batch_size=512, method="em", step_size=0.5)
    with torch.no_grad():
        print(f"train log-likelihood per char after each epoch: {[round(h, 3) for h in history]}")
        print(f"held-out log-likelihood per char: {float(model.log_prob(test).mean()) / LENGTH:.3f} "
              f"(uniform: {-torch.log(torch.tensor(float(len(ALPHABET)))):.3f})")
        samples = model.sample(num_samples=12, generator=torch.Generator().manual_seed(1))[:, 0]
        print("samples:", [decode(s) for s in samples])
        x = torch.tensor([encode("house")])
        observed = torch.ones_like(x, dtype=torch.bool)
        observed[0, 1:3] = False                                # "h??se"
        marg = model.marginals(x, observed)[0]
        top = [ALPHABET[int(i)] for i in marg[1].topk(3).indices]
        print(f"infill h??se: position 1 top letters {top}; MAP completion '{decode(model.map(x, observed)[0][0])}'")


if __name__ == "__main__":
    main()
