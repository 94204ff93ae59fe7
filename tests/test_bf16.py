"""bf16 mixed precision (``--trainer.precision=bf16-mixed``) for every method on CPU, and losses that
compute in float32 whatever autocast says."""

from __future__ import annotations

import pytest
import torch

from ssl_lightning.losses import BarlowTwinsLoss, JEPALoss, VICRegLoss
from tests.tiny_methods import METHOD_NAMES, fit, tiny


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_fits_in_bf16_mixed_with_a_finite_float32_loss(name):
    model = tiny(name)
    loss_input_dtypes = []
    model.loss_fn.register_forward_pre_hook(lambda module, args: loss_input_dtypes.append(args[0].dtype))
    trainer = fit(model, name, steps=2, precision="bf16-mixed")
    assert trainer.global_step == 2
    assert torch.bfloat16 in loss_input_dtypes  # the networks did run under bf16 autocast
    loss = trainer.callback_metrics["train/loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


LOSSES = {
    "vicreg": VICRegLoss(),
    "barlow_twins": BarlowTwinsLoss(),
    "jepa_smooth_l1": JEPALoss("smooth_l1"),
    "jepa_mse": JEPALoss("mse"),
}


def loss_value(loss_fn: torch.nn.Module, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    out = loss_fn(z1, z2)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", LOSSES)
def test_loss_of_bf16_inputs_is_the_float32_computation(name):
    """Under bf16 autocast, and for bf16 inputs without autocast (``bf16-true``), the loss is the
    float32 computation on the same bf16-rounded inputs to 1e-6 relative (measured: equal). With
    autocast left on inside the loss, VICReg's (covariance matmul in bf16) was off by 3.5e-4 and
    Barlow Twins' by 2e-3, in bf16; without ``.float()``, the JEPA losses of bf16 inputs are bf16."""
    generator = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(256, 512, generator=generator).bfloat16() for _ in range(2))
    reference = loss_value(LOSSES[name], z1.float(), z2.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = loss_value(LOSSES[name], z1, z2)
    for loss in (under_autocast, loss_value(LOSSES[name], z1, z2)):
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, reference, rtol=1e-6, atol=0)
