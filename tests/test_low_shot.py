"""The low-shot protocol of I-JEPA/StoP: the L-BFGS logistic regression against scikit-learn and its
optimality condition, the class-balanced subsets, and LowShotEval end to end against a direct
computation (frozen features → standardisation → scikit-learn's solver)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import ConcatDataset, Subset

from ssl_lightning.data.datasets import TensorImageDataset
from ssl_lightning.evaluation import LowShotEval, fit_logistic_regression, load_pretrained
from ssl_lightning.evaluation.low_shot_eval import mean_and_std
from ssl_lightning.evaluation.subsets import class_balanced_subset, dataset_labels
from tests.distributed_utils import run_lightning_distributed
from tests.pretrained import pretrained_checkpoint
from tests.synthetic import NoisyClassDataModule, NoisyClassImages


@pytest.fixture
def sklearn_logistic_regression():
    """scikit-learn's LogisticRegression, the independent reference (the tests that need it skip without it)."""
    return pytest.importorskip("sklearn.linear_model").LogisticRegression


def blobs(n: int = 120, dim: int = 12, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian classes (not separable), float64."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=gen, dtype=torch.float64)
    return centres[labels] + 1.5 * torch.randn(n, dim, generator=gen, dtype=torch.float64), labels


# ------------------------------------------------------------------------------------------ the solver
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_solver_matches_scikit_learn(fit_intercept, sklearn_logistic_regression):
    x, y = blobs()
    l2 = 0.05
    fit = fit_logistic_regression(x, y, l2=l2, fit_intercept=fit_intercept, tolerance=1e-8)
    # scikit-learn minimises ½‖W‖² + C Σ CE: the same minimiser for C = 1 / (N λ).
    reference = sklearn_logistic_regression(
        C=1 / (len(y) * l2), fit_intercept=fit_intercept, tol=1e-12, max_iter=10_000
    ).fit(x.numpy(), y.numpy())
    assert fit.converged
    np.testing.assert_allclose(fit.weight.numpy(), reference.coef_, rtol=0, atol=1e-6)
    if fit_intercept:
        np.testing.assert_allclose(fit.bias.numpy(), reference.intercept_, rtol=0, atol=1e-6)
    probabilities = torch.softmax(fit.logits(x), dim=1).numpy()
    np.testing.assert_allclose(probabilities, reference.predict_proba(x.numpy()), rtol=0, atol=1e-6)


def test_solution_zeroes_the_analytic_gradient():
    """∇_W = (1/N) (softmax(X Wᵀ) − Y)ᵀ X + λ W vanishes at the solution, λ as small as the protocol's."""
    x, y = blobs(n=200, dim=20, classes=5, seed=1)
    l2 = 0.0025 / len(y)
    fit = fit_logistic_regression(x, y, l2=l2, tolerance=1e-9)
    probabilities = torch.softmax(x @ fit.weight.T, dim=1)
    gradient = (probabilities - torch.eye(5, dtype=x.dtype)[y]).T @ x / len(y) + l2 * fit.weight
    assert gradient.abs().max() < 1e-9
    assert gradient.abs().max() == pytest.approx(fit.max_gradient, abs=1e-12)


def test_solver_converges_on_separable_features_at_the_protocols_tiny_l2(sklearn_logistic_regression):
    """Separable classes and λ = 0.0025 / N: a badly conditioned problem (large weights), the
    low-shot regime. L-BFGS must reach the tolerance and scikit-learn's objective value."""
    gen = torch.Generator().manual_seed(4)
    y = torch.arange(300) % 10
    x = torch.randn(10, 64, generator=gen, dtype=torch.float64)[y] + torch.randn(
        300, 64, generator=gen, dtype=torch.float64
    )
    x = (x - x.mean(0)) / x.std(0)
    l2 = 0.0025 / len(y)
    fit = fit_logistic_regression(x, y, l2=l2, tolerance=1e-10, max_iterations=3000)
    reference = sklearn_logistic_regression(C=1 / (len(y) * l2), fit_intercept=False, tol=1e-10, max_iter=10_000)
    reference.fit(x.numpy(), y.numpy())

    def objective(weight):
        return torch.nn.functional.cross_entropy(x @ weight.T, y) + 0.5 * l2 * weight.square().sum()

    assert fit.converged
    assert objective(fit.weight) == pytest.approx(float(objective(torch.from_numpy(reference.coef_))), rel=1e-9)


def test_a_rotation_of_the_features_leaves_the_predictions_unchanged():
    """Why LowShotEval skips the official full-rank PCA: for orthogonal Q the solution on X Q is W Q."""
    x, y = blobs(seed=2)
    rotation, _ = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], dtype=x.dtype))
    fit = fit_logistic_regression(x, y, l2=0.01, tolerance=1e-8)
    rotated = fit_logistic_regression(x @ rotation, y, l2=0.01, tolerance=1e-8)
    torch.testing.assert_close(rotated.logits(x @ rotation), fit.logits(x), rtol=0, atol=1e-5)


