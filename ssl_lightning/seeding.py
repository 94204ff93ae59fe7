"""Counter-based random streams, so that a resumed run draws exactly what an uninterrupted one would.

Each random draw of training is keyed by *where* the run is, not by what was drawn before: a
training batch's draws (I-JEPA/FlexPredict masks, FlexPredict's position noise, blockwise feature
noise, dropout) come from torch's RNG reseeded at the start of the batch from
``(run seed, rank, epoch, batch index)``, and a training sample's augmentation from
``(data seed, epoch, sample index)``. Resuming then needs only the two seeds (in the checkpoint)
and the position (which Lightning restores): no generator state has to be saved, and the views do
not depend on the number of DataLoader workers.
"""

from __future__ import annotations

import hashlib
import struct

import torch

SEED_BITS = 62
"""Seeds are drawn in ``[0, 2**62)``; derived seeds are 63-bit, valid for ``torch.manual_seed``."""


def derive_seed(*keys: int) -> int:
    """A seed mixed from non-negative integer ``keys`` by BLAKE2b: well spread for neighbouring keys
    (consecutive batches or samples get unrelated streams), and the same on every machine, process
    and Python version."""
    digest = hashlib.blake2b(struct.pack(f"<{len(keys)}Q", *keys), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def draw_seed(strategy=None) -> int:
    """A run seed drawn from torch's global RNG (so ``seed_everything`` decides it), the same on every
    process: rank 0's draw is broadcast through ``strategy`` (a Lightning strategy) when given."""
    seed = int(torch.randint(2**SEED_BITS, (1,)))
    return seed if strategy is None else strategy.broadcast(seed, src=0)
