"""The order of training slices as a pure function of (seed, step, rank).

Each step takes `world x batch` consecutive positions of an endless stream made of one
seeded permutation of the slices per epoch; rank r takes every world-th of them
(DistributedSampler style). The key of an item is (slice index, stream position): the
position seeds its augmentation. So the data a step sees depend on nothing but the seed
and the step number: a resumed run continues exactly, whatever the number of loader
workers, and the only data-pipeline state a checkpoint needs is the step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class StepBatches:
    """Batch sampler yielding, for steps start..stop-1, this rank's list of (index, position) keys."""

    def __init__(self, n_items: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1):
        if n_items < 1:
            raise ValueError("no training slices")
        self.n, self.batch, self.seed = n_items, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        """Slice order of one epoch (the same on every rank)."""
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(self.n)
        return self._perm

    def keys(self, step: int) -> list[tuple[int, int]]:
        """(slice index, stream position) of this rank's items at `step`."""
        base = step * self.world * self.batch
        positions = [base + self.rank + self.world * j for j in range(self.batch)]
        return [(int(self.permutation(p // self.n)[p % self.n]), p) for p in positions]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield self.keys(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
