"""HFImages (#16): a Hugging Face image dataset from local files (offline), and its bad input."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ssl_lightning.data import HFImages, JointEmbeddingViews
from ssl_lightning.errors import ConfigurationError

datasets = pytest.importorskip("datasets")


def image_rows(count: int, offset: int = 0):
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["a", "b", "c"])})
    images = [Image.new("RGBA" if i % 2 else "L", (20, 24), (i * 9) % 256) for i in range(offset, offset + count)]
    return datasets.Dataset.from_dict({"img": images, "fine_label": [i % 3 for i in range(count)]}, features=features)


@pytest.fixture
def files(tmp_path):
    image_rows(16).to_parquet(tmp_path / "train.parquet")
    image_rows(8, offset=100).to_parquet(tmp_path / "val.parquet")
    return {"train": str(tmp_path / "train.parquet"), "validation": str(tmp_path / "val.parquet")}


def test_local_parquet_files_train_and_validate(files):
    data = HFImages(data_files=files, image_column="img", label_column="fine_label", image_size=16, batch_size=4,
                    num_workers=0, views=JointEmbeddingViews())  # fmt: skip
    assert data.num_classes == 3
    data.setup("fit")
    views, labels = next(iter(data.train_dataloader()))
    assert len(views) == 2 and views[0].shape == (4, 3, 16, 16)  # grayscale and RGBA converted to RGB
    images, labels = next(iter(data.val_dataloader()))
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 1, 2, 0]


def test_save_to_disk_folder_with_batched_views(tmp_path):
    datasets.DatasetDict({"train": image_rows(8), "test": image_rows(4)}).save_to_disk(tmp_path / "ds")
    data = HFImages(path=str(tmp_path / "ds"), val_split="test", image_column="img", label_column="fine_label",
                    image_size=16, batch_size=4, num_workers=0, batched_views=True, channels=1)  # fmt: skip
    data.setup("fit")
    images, _ = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 1, 16, 16)


def test_missing_columns_are_listed(files):
    with pytest.raises(
        ConfigurationError, match=r"no column 'image', 'label'; its columns are \['img', 'fine_label'\]"
    ):
        HFImages(data_files=files)
    with pytest.raises(ConfigurationError, match="splits \\['train', 'validation'\\], not 'test'"):
        HFImages(data_files=files, image_column="img", label_column="fine_label", val_split="test").setup("fit")


def test_a_local_arrow_file(tmp_path):
    image_rows(8).save_to_disk(tmp_path / "train")
    image_rows(4).save_to_disk(tmp_path / "val")
    arrow = {split: str(next((tmp_path / split).glob("*.arrow"))) for split in ("train", "val")}
    data = HFImages(data_files={"train": arrow["train"], "validation": arrow["val"]}, image_column="img",
                    label_column="fine_label", image_size=16, batch_size=4, num_workers=0)  # fmt: skip
    data.setup("fit")
    images, labels = next(iter(data.val_dataloader()))
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 1, 2, 0]
