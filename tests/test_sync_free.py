"""No device→host synchronisation in the I-JEPA and FlexPredict training steps.

The proof runs the step on the ``meta`` device, whose tensors have shapes but no values: any read of
a device value on the host (``.item()``, ``.tolist()``, ``bool(tensor)``, ``nonzero``, a boolean
index) raises there, as it would stall the host on a GPU. The masks are drawn on the host
(``MultiBlockMaskSampler.sample_on_host``) and the NaN guard's device path records the loss without
reading it (:mod:`ssl_lightning.methods.divergence`).
"""

from __future__ import annotations

import math

import pytest
import torch

from ssl_lightning.methods.divergence import DivergenceGuard
from ssl_lightning.nn.ema import ema_update_
from tests.jepa_helpers import tiny_method


def test_host_masks_are_the_masks_of_a_cpu_generator_with_the_same_seed():
    sampler = tiny_method("IJEPA").mask_sampler
    torch.manual_seed(5)
    context, targets = sampler.sample_on_host(16, "meta")
    torch.manual_seed(5)
    host_context, host_targets = sampler.sample_on_host(16, "cpu")
    expected_context, expected_targets = sampler(16, generator=torch.Generator().manual_seed(5))

    assert torch.equal(host_context, expected_context)
    assert all(map(torch.equal, host_targets, expected_targets))
    assert context.device.type == "meta" and context.shape == expected_context.shape
    assert [t.shape for t in targets] == [t.shape for t in expected_targets]


def test_the_meta_device_catches_a_host_read_of_a_device_value():
    """The proof's power: the same sampler drawing on the device reads back block sizes and lengths."""
    sampler = tiny_method("IJEPA").mask_sampler
    with pytest.raises((RuntimeError, NotImplementedError)):
        sampler(16, device="meta")


@pytest.mark.parametrize("full_context", [False, True])
@pytest.mark.parametrize("name", ["IJEPA", "FlexPredict"])
def test_the_jepa_training_step_reads_no_device_value(name, full_context):
    """Masks, forward, loss, backward, the NaN guard's record and the held EMA update, all on ``meta``."""
    model = tiny_method(name, full_context=full_context).to("meta")
    model._skip_on_device = True  # a fused optimizer: the guard's device path
    images = torch.randn(8, 1, 32, 32, device="meta")
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here
        out = model.training_step(([images], torch.zeros(8, dtype=torch.long, device="meta")), 0)
    model.on_before_backward(out["loss"])
    out["loss"].backward()

    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.device.type == "meta" for g in grads)
    assert model._divergence.found_inf().device.type == "meta"
    momentum = model.ema_momentum_held(0.996)
    ema_update_(model.target_encoder.parameters(), model.context_encoder.parameters(), momentum)
    assert isinstance(momentum, torch.Tensor) and momentum.device.type == "meta"


def test_the_guard_records_the_first_failing_step_and_loss():
    guard = DivergenceGuard()
    for step, loss in [(0, 1.0), (1, 0.5), (2, float("nan")), (3, float("inf")), (4, 0.2)]:
        guard.record(torch.tensor(loss), step)
        guard.start_copy()
        assert bool(guard.failed()) == (step >= 2)
        assert guard.found_inf().item() == float(step >= 2)
        assert guard.hold(0.99).item() == pytest.approx(1.0 if step >= 2 else 0.99)
    first_step, first_loss = guard.poll()
    assert first_step == 2 and math.isnan(first_loss)
    assert guard.poll() is None  # reported once
