"""OnlineKNN: votes equal a brute-force reference (ties, k > bank size included), the bank keeps only
labelled samples in a bounded ring, it logs per feature key, it is the union of every rank's
features under DDP, and it survives checkpoint/resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from ssl_lightning.callbacks import OnlineKNN, knn_votes
from ssl_lightning.callbacks.knn import LABELS
from tests.synthetic import NoisyClassDataModule
from tests.test_linear_probe import fit, tiny_vicreg

CPU_MODULE = SimpleNamespace(device=torch.device("cpu"))


def brute_force_knn(queries, bank, bank_labels, num_classes, k, temperature):
    """Reference kNN with plain Python loops in float64: neighbours sorted by (similarity desc, row),
    votes exp(similarity / temperature), prediction the most voted class (lowest id on ties)."""
    predictions, all_votes = [], []
    for query in queries.double().tolist():
        similarities = [sum(q * b for q, b in zip(query, row)) for row in bank.double().tolist()]
        neighbours = sorted(range(len(similarities)), key=lambda row: (-similarities[row], row))[:k]
        votes = [0.0] * num_classes
        for row in neighbours:
            votes[int(bank_labels[row])] += math.exp(similarities[row] / temperature)
        predictions.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
        all_votes.append(votes)
    return torch.tensor(predictions), torch.tensor(all_votes, dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 5, 20, 200])
def test_votes_match_brute_force_on_random_features(k):
    gen = torch.Generator().manual_seed(k)
    bank = F.normalize(torch.randn(50, 8, generator=gen), dim=1)  # k = 200 exceeds the bank
    labels = torch.randint(0, 5, (50,), generator=gen)
    queries = F.normalize(torch.randn(40, 8, generator=gen), dim=1)
    votes = knn_votes(queries, bank, labels, num_classes=5, k=k, temperature=0.1)
    expected_predictions, expected_votes = brute_force_knn(queries, bank, labels, 5, k, 0.1)
    assert torch.equal(votes.argmax(dim=1), expected_predictions)
    # Votes are scaled per query (against overflow): compare the shares of the votes.
    shares = votes.double() / votes.double().sum(dim=1, keepdim=True)
    torch.testing.assert_close(shares, expected_votes / expected_votes.sum(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 100])
def test_ties_are_broken_like_the_reference(k):
    """Basis-vector bank rows give exact similarities: duplicated rows tie across the k boundary,
    and classes tie in votes."""
    eye = torch.eye(4)
    bank = torch.stack([eye[0], eye[0], eye[1], eye[1], eye[2], eye[3], eye[2]])
    labels = torch.tensor([2, 1, 0, 3, 1, 0, 2])
    queries = F.normalize(torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1], [2, 1, 1, 0], [0, 1, 1, 1], [1, 1, 1, 1]]), dim=1)
    votes = knn_votes(queries, bank, labels, num_classes=4, k=k, temperature=0.07)
    expected, _ = brute_force_knn(queries, bank, labels, 4, k, 0.07)
    assert torch.equal(votes.argmax(dim=1), expected)


def test_bank_keeps_only_labelled_normalised_features_in_a_bounded_ring():
    knn = OnlineKNN(bank_size=6)
    features, labels = torch.randn(10, 3) * 5, torch.tensor([0, -1, 1, 2, -1, 0, 1, 2, 0, 1])
    for rows in (slice(0, 5), slice(5, 10)):
        knn.on_train_batch_end(None, CPU_MODULE, {"features": features[rows]}, (None, labels[rows]), 0)
    assert len(knn.bank) == 6  # 8 labelled samples seen, the 6 latest kept
    kept = torch.cat([F.normalize(features, dim=1), labels[:, None].float()], dim=1)[labels >= 0][-6:]
    banked = torch.cat([knn.bank["features"], knn.bank[LABELS][:, None].float()], dim=1)
    assert torch.equal(banked[banked[:, 0].argsort()], kept[kept[:, 0].argsort()])


def test_unlabelled_training_data_warns_instead_of_logging():
    with pytest.warns(UserWarning, match="no labelled training features"):
        trainer = fit(tiny_vicreg(), NoisyClassDataModule(train_label=-1), OnlineKNN(), enable_checkpointing=False)
    assert "knn/val_acc" not in trainer.callback_metrics


def with_two_blocks(step):
    """Wrap a method's step so that its features come as a dict of two blocks, like blockwise training's."""

    def step_with_blocks(batch, batch_idx):
        outputs = step(batch, batch_idx)
        return {**outputs, "features": {"block1": outputs["features"], "block2": outputs["features"][:, :8]}}

    return step_with_blocks


def test_knn_learns_and_logs_one_accuracy_per_dict_feature():
    model = tiny_vicreg()
    model.training_step = with_two_blocks(model.training_step)
    model.validation_step = with_two_blocks(model.validation_step)
    trainer = fit(model, NoisyClassDataModule(train_size=96), OnlineKNN(k=5), enable_checkpointing=False)
    assert trainer.callback_metrics["knn/block1/val_acc"] > 0.8  # chance is 1/3
    assert "knn/block2/val_acc" in trainer.callback_metrics
    assert "knn/val_acc" not in trainer.callback_metrics


def test_bank_survives_checkpoint_and_resume(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = OnlineKNN(bank_size=40)  # 64 training samples per epoch: the ring has wrapped
    fit(tiny_vicreg(), NoisyClassDataModule(), first, callbacks=[ckpt], num_sanity_val_steps=0)
    assert (len(first.bank), first.bank.position) == (40, 64 % 40)

    second, at_resume = OnlineKNN(bank_size=40), {}

    class BankAtTrainStart(Callback):
        def on_train_start(self, trainer, pl_module):
            at_resume.update({name: second.bank[name].clone() for name in second.bank.storage})
            at_resume["position"] = second.bank.position

    last = str(tmp_path / "last.ckpt")
    resume = {"ckpt_path": last, "callbacks": [BankAtTrainStart()], "enable_checkpointing": False}
    fit(tiny_vicreg(), NoisyClassDataModule(), second, max_epochs=2, **resume)
    assert at_resume["position"] == first.bank.position
    for name in (LABELS, "features"):
        assert torch.equal(at_resume[name], first.bank[name])
    with pytest.raises(ValueError, match="saved size"):
        OnlineKNN(bank_size=32).load_state_dict(first.state_dict())
