"""The resumable training sampler and the seeded samples behind exact resume."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import seed_everything

from ssl_lightning.data import FashionMNIST
from ssl_lightning.data.sampling import ResumableSampler, SeededSamples
from ssl_lightning.seeding import derive_seed
from tests.fake_data import write_fake_fashion_mnist


def indices(sampler: ResumableSampler) -> list[int]:
    return [index for index, _ in sampler]


def test_each_epoch_is_a_new_permutation_split_between_ranks():
    data = range(12)
    ranks = [ResumableSampler(data, batch_size=2, num_replicas=2, rank=r, seed=7) for r in range(2)]
    first = [indices(sampler) for sampler in ranks]
    assert sorted(first[0] + first[1]) == list(range(12))  # disjoint shares covering the data
    for sampler in ranks:
        sampler.set_epoch(1)
    second = [indices(sampler) for sampler in ranks]
    assert second != first and sorted(second[0] + second[1]) == list(range(12))
    again = ResumableSampler(data, batch_size=2, num_replicas=2, rank=0, seed=7)
    assert indices(again) == first[0]  # the seed alone fixes the order


def test_sample_seeds_differ_by_epoch_and_index():
    sampler = ResumableSampler(range(4), batch_size=1, num_replicas=1, rank=0, seed=3)
    epoch0 = dict(sampler)
    sampler.set_epoch(1)
    epoch1 = dict(sampler)
    assert epoch0 == {i: derive_seed(3, 0, i) for i in range(4)}
    assert len(set(epoch0.values()) | set(epoch1.values())) == 8


def test_state_continues_mid_epoch_and_after_a_finished_epoch():
    sampler = ResumableSampler(range(10), batch_size=3, num_replicas=1, rank=0, seed=1)
    order = indices(sampler)
    iterator = iter(sampler)
    for _ in range(4):
        next(iterator)
    resumed = ResumableSampler(range(10), batch_size=3, num_replicas=1, rank=0, seed=99)
    resumed.load_state_dict(sampler.state_dict())
    assert indices(resumed) == order[4:]

    for _ in iterator:  # 9 of 10 yielded is "finished" as well: the loader drops the last 1
        pass
    finished = ResumableSampler(range(10), batch_size=3, num_replicas=1, rank=0, seed=99)
    finished.load_state_dict({**sampler.state_dict(), "yielded": 9})
    sampler.set_epoch(1)
    assert finished.epoch == 1 and indices(finished) == indices(sampler)


def test_seeded_samples_repeat_their_draws_and_leave_the_global_rng_alone():
    samples = SeededSamples(RandomDraws())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = samples[(2, 11)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(samples[(2, 11)], first) and not torch.equal(samples[(2, 12)], first)


class RandomDraws(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3) + index


@pytest.fixture
def fashion_root(tmp_path):
    write_fake_fashion_mnist(tmp_path, num_train=32, num_test=8)
    return tmp_path


def first_training_batch(root, num_workers: int, seed: int | None = None) -> list[torch.Tensor]:
    data = FashionMNIST(data_dir=str(root), batch_size=8, num_workers=num_workers, download=False, seed=seed)
    data.setup("fit")
    views, _ = next(iter(data.train_dataloader()))
    return views


def test_views_do_not_depend_on_the_number_of_workers(fashion_root):
    in_process = first_training_batch(fashion_root, num_workers=0, seed=5)
    in_workers = first_training_batch(fashion_root, num_workers=2, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers))


def test_the_data_seed_comes_from_seed_everything_unless_given(fashion_root):
    seed_everything(0)
    first = first_training_batch(fashion_root, num_workers=0)
    seed_everything(0)
    same = first_training_batch(fashion_root, num_workers=0)
    seed_everything(1)
    other = first_training_batch(fashion_root, num_workers=0)
    assert torch.equal(first[0], same[0]) and not torch.equal(first[0], other[0])
