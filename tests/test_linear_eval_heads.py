"""LinearEval's protocol options: plain linear heads, several heads on one encoder pass (VISSL's four),
the step learning-rate schedule and the best-over-epochs accuracy."""

from __future__ import annotations

import csv
import functools

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from ssl_lightning.evaluation import LinearEval, ViTFeatures, load_pretrained
from ssl_lightning.evaluation.linear_heads import linear_head
from tests.pretrained import pretrained_checkpoint
from tests.synthetic import NoisyClassDataModule

VISSL_HEADS = {"head_type": ["bn_linear", "linear"], "pool": ["avg", "last4"]}


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "pretrained"


def quiet_trainer(**options) -> Trainer:
    return Trainer(
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **{"logger": False, **options},
    )


def test_plain_linear_head_draws_normal_weights_and_has_no_batchnorm():
    torch.manual_seed(0)
    head = linear_head("linear", 2048, 1000)
    (linear,) = head
    assert not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in head.modules())
    # 2M weights drawn from N(0, 0.01²): the sample std is within 0.5% of 0.01, the mean within 1e-4 of 0.
    assert linear.weight.std().item() == pytest.approx(0.01, rel=5e-3)
    assert abs(linear.weight.mean().item()) < 1e-4
    assert torch.equal(linear.bias, torch.zeros(1000))


def test_linear_eval_plain_head_is_an_affine_map_of_the_features(pretrained_dir):
    model = LinearEval(str(pretrained_checkpoint("VICReg", pretrained_dir)), head_type="linear", num_classes=4)
    images = torch.randn(5, 1, 16, 16)
    features = load_pretrained(model.hparams.checkpoint).method.backbone(images)
    weight, bias = model.head[-1].weight, model.head[-1].bias
    torch.testing.assert_close(model(images), features @ weight.T + bias)


def test_vissl_heads_read_both_poolings_from_one_encoder_pass(pretrained_dir):
    checkpoint = pretrained_checkpoint("IJEPA", pretrained_dir)  # 4 blocks of width 64
    model = LinearEval(str(checkpoint), num_classes=3, **VISSL_HEADS)
    assert {name: head[-1].in_features for name, head in model.heads.items()} == {
        "bn_linear_avg": 64,
        "bn_linear_last4": 256,
        "linear_avg": 64,
        "linear_last4": 256,
    }
    assert isinstance(model.heads["bn_linear_avg"][0], nn.BatchNorm1d)
    assert len(model.heads["linear_last4"]) == 1

    vit = model.encoder.module.encoder
    passes = []
    vit.register_forward_hook(lambda module, args, output: passes.append(1))
    inputs = {}

    def keep_input(name):
        def hook(module, args, output):
            inputs[name] = args[0]

        return hook

    for name, head in model.heads.items():
        head.register_forward_hook(keep_input(name))
    images = torch.randn(6, 1, 32, 32)
    logits = model(images)
    assert len(passes) == 1
    assert set(logits) == set(model.heads) and all(value.shape == (6, 3) for value in logits.values())
    # The poolings computed separately, each on its own pass of the pretrained target encoder.
    target = load_pretrained(checkpoint).method.target_encoder
    with torch.no_grad():
        for pool in ("avg", "last4"):
            expected = ViTFeatures(target, pool)(images)
            torch.testing.assert_close(inputs[f"linear_{pool}"], expected)
            torch.testing.assert_close(inputs[f"bn_linear_{pool}"], expected)


