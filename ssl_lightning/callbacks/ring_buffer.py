"""Fixed-capacity first-in-first-out store of rows, for the callbacks' feature banks and buffers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ssl_lightning.errors import ConfigurationError


class RingBuffer:
    """The last ``capacity`` rows written, of several named tensors that share one write position
    (e.g. features and their labels), stored in preallocated tensors on the rows' device.

    Memory: ``capacity × Σ (row size × bytes per element)`` over the named tensors, allocated at the
    first :meth:`append`. The filled rows are not kept in arrival order (the oldest are overwritten
    in place); every named tensor uses the same row order.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigurationError(f"capacity must be ≥ 1, got {capacity}")
        self.capacity = capacity
        self.storage: dict[str, Tensor] = {}
        self.position = 0
        self.filled = 0

    def __len__(self) -> int:
        return self.filled

    def __getitem__(self, name: str) -> Tensor:
        """The filled rows of tensor ``name``."""
        return self.storage[name][: self.filled]

    def append(self, rows: dict[str, Tensor]) -> None:
        """Write ``rows`` (same length for every name), overwriting the oldest rows once full."""
        lengths = {name: len(tensor) for name, tensor in rows.items()}
        if len(set(lengths.values())) != 1:
            raise ConfigurationError(f"Every named tensor needs the same number of rows, got {lengths}")
        if not self.storage:
            self.storage = {name: tensor.new_zeros((self.capacity, *tensor.shape[1:])) for name, tensor in rows.items()}
        elif rows.keys() != self.storage.keys():
            raise KeyError(f"The buffer holds {sorted(self.storage)}, got rows of {sorted(rows)}")
        count = min(next(iter(lengths.values())), self.capacity)
        slots = (self.position + torch.arange(count)) % self.capacity
        for name, tensor in rows.items():
            target = self.storage[name]
            target[slots.to(target.device)] = tensor[len(tensor) - count :].to(target)
        self.position = (self.position + count) % self.capacity
        self.filled = min(self.filled + count, self.capacity)

    def to(self, device: torch.device) -> RingBuffer:
        """Move the storage to ``device`` (nothing moves when it is already there)."""
        self.storage = {name: tensor.to(device) for name, tensor in self.storage.items()}
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "position": self.position,
            "filled": self.filled,
            "storage": dict(self.storage),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ConfigurationError(
                f"The saved buffer holds {state['capacity']} rows but this one is configured for {self.capacity}; "
                "use the saved size to resume."
            )
        self.storage = dict(state["storage"])
        self.position, self.filled = state["position"], state["filled"]
