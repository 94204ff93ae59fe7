"""The training sampler and dataset wrapper behind exact resume (see :mod:`ssl_lightning.seeding`).

:class:`ResumableSampler` shuffles as ``DistributedSampler`` does (a permutation seeded by
``seed + epoch``, this process's share of it) and yields keys ``(index, sample_seed)``;
:class:`SeededSamples` applies the wrapped dataset's random transform to sample ``index`` with
torch's CPU RNG seeded by ``sample_seed``. torchdata's ``StatefulDataLoader`` saves the sampler's
position in Lightning checkpoints, so a run resumed mid-epoch continues with the next batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

from ssl_lightning.seeding import derive_seed


class ResumableSampler(DistributedSampler):
    """``DistributedSampler``'s seeded, epoch-dependent shuffle whose position is part of its state.

    Args:
        dataset: the training dataset (only its length is read).
        batch_size: images per batch; an epoch with fewer than this many samples left (the loader
            drops the last incomplete batch) counts as finished.
        num_replicas, rank: the processes sharing the data and this one's rank.
        seed: the shuffle's and the augmentations' seed, the same on every rank.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.yielded = 0
        self._resume_at: int | None = None

    def __iter__(self):
        epoch, start = self.epoch, self._resume_at or 0
        self._resume_at = None
        indices = list(super().__iter__())[start:]
        self.yielded = start
        for index in indices:
            self.yielded += 1
            yield index, derive_seed(self.seed, epoch, index)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` was taken; a finished epoch continues at the start of the next
        (Lightning may build the iterator before it sets the next epoch)."""
        self.seed, self.epoch, yielded = state["seed"], state["epoch"], state["yielded"]
        if self.num_samples - yielded < self.batch_size:
            self.epoch, yielded = self.epoch + 1, 0
        self._resume_at = yielded


class SeededSamples(Dataset):
    """``dataset`` whose sample ``index`` is drawn with torch's CPU RNG seeded by the key's seed (keys
    from :class:`ResumableSampler`); the RNG's state outside the call is left as it was. A plain
    integer index reads the sample without seeding."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]):
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]
