"""Recipes that claim the authors' code reproduce its behaviour: the parameter update of the official
Barlow Twins and blockwise code (whose in-place all_reduce hides the other processes from autograd),
the official VICReg expander layout, StoP's frozen schedules, and the details of the example configs."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback
from torch import nn
from torchvision.transforms import v2

from ssl_lightning.data import StoPViews
from ssl_lightning.losses import BarlowTwinsLoss
from ssl_lightning.methods import VICReg
from tests.jepa_helpers import tiny_method
from tests.synthetic import NoisyClassDataModule
from tests.test_data import flat_ops
from tests.tiny_methods import JOINT, quiet_trainer

EXAMPLES = Path(__file__).parents[1] / "examples"
LAMBDA = 0.0051


def example_arguments(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())["model"]["init_args"]


def official_barlow_update(projector: nn.Module, h1, h2, world_size: int, loss_scale: float) -> list[torch.Tensor]:
    """The gradient the official code's optimizer receives, simulated on one process.

    Each of ``world_size`` processes normalises its embeddings with SyncBatchNorm (global batch
    statistics, gradient-exact), divides its local ``z1ᵀz2`` by the global batch and sums it over
    processes with an in-place ``all_reduce``: the loss value is the global one, but autograd sees
    only the process's own samples. DDP then averages the processes' gradients."""
    normalize = nn.BatchNorm1d(projector.out_features, affine=False).double()
    per_rank = len(h1) // world_size
    updates = []
    for rank in range(world_size):
        projector.zero_grad()
        z1, z2 = normalize(projector(h1)), normalize(projector(h2))
        parts = [
            z1[r * per_rank : (r + 1) * per_rank].T @ z2[r * per_rank : (r + 1) * per_rank] for r in range(world_size)
        ]
        c = sum(part if r == rank else part.detach() for r, part in enumerate(parts)) / len(h1)
        on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
        off_diagonal = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        (loss_scale * (on_diagonal + LAMBDA * off_diagonal)).backward()
        updates.append([p.grad.clone() for p in projector.parameters()])
    return [torch.stack(grads).mean(0) for grads in zip(*updates)]


def assert_close_in_float32(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Equal gradients up to our loss's float32 arithmetic; the biases' are ~0 (the normalisation
    removes them), so the tolerance is relative to the largest gradient entry of all parameters."""
    actual, expected = torch.cat([g.flatten() for g in actual]), torch.cat([g.flatten() for g in expected])
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def our_barlow_update(projector: nn.Module, h1, h2, loss_scale: float) -> list[torch.Tensor]:
    projector.zero_grad()
    loss, _ = BarlowTwinsLoss(LAMBDA, loss_scale)(projector(h1), projector(h2))
    loss.backward()
    return [p.grad.clone() for p in projector.parameters()]


@pytest.mark.parametrize(
    ("example", "authors_loss_scale"),
    [("barlow_resnet50_imagenet.yaml", 1.0), ("blockwise_resnet50_imagenet.yaml", 0.024)],
)
def test_example_reproduces_the_authors_update_at_their_16_processes(example, authors_loss_scale):
    torch.manual_seed(0)
    projector = nn.Linear(6, 8).double()
    h1, h2 = torch.randn(64, 6, dtype=torch.double), torch.randn(64, 6, dtype=torch.double)
    authors = official_barlow_update(projector, h1, h2, world_size=16, loss_scale=authors_loss_scale)
    ours = our_barlow_update(projector, h1, h2, loss_scale=example_arguments(example)["loss_scale"])
    assert_close_in_float32(ours, authors)


def test_the_official_update_is_the_full_batch_gradient_over_the_process_count():
    """The derivation behind the examples' loss scales (docs/fidelity.md), on its own."""
    torch.manual_seed(0)
    projector = nn.Linear(6, 8).double()
    h1, h2 = torch.randn(32, 6, dtype=torch.double), torch.randn(32, 6, dtype=torch.double)
    full = our_barlow_update(projector, h1, h2, loss_scale=1.0)
    for world_size in (2, 4):
        official = official_barlow_update(projector, h1, h2, world_size=world_size, loss_scale=1.0)
        assert_close_in_float32([g * world_size for g in official], full)