def test_solver_runs_under_inference_mode_and_in_float32():
    x, y = blobs()
    with torch.inference_mode():
        fit = fit_logistic_regression(x.float(), y, l2=0.05, tolerance=1e-4, dtype=torch.float32)
    reference = fit_logistic_regression(x, y, l2=0.05, tolerance=1e-8)
    assert fit.weight.dtype == torch.float32
    torch.testing.assert_close(fit.weight.double(), reference.weight, rtol=0, atol=1e-3)


def test_solver_warns_when_it_stops_early():
    x, y = blobs()
    with pytest.warns(UserWarning, match="raise max_iterations or l2"):
        fit = fit_logistic_regression(x, y, l2=1e-6, tolerance=1e-12, max_iterations=3)
    assert not fit.converged and fit.iterations == 3


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), r"\(N, D\) features"),
        (torch.zeros(4, 2), torch.tensor([0, 1, -1, 0]), r"drop unlabelled samples"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "at least one training sample"),
    ],
)
def test_solver_rejects_bad_input(features, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_logistic_regression(features, labels)


# ------------------------------------------------------------------------------ subsets and statistics
def test_fraction_subset_is_class_balanced_seeded_and_of_the_right_size():
    labels = torch.cat([torch.full((count,), c) for c, count in enumerate([50, 80, 60, 70])] + [torch.full((40,), -1)])
    subset = class_balanced_subset(labels, label_fraction=0.1, seed=3)
    assert len(subset) == round(0.1 * 260) == 26
    counts = torch.bincount(labels[subset], minlength=4)
    assert counts.min() == 6 and counts.max() == 7 and counts.sum() == 26
    assert (labels[subset] >= 0).all() and len(subset.unique()) == 26
    assert torch.equal(subset, class_balanced_subset(labels, label_fraction=0.1, seed=3))
    assert not torch.equal(subset, class_balanced_subset(labels, label_fraction=0.1, seed=4))


def test_per_class_subset_and_imagenet_one_percent_shape():
    labels = torch.arange(300) % 3
    subset = class_balanced_subset(labels, samples_per_class=5, seed=0)
    assert torch.bincount(labels[subset]).tolist() == [5, 5, 5]
    # ImageNet-1k: 1 281 167 images, 732 to 1300 per class → 1% = 12 812 images, 12 or 13 per class.
    counts = torch.full((1000,), 1300)
    counts[:33] = 732
    counts[33] -= 89
    assert counts.sum() == 1281167
    imagenet = torch.repeat_interleave(torch.arange(1000), counts)
    per_class = torch.bincount(imagenet[class_balanced_subset(imagenet, label_fraction=0.01)])
    assert per_class.sum() == 12812 and set(per_class.tolist()) == {12, 13}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_fraction": 0.0}, r"label_fraction must be in \(0, 1\]"),
        ({"label_fraction": 1.5}, r"label_fraction must be in \(0, 1\]"),
        ({"samples_per_class": 0}, "samples_per_class must be at least 1"),
        ({}, "Give one of label_fraction and samples_per_class"),
        ({"label_fraction": 0.1, "samples_per_class": 2}, "Give one of"),
        ({"samples_per_class": 11}, "Class 0 has 10 labelled samples, fewer than the 11"),
        ({"label_fraction": 0.05}, "fewer than the 3 classes"),
    ],
)
def test_subset_errors_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        class_balanced_subset(torch.arange(30) % 3, **kwargs)


def test_fraction_that_cannot_be_spread_evenly_is_an_error():
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor([4, 4, 4, 20]))
    with pytest.raises(ValueError, match="cannot be spread evenly"):
        class_balanced_subset(labels, label_fraction=19 / 32)


def test_dataset_labels_without_loading_images():
    images = torch.zeros(5, 1, 2, 2, dtype=torch.uint8)
    first = TensorImageDataset(images, torch.tensor([0, 1, 2, 0, 1]), transform=lambda image: image)
    second = TensorImageDataset(images[:2], torch.tensor([-1, -1]), transform=lambda image: image)
    assert dataset_labels(ConcatDataset([first, second])).tolist() == [0, 1, 2, 0, 1, -1, -1]
    assert dataset_labels(Subset(first, [4, 2])).tolist() == [1, 2]
    assert dataset_labels(NoisyClassImages(7, 0, 3, 1, 4)).tolist() == [0, 1, 2, 0, 1, 2, 0]  # read item by item


def test_mean_and_std_are_torch_statistics_and_constant_dimensions_stay_finite():
    x = torch.randn(50, 6, dtype=torch.float64)
    x[:, 2] = 3.0
    mean, std = mean_and_std(x)
    torch.testing.assert_close(mean, x.mean(0))
    expected = x.std(0)
    expected[2] = 1.0
    torch.testing.assert_close(std, expected)


