"""The stop at a non-finite loss without a host sync in the training step.

Asking ``bool(torch.isfinite(loss))`` before the backward pass makes the host wait until the device
has computed the loss; on a GPU that empties the queue of kernels the host keeps ahead of the device,
every step. :class:`DivergenceGuard` keeps the decision on the device instead:

1. ``record(loss, step)`` folds ``isfinite(loss)`` into a device flag that stays set once a step has
   failed (with the first failing step and its loss value, all-reduced over the processes so that
   every rank agrees);
2. the optimizer skips its update on the device when the flag is set: torch's fused optimizers
   (``Adam``/``AdamW``/``SGD`` with ``fused=True``) read a ``found_inf`` tensor, as they do for
   ``torch.amp.GradScaler``, and leave the weights, their state and the step count unchanged;
   ``hold(momentum)`` freezes an EMA teacher the same way; the method puts back the buffers
   (BatchNorm statistics) with ``torch.where``;
3. the flag is copied to pinned host memory without waiting, and read by ``poll`` once the copy has
   landed (the next step, on a GPU; at once on a CPU), which raises with the failing step named.

From the failing step until ``poll`` raises, no update reaches the weights, so they are the ones
from before the failing batch. Optimizers that cannot skip an update on the device (LARS, non-fused
AdamW) keep the synchronous check (:meth:`~ssl_lightning.methods.base.SSLMethod.on_before_backward`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

_NO_FAILURE = -1.0


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` can skip a step on the device: torch's fused optimizers read the
    ``found_inf`` tensor that ``torch.amp.GradScaler`` sets, which ``_step_supports_amp_scaling`` marks."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


class DivergenceGuard:
    """A device-side record of the first training step with a non-finite loss (see the module)."""

    def __init__(self) -> None:
        self.record_tensor: Tensor | None = None  # (first failing step or -1, its loss), float64, on the device
        self.host: Tensor | None = None
        self.copied: torch.cuda.Event | None = None
        self.reported = False

    def record(self, loss: Tensor, step: int) -> None:
        """Fold this step's loss into the record (:meth:`failed` then tells whether a step has failed)."""
        loss = loss.detach()
        if self.record_tensor is None or self.record_tensor.device != loss.device:
            self.record_tensor = torch.tensor([_NO_FAILURE, 0.0], dtype=torch.float64, device=loss.device)
        failed_now = ~torch.isfinite(loss).all()
        first = failed_now & (self.record_tensor[0] < 0)
        values = torch.stack((torch.full_like(self.record_tensor[0], step), loss.to(torch.float64).sum()))
        self.record_tensor.copy_(torch.where(first, values, self.record_tensor))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # The earliest failure of any rank (steps are equal on all ranks; -1 means none): no host sync.
            negated = torch.where(self.record_tensor[0] < 0, float("-inf"), -self.record_tensor[0])
            dist.all_reduce(negated, op=dist.ReduceOp.MAX)
            self.record_tensor[0] = torch.where(torch.isfinite(negated), -negated, _NO_FAILURE)

    def failed(self) -> Tensor:
        """The device flag "a step has failed" (bool, 0-dim)."""
        return self.record_tensor[0] >= 0

    def found_inf(self) -> Tensor:
        """The float32 0/1 tensor a fused optimizer reads to skip its step (``optimizer.found_inf``)."""
        return self.failed().to(torch.float32)

    def hold(self, momentum: float) -> float | Tensor:
        """An EMA momentum that is 1 (no change) once a step has failed; ``momentum`` before any record."""
        if self.record_tensor is None:
            return momentum
        return torch.where(self.failed(), 1.0, momentum).to(torch.float32)

    def start_copy(self) -> None:
        """Copy the record to the host: from a GPU into pinned memory without waiting, marked by an
        event; from a CPU it is already there; from another device, with a wait."""
        if self.record_tensor is None:
            return
        device = self.record_tensor.device
        if device.type != "cuda":
            self.host = self.record_tensor if device.type == "cpu" else self.record_tensor.cpu()
            return
        if self.host is None or not self.host.is_pinned():
            self.host = torch.empty_like(self.record_tensor, device="cpu").pin_memory()
        self.host.copy_(self.record_tensor, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record()

    def poll(self, wait: bool = False) -> tuple[int, float] | None:
        """``(step, loss)`` of the first failure once the host copy shows one (waiting for the copy
        with ``wait``), else None; a failure is returned once."""
        if self.reported or self.host is None:
            return None
        if self.copied is not None and not self.copied.query():
            if not wait:
                return None
            self.copied.synchronize()
        step, loss = self.host.tolist()
        if step < 0:
            return None
        self.reported = True
        return int(step), loss