def official_vicreg_projector_state(in_dim: int, dims: list[int]) -> dict[str, torch.Tensor]:
    """The state dict of facebookresearch/vicreg's expander, from its layout: (Linear with bias,
    BatchNorm1d, ReLU) per hidden layer, then a Linear without bias."""
    state, index, widths = {}, 0, [in_dim, *dims]
    for fan_in, fan_out in itertools.pairwise(widths[:-1]):
        state |= {f"{index}.weight": torch.randn(fan_out, fan_in), f"{index}.bias": torch.randn(fan_out)}
        state |= {f"{index + 1}.{name}": torch.randn(fan_out) for name in ("weight", "bias", "running_mean")}
        state |= {f"{index + 1}.running_var": torch.rand(fan_out), f"{index + 1}.num_batches_tracked": torch.tensor(3)}
        index += 3
    state[f"{index}.weight"] = torch.randn(widths[-1], widths[-2])
    return state


def test_official_vicreg_expander_loads_strictly():
    model = VICReg(**{**JOINT, "projector_dims": [32, 32, 16]})
    official = official_vicreg_projector_state(model.feature_dim, [32, 32, 16])
    model.projector.load_state_dict(official, strict=True)
    assert model.projector[-1].bias is None
    torch.testing.assert_close(model.projector[-1].weight, official["6.weight"])


def test_vicreg_cifar10_recipe_clips_the_trust_ratio_as_solo_learn():
    assert example_arguments("vicreg_cifar10.yaml")["optimizer"]["init_args"]["trust_clip"] is True


class ScheduleRecorder(Callback):
    def __init__(self) -> None:
        self.rates, self.decays = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rates.append(optimizer.param_groups[0]["lr"])
        self.decays.append(optimizer.param_groups[0]["weight_decay"])


def test_schedule_freeze_holds_lr_and_weight_decay_from_that_epoch():
    """StoP's ``fix_lr_thres``/``fix_wd_thres`` with the ``const`` strategy: after the threshold the
    values of the threshold step, the cosine schedules unchanged before it."""
    model = tiny_method("FlexPredict", weight_decay=(0.04, 0.4), schedule_freeze_epoch=2)
    recorder = ScheduleRecorder()
    trainer = quiet_trainer([recorder], max_epochs=3)
    trainer.fit(model, NoisyClassDataModule(num_views=1, image_size=32, train_size=48, batch_size=8))
    total, freeze = 18, 12  # 6 steps per epoch
    cosine = [0.5 * (1 + math.cos(math.pi * min(step, freeze) / total)) for step in range(total)]
    assert recorder.rates == pytest.approx([1e-3 * (1e-3 + (1 - 1e-3) * c) for c in cosine])
    assert recorder.decays == pytest.approx([0.4 + (0.04 - 0.4) * c for c in cosine])
    assert len(set(recorder.rates[freeze:])) == 1 and recorder.rates[freeze - 1] > recorder.rates[freeze]


def test_flexpredict_vith16_recipe_is_stops():
    arguments = example_arguments("flexpredict_vith16_imagenet.yaml")
    assert arguments["backbone"] == "vit_huge_patch16_224" and arguments["noise_std"] == 0.2
    assert arguments["schedule_freeze_epoch"] == 250 and arguments["pred_depth"] == 12


def test_bad_schedule_freeze_epoch_is_refused():
    with pytest.raises(ValueError, match="schedule_freeze_epoch"):
        tiny_method("IJEPA", schedule_freeze_epoch=-1)


def test_stop_views_grayscale_comes_before_the_blur():
    """StoP's code converts to grayscale before blurring; so does StoPViews."""
    (pipeline,) = StoPViews(blur_prob=1.0, grayscale_prob=1.0).view_pipelines(224, 3)
    kinds = [type(op) for op, _ in flat_ops(pipeline) if isinstance(op, (v2.Grayscale, v2.GaussianBlur))]
    assert kinds == [v2.Grayscale, v2.GaussianBlur]
