"""Cached outputs of a frozen backbone for layer training.

Random masks make one backbone forward per item useless, so the cache holds ``maskings`` fixed
random maskings per training item (with a uniform-noise backbone, the corrupted positions and their
random tokens; the paper precomputes the logits once) and a step picks one of
them at random. Entries are computed on first use, and where the run says which entries it will
read, only those are computed and stored: the cost is at most min(items × maskings, steps × batch)
backbone rows, and the memory that many × L × (V [+ D when the adapter reads hidden states]) values
of the cache's dtype.
"""
from __future__ import annotations

import os

import torch

from .distributed import World
from .noise import backbone_outputs, elbo_draw, noise_fill

__all__ = ["BackboneCache", "CACHE_CHUNK", "check_cache_size"]

#: Entries are computed in fixed chunks of this many (see :meth:`BackboneCache.get`).
CACHE_CHUNK = 64


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the OS tells (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_cache_size(items: int, maskings: int, length: int, values: int, dtype, ranks: int = 1,
                     stored: int | None = None) -> None:
    """Refuse, before allocating, a cache (one rank's share) larger than half this machine's memory: the
    number of items comes from the user's data, so a large file with many maskings would otherwise run
    the machine out of memory midway through training. ``stored``: the entries kept, of items ×
    maskings (None: all)."""
    entries = items * maskings if stored is None else stored
    size = -(-entries // ranks) * length * values * torch.empty((), dtype=dtype).element_size()
    memory = physical_memory()
    if memory is not None and size > memory // 2:
        raise ValueError(f"the layer's cache of frozen-backbone outputs would take {size / 1e9:.1f} GB ({entries:,} "
                         f"of {items:,} items x {maskings} maskings, x {length} positions x {values} values), "
                         f"more than half of this machine's {memory / 1e9:.1f} GB: lower cache_maskings "
                         "(--cache-maskings), or set cache_backbone=False to run the backbone on each batch instead")


class BackboneCache:
    """Fixed maskings of every training item and the frozen backbone's outputs, filled on first use.

    Entry e = item · K + k is the item's k-th of K maskings. Every rank draws the maskings of all
    entries from the same generator (the single-process stream) and keeps those it owns
    (``world.owns``), at local index e // world.size: the cache is sharded over the ranks. ``draw``:
    how the maskings are drawn (:func:`~pcdiff.train.noise.elbo_draw`). ``read``: [items · maskings]
    bool, the entries the run will ask for (None: any); only those are computed and stored, each in
    its slot, and asking for another is an error.
    """

    def __init__(self, backbone, train: torch.Tensor, maskings: int, keep_hidden: bool, generator, dtype,
                 world: World, draw: str = "time", read: torch.Tensor | None = None):
        n, length = train.shape
        if read is not None and read.shape != (n * maskings,):
            raise ValueError(f"read must have one flag per entry, shape ({n * maskings},), got {tuple(read.shape)}")
        check_cache_size(n, maskings, length, backbone.vocab_size + (backbone.hidden_size if keep_hidden else 0),
                         dtype, world.size, None if read is None else int(read.sum()))
        t, masked = elbo_draw(train.new_empty(n * maskings, length), generator, draw)    # reads only the shape
        mine = slice(world.rank, None, world.size)
        self.t, self.masked = t[mine].clone(), masked[mine].clone()                   # [E_local], [E_local, L]
        # uniform noise: every entry's random tokens drawn here, all entries on every rank (one stream),
        # so an entry's corruption never depends on when it is computed; masked noise draws nothing
        self.fill = None
        if getattr(backbone, "noise", "mask") == "uniform":
            self.fill = noise_fill(backbone, masked.shape, generator)[mine].clone()   # [E_local, L]
        self.train, self.backbone, self.maskings, self.world = train, backbone, maskings, world
        size = len(self.t)
        self.read = None if read is None else read[mine].clone()                     # [E_local] bool
        # each stored entry's row in the tables below (an entry no step reads has none)
        self.slot = torch.arange(size) if read is None else self.read.cumsum(0) - 1
        stored = size if read is None else int(self.read.sum())
        # written before read (the filled flags), so never zeroed
        self.logits = torch.empty(stored, length, backbone.vocab_size, dtype=dtype)
        self.hidden = torch.empty(stored, length, backbone.hidden_size, dtype=dtype) if keep_hidden else None
        self.filled = torch.zeros(size, dtype=torch.bool)

    def get(self, entries: torch.Tensor, device):
        """(t, masked, logits, hidden) of owned ``entries`` [B'] (global entry numbers)."""
        local = entries // self.world.size
        if self.read is not None and not bool(self.read[local].all()):
            raise ValueError("asked for cache entries that the run's draws never read: the cache was built for "
                             "another schedule")
        # Fixed chunks of entries (those of each the run reads) are computed together: a backbone's
        # bits may depend on the batch it ran in (BLAS blocks rows by batch size), so an entry must not
        # depend on which entries happened to be asked for first (a resumed run asks in another order).
        chunks = torch.unique(local // CACHE_CHUNK)
        todo = (chunks.unsqueeze(-1) * CACHE_CHUNK + torch.arange(CACHE_CHUNK)).flatten()
        todo = todo[todo < len(self.filled)]
        todo = todo[~self.filled[todo]]
        if self.read is not None:               # a chunk's entries that no step reads are never computed
            todo = todo[self.read[todo]]
        if len(todo):
            items = (todo * self.world.size + self.world.rank) // self.maskings
            logits, hidden = backbone_outputs(self.backbone, self.train[items].to(device), self.masked[todo].to(device),
                                              fill=None if self.fill is None else self.fill[todo])
            self.logits[self.slot[todo]] = logits.to(self.logits.dtype).cpu()
            if self.hidden is not None:
                self.hidden[self.slot[todo]] = hidden.to(self.hidden.dtype).cpu()
            self.filled[todo] = True
        slots = self.slot[local]
        hidden = self.hidden[slots].to(device).float() if self.hidden is not None else None
        return self.t[local].to(device), self.masked[local].to(device), self.logits[slots].to(device).float(), hidden