class RecordLearningRate(Callback):
    def __init__(self):
        self.by_epoch: dict[int, set[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.by_epoch.setdefault(trainer.current_epoch, set()).add(lr)


def test_step_schedule_divides_the_rate_by_ten_at_the_milestones(pretrained_dir):
    optimizer = functools.partial(torch.optim.SGD, lr=0.32, momentum=0.9, nesterov=True)
    model = LinearEval(
        str(pretrained_checkpoint("VICReg", pretrained_dir)),
        optimizer=optimizer,
        lr_milestones=[8, 16, 24],
        lr_reference_batch_size=256,
    )
    data = NoisyClassDataModule(num_views=1, image_size=16, train_size=16, batch_size=8)  # 2 steps per epoch
    trainer = quiet_trainer(max_epochs=26, limit_val_batches=0, callbacks=[record := RecordLearningRate()])
    trainer.fit(model, data)
    # Independent reference: PyTorch's MultiStepLR stepped once per epoch, from 0.32 × 8/256 = 0.01.
    reference_optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.32 * 8 / 256)
    reference = torch.optim.lr_scheduler.MultiStepLR(reference_optimizer, milestones=[8, 16, 24], gamma=0.1)
    expected = []
    for _ in range(26):
        expected.append(reference.get_last_lr()[0])
        reference_optimizer.step()
        reference.step()
    assert sorted(record.by_epoch) == list(range(26))
    for epoch, rates in record.by_epoch.items():
        assert len(rates) == 1 and rates.pop() == pytest.approx(expected[epoch], rel=1e-9), epoch
    assert [expected[epoch] for epoch in (0, 8, 16, 24)] == pytest.approx([0.01, 0.001, 0.0001, 0.00001])


def test_best_accuracy_is_the_maximum_over_epochs_and_heads(pretrained_dir, tmp_path):
    torch.manual_seed(0)
    # A large learning rate makes the accuracy jump from epoch to epoch, so the best is not the last.
    optimizer = functools.partial(torch.optim.SGD, lr=30.0)
    model = LinearEval(
        str(pretrained_checkpoint("VICReg", pretrained_dir)),
        optimizer=optimizer,
        head_type=["bn_linear", "linear"],
        final_lr_factor=0.0,
    )
    data = NoisyClassDataModule(num_views=1, image_size=16, train_size=16, batch_size=8, num_classes=5)
    trainer = quiet_trainer(max_epochs=6, logger=CSVLogger(tmp_path, name="run", version=0), log_every_n_steps=1)
    trainer.fit(model, data)
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["val/top1"]]
    assert len(rows) == 6
    per_head = {name: [float(row[f"val/{name}/top1"]) for row in rows] for name in ("bn_linear", "linear")}
    top1 = [float(row["val/top1"]) for row in rows]
    assert top1 == [max(values) for values in zip(*per_head.values())]
    running_best = [max(top1[: epoch + 1]) for epoch in range(len(top1))]
    assert [float(row["val/top1_best"]) for row in rows] == pytest.approx(running_best)
    for name, values in per_head.items():
        best = [float(row[f"val/{name}/top1_best"]) for row in rows]
        assert best == pytest.approx([max(values[: epoch + 1]) for epoch in range(len(values))])
    assert running_best != top1, "the accuracy never dropped: this run does not test the maximum"
    assert model.top1_best.max().item() == pytest.approx(max(top1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"head_type": "mlp"}, "head_type must be among"),
        ({"head_type": ["linear", "linear"]}, "distinct"),
        ({"pool": ["avg", "max"]}, "pool must be among"),
        ({"lr_milestones": [16, 8]}, "increasing"),
        ({"lr_milestones": [8], "final_lr_factor": 0.001}, "lr_milestones replaces"),
        ({"lr_milestones": [8], "lr_gamma": 0.0}, "lr_gamma"),
    ],
)
def test_bad_protocol_options_are_refused(options, message, pretrained_dir):
    with pytest.raises(ValueError, match=message):
        LinearEval(str(pretrained_checkpoint("IJEPA", pretrained_dir)), **options)


def test_head_property_refuses_to_pick_among_several(pretrained_dir):
    model = LinearEval(str(pretrained_checkpoint("IJEPA", pretrained_dir)), num_classes=3, **VISSL_HEADS)
    with pytest.raises(AttributeError):
        model.head  # noqa: B018
