"""``channels_last=True``: the convolutions' weights are NHWC once fit starts, and the method computes
the same features and loss as in the default memory format."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_methods import quiet_trainer, tiny, tiny_batch, tiny_data


def conv_weights(method: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in method.parameters() if p.ndim == 4]


@pytest.mark.parametrize("name", ["VICReg", "BlockwiseBarlowTwins"])
def test_channels_last_converts_the_convolutions_when_fit_starts(name):
    method = tiny(name, channels_last=True)
    assert not all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(method))
    quiet_trainer(max_steps=1).fit(method, tiny_data(name))
    assert conv_weights(method)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(method))
    assert method.hparams.channels_last


@pytest.mark.parametrize("name", ["VICReg", "BarlowTwins"])
def test_channels_last_changes_no_number(name):
    default, nhwc = tiny(name, seed=3), tiny(name, seed=3, channels_last=True)
    nhwc.configure_model()
    views, labels = tiny_batch(name)
    default.eval(), nhwc.eval()
    assert torch.allclose(default(views[0]), nhwc(views[0]), atol=1e-5)
    default.train(), nhwc.train()
    losses = [m.training_step((views, labels), 0)["loss"] for m in (default, nhwc)]
    assert torch.allclose(*losses, atol=1e-5)
    state = {k: v.contiguous() for k, v in nhwc.state_dict().items()}
    default.load_state_dict(state)  # checkpoints load across memory formats