# ---------------------------------------------------------------------------------------- end to end
def validate(model: LowShotEval, image_size: int = 16, **trainer_kwargs) -> dict[str, float]:
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, **trainer_kwargs
    )
    trainer.validate(model, NoisyClassDataModule(num_views=0, image_size=image_size, train_size=64, batch_size=16))
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def direct_low_shot_accuracy(
    encode, image_size: int, standardize: str, sklearn_logistic_regression, **subset
) -> tuple[float, float, int]:
    """Top-1 (validation and training) of the protocol computed directly: the subset's images
    encoded by ``encode`` in one batch, numpy standardisation, scikit-learn's solver with
    C = 1 / (N λ) = 1 / 0.0025."""
    train, val = NoisyClassImages(64, 0, 3, 1, image_size), NoisyClassImages(32, 0, 3, 1, image_size)
    indices = class_balanced_subset(dataset_labels(train), **subset).tolist()
    with torch.no_grad():
        x_train = encode(torch.stack([train[i][0] for i in indices])).double().numpy()
        x_val = encode(torch.stack([val[i][0] for i in range(len(val))])).double().numpy()
    y_train = np.array([train[i][1] for i in indices])
    y_val = np.array([val[i][1] for i in range(len(val))])
    val_source = x_val if standardize == "per_split" else x_train
    x_val = (x_val - val_source.mean(0)) / val_source.std(0, ddof=1)
    x_train = (x_train - x_train.mean(0)) / x_train.std(0, ddof=1)
    classifier = sklearn_logistic_regression(C=1 / 0.0025, fit_intercept=False, tol=1e-10, max_iter=10_000)
    classifier.fit(x_train, y_train)
    return classifier.score(x_val, y_val), classifier.score(x_train, y_train), len(indices)


@pytest.mark.parametrize("standardize", ["train", "per_split"])
def test_low_shot_eval_equals_a_direct_computation(standardize, tmp_path_factory, sklearn_logistic_regression):
    checkpoint = pretrained_checkpoint("VICReg", tmp_path_factory.getbasetemp() / "pretrained")
    metrics = validate(LowShotEval(str(checkpoint), label_fraction=0.25, standardize=standardize))
    backbone = load_pretrained(checkpoint).method.backbone
    top1, train_top1, num_labelled = direct_low_shot_accuracy(
        backbone, 16, standardize, sklearn_logistic_regression, label_fraction=0.25
    )
    assert metrics["lowshot/num_labelled"] == num_labelled == 16
    assert metrics["lowshot/top1"] == pytest.approx(top1, abs=1e-6)
    assert metrics["lowshot/train_top1"] == pytest.approx(train_top1, abs=1e-6)
    assert metrics["lowshot/top5"] == 1.0  # 3 classes


def test_low_shot_eval_uses_the_jepa_target_encoder_tokens_averaged(tmp_path_factory, sklearn_logistic_regression):
    checkpoint = pretrained_checkpoint("IJEPA", tmp_path_factory.getbasetemp() / "pretrained")
    metrics = validate(LowShotEval(str(checkpoint), samples_per_class=4), image_size=32)
    target_encoder = load_pretrained(checkpoint).method.target_encoder
    top1, train_top1, _ = direct_low_shot_accuracy(
        lambda images: target_encoder(images).mean(dim=1), 32, "train", sklearn_logistic_regression, samples_per_class=4
    )
    assert metrics["lowshot/num_labelled"] == 12
    assert metrics["lowshot/top1"] == pytest.approx(top1, abs=1e-6)
    assert metrics["lowshot/train_top1"] == pytest.approx(train_top1, abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_fraction": 2.0}, r"in \(0, 1\]"),
        ({"label_fraction": None}, "Give one of label_fraction and samples_per_class"),
        ({"l2": 0.0}, "l2 > 0"),
        ({"standardize": "test"}, "standardize must be"),
    ],
)
def test_low_shot_eval_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LowShotEval("unused.ckpt", **kwargs)


def ddp_low_shot(rank: int, world_size: int, checkpoint: str, expected: dict[str, float]) -> None:
    metrics = validate(LowShotEval(checkpoint, label_fraction=0.25, standardize="per_split"), devices=world_size)
    for name in ("lowshot/top1", "lowshot/train_top1", "lowshot/num_labelled"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-6), name


@pytest.mark.distributed
def test_low_shot_eval_under_ddp_equals_one_process(tmp_path_factory):
    """Two processes (each half of the validation set, validation statistics summed over both)
    report what one process does on the whole set."""
    checkpoint = str(pretrained_checkpoint("VICReg", tmp_path_factory.getbasetemp() / "pretrained"))
    expected = validate(LowShotEval(checkpoint, label_fraction=0.25, standardize="per_split"))
    run_lightning_distributed(ddp_low_shot, 2, checkpoint, expected)
