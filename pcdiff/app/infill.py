"""`pcdiff infill`: complete items with unknown characters, one item a line, with a trained run.

An item is written as it should come out, with a mask character (default ``?``) at every unknown
position: ``c?t`` asks for the middle letter, ``??????`` for any six-character item. The positions
after the item are the end symbol, as in training, so the completion keeps the item's length.
Every line is checked before any decoding: one error names the first bad line.
"""
from __future__ import annotations

import torch

from ..data import Vocabulary
from ..decode import denoise

__all__ = ["read_items", "infill", "completions"]

#: Rows decoded together.
BATCH_ROWS = 512


def read_items(text: str, vocab: Vocabulary, block_length: int, mask_char: str = "?",
               source: str = "input") -> torch.Tensor:
    """[N, block_length] token ids of the items in ``text`` (one a line), with the vocabulary's mask id
    at each ``mask_char``. Errors name ``source`` and the line: a line too long for the run's block,
    a character outside its vocabulary, a line with nothing to fill, no line at all."""
    if len(mask_char) != 1:
        raise ValueError(f"--mask-char must be one character, got {mask_char!r}")
    if mask_char in vocab.tokens:
        raise ValueError(f"--mask-char {mask_char!r} is a character of the run's vocabulary: choose another")
    lines = text.split("\n")
    if lines and lines[-1] == "":                      # the newline that ends the last line
        lines.pop()
    if not lines:
        raise ValueError(f"{source}: no items (one item a line, {mask_char!r} at the unknown positions)")
    rows = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        where = f"{source}:{number}"
        if len(line) > block_length - 1:
            raise ValueError(f"{where}: {len(line)} characters; the run's items have at most {block_length - 1}")
        if mask_char not in line:
            raise ValueError(f"{where}: nothing to fill (no {mask_char!r} in {line[:40]!r})")
        unknown = sorted({c for c in line if c != mask_char and c not in vocab.tokens[:-1]})
        if unknown:
            raise ValueError(f"{where}: characters outside the run's vocabulary: {''.join(unknown)[:20]!r}")
        known = vocab.encode(line.replace(mask_char, vocab.tokens[0]), block_length)
        rows.append([vocab.mask_id if c == mask_char else t for c, t in zip(line, known)] + known[len(line):])
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def infill(run, items: torch.Tensor, *, num: int = 1, steps: int | None = None, codd: str = "joint",
           remasking: str = "low_confidence", temperature: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """[N · num, L]: ``num`` completions of every item (item i's are rows i·num .. i·num + num − 1),
    decoded in ``steps`` backbone calls each (default: one masked position a step)."""
    backbone, layer, length = run.backbone, run.layer, run.data.block_length
    to_decide = items == run.data.vocab.mask_id          # read_items' marks (any backbone's noise goes there)
    masks = int(to_decide.sum(-1).max())
    steps = masks if steps is None else steps
    if not 1 <= steps <= length:
        raise ValueError(f"--steps must be in [1, {length}] (the run's block length), got {steps}")
    rows = items.repeat_interleave(num, dim=0).to(backbone.device)
    to_decide = to_decide.repeat_interleave(num, dim=0).to(backbone.device)
    out = [denoise(backbone, rows[i:i + BATCH_ROWS], to_decide=to_decide[i:i + BATCH_ROWS],
                   layer=layer if codd != "off" else None, block_length=length,
                   steps=steps, codd=codd, remasking=remasking, temperature=temperature, generator=generator)
           for i in range(0, len(rows), BATCH_ROWS)]
    return torch.cat(out)


def completions(tokens: torch.Tensor, vocab: Vocabulary) -> list[str]:
    """Each row as text, up to its first end symbol (a completion may end early where the model put one)."""
    return [vocab.decode(row) for row in tokens.tolist()]
