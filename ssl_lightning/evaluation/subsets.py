"""Class-balanced labelled subsets of a training set, for low-shot evaluation (e.g. the 1% of
ImageNet's labels of SimCLR, I-JEPA and StoP)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset

from ssl_lightning.errors import ConfigurationError


def dataset_labels(dataset: Dataset) -> Tensor:
    """The ``(N,)`` labels of a map-style dataset, read without loading its images where the dataset
    says them: ``labels`` (:class:`~ssl_lightning.data.datasets.TensorImageDataset`), ``targets``
    (torchvision's ImageFolder, MNIST, CIFAR), and through ``ConcatDataset`` and ``Subset``.
    Any other dataset is read item by item (``dataset[i][1]``), which loads every image once."""
    if isinstance(dataset, ConcatDataset):
        return torch.cat([dataset_labels(part) for part in dataset.datasets])
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    for name in ("labels", "targets"):
        labels = getattr(dataset, name, None)
        if labels is not None:
            return torch.as_tensor(labels, dtype=torch.long)
    return torch.tensor([int(dataset[index][1]) for index in range(len(dataset))], dtype=torch.long)


def check_subset_size(label_fraction: float | None, samples_per_class: int | None) -> None:
    """Raise ``ValueError`` unless exactly one of ``label_fraction`` (in (0, 1]) and ``samples_per_class``
    (≥ 1) is given."""
    if (label_fraction is None) == (samples_per_class is None):
        raise ConfigurationError(
            f"Give one of label_fraction and samples_per_class, got label_fraction={label_fraction}, "
            f"samples_per_class={samples_per_class}."
        )
    if label_fraction is not None and not 0 < label_fraction <= 1:
        raise ConfigurationError(f"label_fraction must be in (0, 1] (0.01 for 1% of the labels), got {label_fraction}.")
    if samples_per_class is not None and samples_per_class < 1:
        raise ConfigurationError(f"samples_per_class must be at least 1, got {samples_per_class}.")


def class_balanced_subset(
    labels: Tensor, label_fraction: float | None = None, samples_per_class: int | None = None, seed: int = 0
) -> Tensor:
    """Sorted indices of a random class-balanced subset of the labelled samples (labels ≥ 0).

    With ``samples_per_class``, every class present in ``labels`` gets exactly that many samples. With
    ``label_fraction``, the subset holds ``round(label_fraction · N)`` of the ``N`` labelled samples, as evenly
    spread over the ``C`` classes as can be: every class gets ``⌊n / C⌋`` and ``n mod C`` randomly
    chosen classes (among those with images left) one more — the shape of the ImageNet 1% list of
    SimCLR/I-JEPA/StoP (12 811 images: 189 classes with 12, 811 with 13). The samples of each class
    are drawn uniformly without replacement; the same labels and ``seed`` give the same subset on
    every process and machine (``torch.Generator`` on the CPU).

    Raises:
        ValueError: neither or both of ``label_fraction`` and ``samples_per_class``, ``label_fraction``
            outside (0, 1], ``samples_per_class < 1``, no labelled sample, fewer subset samples than classes, or a class with
            fewer samples than its share.
    """
    check_subset_size(label_fraction, samples_per_class)
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    classes, counts = labels[labels >= 0].unique(return_counts=True)
    if not len(classes):
        raise ConfigurationError("No labelled sample (every label is -1): a labelled subset needs labels.")
    generator = torch.Generator().manual_seed(seed)
    quotas = (
        torch.full_like(counts, samples_per_class)
        if samples_per_class is not None
        else fraction_quotas(counts, label_fraction, generator)
    )
    short = (counts < quotas).nonzero().flatten()
    if len(short):
        worst = int(short[0])
        raise ConfigurationError(
            f"Class {int(classes[worst])} has {int(counts[worst])} labelled samples, fewer than the "
            f"{int(quotas[worst])} the subset takes from it ({len(short)} classes are short): lower "
            "samples_per_class or label_fraction."
        )
    order = labels.argsort(stable=True)
    by_class = order[labels[order] >= 0].split(counts.tolist())  # the indices of each class, ascending
    chosen = [
        members[torch.randperm(len(members), generator=generator)[: int(quota)]]
        for members, quota in zip(by_class, quotas, strict=True)
    ]
    return torch.cat(chosen).sort().values


def fraction_quotas(counts: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Samples per class for ``round(fraction · counts.sum())`` samples spread evenly (±1) over the classes."""
    total, num_classes = round(fraction * int(counts.sum())), len(counts)
    if total < num_classes:
        raise ConfigurationError(
            f"A label fraction of {fraction} of {int(counts.sum())} labelled samples is {total} samples, fewer "
            f"than the {num_classes} classes: raise label_fraction or set samples_per_class."
        )
    quotas = torch.full_like(counts, total // num_classes)
    with_room = (counts > quotas).nonzero().flatten()
    extra = total - int(quotas.sum())
    if extra > len(with_room):
        raise ConfigurationError(
            f"{total} samples cannot be spread evenly over the {num_classes} classes: {extra} classes need "
            f"{total // num_classes + 1} samples but only {len(with_room)} have that many. Lower label_fraction "
            "or set samples_per_class."
        )
    quotas[with_room[torch.randperm(len(with_room), generator=generator)[:extra]]] += 1
    return quotas
