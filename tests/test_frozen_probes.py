"""The proof-of-learning benchmark's pieces on small generated data: the linear probe to convergence
against scikit-learn, the kNN score against a brute-force loop, the pixel features, the supervised
baseline, the step checkpoints and the plot."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch.utils.data import DataLoader, TensorDataset

from ssl_lightning.evaluation.frozen_probes import encode, knn_accuracies, linear_probe_accuracy, standardise
from ssl_lightning.evaluation.pretrained import representation
from ssl_lightning.evaluation.supervised import SupervisedBaseline
from tests.synthetic import NoisyClassDataModule
from tests.tiny_methods import METHOD_NAMES, quiet_trainer, tiny, tiny_batch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from curves import plot_curves
from reproduce import CheckpointEvery, Score, summary_rows


def blobs(n: int, dim: int, classes: int, seed: int, spread: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian classes with features on different scales (so standardising matters)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = spread * torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    scales = torch.logspace(-1, 1, dim)
    return (centres[labels] + torch.randn(n, dim, generator=generator)) * scales, labels


def test_linear_probe_matches_scikit_learn_default_logistic_regression():
    train_x, train_y = blobs(600, 12, 4, seed=0, spread=0.6)
    test_x, test_y = blobs(400, 12, 4, seed=1, spread=0.6)
    ours = linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes=4, tolerance=1e-7)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(((train_x - mean) / std).numpy(), train_y)
    expected = (reference.predict(((test_x - mean) / std).numpy()) == test_y.numpy()).mean()
    assert 0.4 < expected < 0.99  # overlapping classes: the regulariser decides some predictions
    assert ours == pytest.approx(expected, abs=1 / 400)


def test_standardise_uses_training_statistics_only():
    train, test = torch.tensor([[0.0, 10.0], [2.0, 30.0]]), torch.tensor([[1.0, 20.0]])
    train_z, test_z = standardise(train, test)
    assert torch.allclose(test_z, torch.zeros(1, 2), atol=1e-6)
    assert torch.allclose(train_z.std(0), torch.ones(2), atol=1e-5)


def test_knn_accuracies_match_a_brute_force_loop():
    train_x, train_y = blobs(120, 6, 3, seed=2, spread=0.8)
    test_x, test_y = blobs(50, 6, 3, seed=3, spread=0.8)
    bank = (train_x / train_x.norm(dim=1, keepdim=True)).double().numpy()
    expected = {}
    for k in (1, 5, 50, 500):  # 500 > the bank: every training image votes
        correct = 0
        for query, label in zip(test_x.double().numpy(), test_y.numpy()):
            similarity = bank @ (query / np.linalg.norm(query))
            votes = np.zeros(3)
            for index in np.argsort(-similarity, kind="stable")[:k]:
                votes[train_y[index]] += np.exp((similarity[index] - similarity.max()) / 0.07)
            correct += int(votes.argmax() == label)
        expected[k] = correct / 50
    got = knn_accuracies(train_x, train_y, test_x, test_y, 3, ks=(1, 5, 50, 500), chunk_size=16)
    assert got == pytest.approx(expected) and len(set(expected.values())) > 1


def test_pixel_features_are_the_flattened_images():
    images, labels = torch.randn(10, 1, 4, 4), torch.arange(10)
    features, got_labels = encode(None, DataLoader(TensorDataset(images, labels), batch_size=3))
    assert torch.equal(features, images.flatten(1)) and torch.equal(got_labels, labels)


def test_encode_uses_eval_mode_and_restores_the_mode():
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.9))
    images = torch.ones(8, 1, 2, 2)
    features, _ = encode(encoder, DataLoader(TensorDataset(images, torch.zeros(8)), batch_size=4))
    assert torch.equal(features, images.flatten(1))  # no dropout in eval mode
    assert encoder.training


def test_supervised_baseline_learns_the_labels():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 16), torch.nn.ReLU())
    model = SupervisedBaseline(
        encoder, 16, 3, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2), warmup_steps=0
    )
    data = NoisyClassDataModule(num_views=1, num_classes=3, image_size=16, train_size=96, batch_size=16)
    before = [p.detach().clone() for p in encoder.parameters()]
    quiet_trainer(max_steps=30, limit_val_batches=1.0).fit(model, data)
    assert all(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    assert model.trainer.callback_metrics["val/top1"] > 0.9  # chance: 1/3
    images = next(iter(data.val_dataloader()))[0]
    assert torch.equal(model(images), encoder(images))


def test_supervised_baseline_ignores_unlabelled_images():
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    model = SupervisedBaseline(encoder, 4, 2)
    views = [torch.randn(4, 1, 4, 4)]
    loss = model.training_step((views, torch.tensor([0, -1, 1, -1])), 0)["loss"]
    logits = model.classifier(encoder(views[0]))
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([0, 1]))
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_representation_gives_the_representation_and_a_trainable_twin(name):
    method = tiny(name)
    views, _ = tiny_batch(name)
    images = views[0]
    method.eval()
    features = representation(method)(images)
    expected = method(images)
    expected = expected[max(expected)] if isinstance(expected, dict) else expected  # blockwise: last block
    assert features.ndim == 2 and torch.allclose(features, expected, atol=1e-6)
    trainable = representation(method, trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())
    assert trainable(images).shape == features.shape


def test_checkpoints_at_step_zero_every_n_steps_and_at_the_end(tmp_path):
    method = tiny("VICReg")
    callback = CheckpointEvery(tmp_path, every_n_steps=3)
    data = NoisyClassDataModule(num_views=2, image_size=16, train_size=64, batch_size=8)
    torch.save({"step": 5}, tmp_path / "step=5.pt")  # an earlier run's checkpoint: not part of this curve
    initial = {k: v.clone() for k, v in method.state_dict().items()}
    quiet_trainer([callback], max_steps=7).fit(method, data)
    steps = sorted(int(p.stem.split("=")[1]) for p in tmp_path.glob("step=*.pt"))
    assert steps == [0, 3, 6, 7]
    first = torch.load(tmp_path / "step=0.pt", weights_only=True)
    assert all(torch.equal(first["state_dict"][k], initial[k]) for k in initial)  # the random-init encoder
    last = torch.load(tmp_path / "step=7.pt", weights_only=True)
    assert last["step"] == 7 and last["seconds"] >= first["seconds"] >= 0
    assert all(torch.equal(last["state_dict"][k], v) for k, v in method.state_dict().items())


def score(method: str, kind: str, step: int, linear: float) -> Score:
    return Score(method, kind, step, 60.0 * step, linear, 0.5, 0.5, 3.0, 8, machine=f"cpu of {method}")


def test_plot_and_summary(tmp_path):
    scores = [
        score("pixels", "pixels", 0, 0.8),
        score("vicreg", "random init", 0, 0.6),
        score("vicreg", "pretrained", 5, 0.85),
        score("vicreg", "pretrained", 10, 0.88),
        score("vicreg", "supervised", 10, 0.92),
    ]
    path = plot_curves(scores, tmp_path / "curves.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    ablation = [score("vicreg [trainer.max_steps=5]", kind, step, acc) for kind, step, acc in
                [("random init", 0, 0.6), ("pretrained", 5, 0.84), ("supervised", 5, 0.9)]]  # fmt: skip
    with_ablation = plot_curves(scores + ablation, tmp_path / "ablation.png", title="test")
    assert with_ablation.read_bytes() != path.read_bytes()
    rows = summary_rows(scores)
    assert [row[0] for row in rows] == ["raw pixels", "vicreg"]
    assert rows[1][:4] == ["vicreg", "10", "10.0", "88.00"]
    assert rows[1][-4:] == ["60.00", "50.00", "92.00", "cpu of vicreg"]  # random init, supervised, machine


def test_recipe_arguments_carry_the_budget():
    from reproduce import recipe_args, run_folder, run_label

    args = SimpleNamespace(dataset="mnist", data_dir="d", device="cpu", minutes=2.5, seed=3, steps=40, epochs=None)
    args.overrides = ["--model.init_args.full_context=false"]
    built = recipe_args(args, "ijepa", Path("out"))
    joined = " ".join(built)
    assert "ijepa_fashion_mnist.yaml" in joined and "ssl_lightning.data.MNIST" in joined
    assert "--trainer.max_time=00:00:02:30" in joined and "--trainer.max_steps=40" in joined
    assert built[-1] == "--model.init_args.full_context=false"  # the ablation's overrides come last
    assert run_label("ijepa", args.overrides) == "ijepa [full_context=false]"
    assert run_folder("ijepa [full_context=false]").startswith("ijepa-") and run_folder("ijepa") == "ijepa"
    args.epochs = 100
    assert recipe_args(args, "ijepa", Path("out"))[-3:-1] == ["--trainer.max_steps=-1", "--trainer.max_epochs=100"]


def test_pixel_baseline_report_compares_features_and_pixels_with_the_same_probe(caplog):
    import logging

    from ssl_lightning.callbacks import PixelBaselineReport

    method = tiny("VICReg")
    data = NoisyClassDataModule(num_views=2, image_size=16, train_size=64, batch_size=8)
    report = PixelBaselineReport(train_images=48, tolerance=1e-7)
    with caplog.at_level(logging.INFO):
        quiet_trainer([report], max_steps=2).fit(method, data)
    line = next(r.getMessage() for r in caplog.records if "raw pixels" in r.getMessage())
    # Independent pixel reference: scikit-learn on the same 48 images (the report's seeded draw).
    dataset = data.train_dataloader().dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:48]
    train_x = torch.stack([dataset[int(i)][0][0].flatten() for i in order])
    train_y = torch.tensor([dataset[int(i)][1] for i in order])
    val_x, val_y = next(iter(DataLoader(data.val_dataloader().dataset, batch_size=1000)))
    val_x = val_x.flatten(1)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    sklearn = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(((train_x - mean) / std).numpy(), train_y)
    expected = (sklearn.predict(((val_x - mean) / std).numpy()) == val_y.numpy()).mean()
    assert f"vs {100 * expected:.1f}% on the raw pixels" in line and "48 training images" in line


def test_recipe_probe_reports_at_step_zero_and_every_n_steps(tmp_path, capsys, monkeypatch):
    from recipe_probe import main as recipe_probe

    from tests.fake_data import write_fake_fashion_mnist

    write_fake_fashion_mnist(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    argv = [
        "recipe_probe.py", str(Path(__file__).resolve().parent.parent / "examples" / "vicreg_fashion_mnist.yaml"),
        "--steps", "4", "--every", "2", "--probe-train", "64",
        f"--data.init_args.data_dir={tmp_path / 'data'}", "--data.init_args.batch_size=16",
        "--data.init_args.num_workers=0", "--model.init_args.projector_dims=[32, 32]",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    recipe_probe()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert [int(line.split()[1]) for line in lines] == [0, 2, 4]
    assert all("RankMe" in line and "/128" in line for line in lines)
    assert not (tmp_path / "config.yaml").exists()  # nothing written into the working directory


def test_every_benchmarked_method_has_its_small_data_recipe():
    import yaml
    from reproduce import METHODS, ROOT

    import ssl_lightning.methods

    trained = set()
    for method in METHODS:
        recipe = ROOT / "examples" / f"{method}_fashion_mnist.yaml"
        assert recipe.is_file(), method
        trained.add(yaml.safe_load(recipe.read_text())["model"]["class_path"].rsplit(".", 1)[-1])
    assert trained == set(ssl_lightning.methods.__all__) - {"SSLMethod"}  # every method is benchmarked
