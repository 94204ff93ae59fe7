"""Linear layers as 1×1 convolutions (oneDNN on the CPU): the same values and gradients as ``F.linear``,
the same parameters and state dict, and the callback that turns a method's layers."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.callbacks import OneDNNLinears
from ssl_lightning.nn.onednn_linear import OneDNNLinear, linear_as_convolution, use_onednn_linears
from tests.tiny_methods import fit, tiny


@pytest.mark.parametrize("shape", [(7, 12), (3, 5, 12), (2, 3, 4, 12)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_as_convolution_gives_the_values_and_gradients_of_f_linear(shape, bias):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator, requires_grad=True)
    weight = torch.randn(9, 12, generator=generator, requires_grad=True)
    b = torch.randn(9, generator=generator, requires_grad=True) if bias else None
    leaves = [x, weight] + ([b] if bias else [])
    upstream = torch.randn(*shape[:-1], 9, generator=generator)

    expected = F.linear(x, weight, b)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    got = linear_as_convolution(x, weight, b)
    got_grads = torch.autograd.grad(got, leaves, upstream)

    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_a_vit_keeps_its_weights_and_outputs_with_onednn_linears():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=0)
    linears = sum(type(m) is nn.Linear for m in vit.modules())
    images = torch.randn(2, 3, 32, 32)
    state, expected = {k: v.clone() for k, v in vit.state_dict().items()}, vit(images)

    assert use_onednn_linears(vit) == linears > 0
    assert all(type(m) is not nn.Linear for m in vit.modules())
    assert vit.state_dict().keys() == state.keys()
    assert all(torch.equal(vit.state_dict()[k], v) for k, v in state.items())
    torch.testing.assert_close(vit(images), expected, rtol=1e-4, atol=1e-4)


def test_subclasses_of_linear_are_left_alone_and_other_devices_take_f_linear():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Linear(4, 4), Scaled(4, 4))
    assert use_onednn_linears(model) == 1 and type(model[1]) is Scaled
    layer = OneDNNLinear(4, 3).to("meta")  # no convolution kernel is asked for off the CPU
    assert layer(torch.empty(5, 4, device="meta")).shape == (5, 3)


def test_the_callback_turns_every_linear_of_a_method_before_it_trains():
    model = tiny("IJEPA")
    plain = sum(type(m) is nn.Linear for m in model.modules())
    fit(model, "IJEPA", steps=2, callbacks=[OneDNNLinears()])
    assert plain > 0 and sum(isinstance(m, OneDNNLinear) for m in model.modules()) == plain
    assert all(torch.isfinite(p).all() for p in model.parameters())
