"""Streaming shards (#16): ``prepare`` → ``StreamingImages`` yields every image once per epoch across
processes, resumes mid-epoch with exactly the unseen images, and refuses bad input clearly.

Every generated image is one flat grey level that encodes its index, so a batch says which images it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from ssl_lightning.cli import main
from ssl_lightning.data import StreamingImages
from ssl_lightning.data.image_folder import BadImageError
from ssl_lightning.data.streaming import ForeignShardsError, prepare_image_folder
from ssl_lightning.errors import ConfigurationError
from tests.distributed_utils import run_distributed
from tests.test_resume import assert_same_tree
from tests.tiny_methods import quiet_trainer, tiny

TRAIN_IMAGES = 24
LEVEL_STEP = 10  # image i is grey level 5 + 10·i


def write_image_folder(root: Path, train: int = TRAIN_IMAGES, val: int = 6) -> Path:
    """``root/{train,val}/<class>/*.png``, 3 classes; image ``i`` of train is grey level ``5 + 10·i``;
    the first is saved as grayscale and the second as RGBA (both converted to RGB by the loader)."""
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            folder = root / split / f"class{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            level = 5 + LEVEL_STEP * i
            image = Image.new("RGB", (20, 24), (level, level, level))
            if split == "train" and i == 0:
                image = image.convert("L")
            elif split == "train" and i == 1:
                image = image.convert("RGBA")
            image.save(folder / f"{i:03d}.png")
    return root


def indices(images: torch.Tensor) -> list[int]:
    """The image indices of a uint8 batch (grey level → index)."""
    return [round((int(level) - 5) / LEVEL_STEP) for level in images[:, 0, 0, 0]]


def shards(tmp_path: Path) -> Path:
    return prepare_image_folder(write_image_folder(tmp_path / "folder"), tmp_path / "shards")


def datamodule(root: Path, **kwargs) -> StreamingImages:
    options = {"batch_size": 4, "num_workers": 0, "image_size": 16, "batched_views": True, "seed": 3, **kwargs}
    data = StreamingImages(data_dir=str(root), **options)
    data.setup("fit")
    return data


def test_prepare_writes_shards_and_a_manifest(tmp_path):
    root = shards(tmp_path)
    manifest = json.loads((root / "ssl_lightning.json").read_text())
    assert manifest["classes"] == ["class0", "class1", "class2"]
    assert manifest["splits"]["train"]["images"] == TRAIN_IMAGES and manifest["splits"]["val"]["images"] == 6
    assert manifest["splits"]["train"]["converted"] == {"L": 1, "RGBA": 1}
    data = datamodule(root)
    assert data.num_classes == 3
    seen, labels = [], []
    for images, label in data.train_dataloader():
        assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 16)
        seen += indices(images)
        labels += label.tolist()
    assert sorted(seen) == list(range(TRAIN_IMAGES))
    assert labels == [i % 3 for i in seen]


def record_epoch(rank: int, world_size: int, root: str, out: str) -> None:
    data = datamodule(Path(root))
    seen = [i for images, _ in data.train_dataloader() for i in indices(images)]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))


@pytest.mark.distributed
def test_two_processes_see_every_image_once_per_epoch(tmp_path):
    root = shards(tmp_path)
    run_distributed(record_epoch, 2, str(root), str(tmp_path / "seen.json"))
    first, second = json.loads((tmp_path / "seen.json").read_text())
    assert len(first) == len(second) == TRAIN_IMAGES // 2
    assert sorted(first + second) == list(range(TRAIN_IMAGES))


def test_mid_epoch_resume_continues_with_exactly_the_unseen_images(tmp_path):
    root = shards(tmp_path)
    loader = datamodule(root).train_dataloader()
    batches = iter(loader)
    before = [i for _ in range(2) for i in indices(next(batches)[0])]
    state = loader.state_dict()
    rest = [i for images, _ in batches for i in indices(images)]

    resumed_data = datamodule(root, seed=None)
    resumed_data.load_state_dict({"seed": 3})  # as Lightning restores the DataModule before building loaders
    resumed = resumed_data.train_dataloader()
    resumed.load_state_dict(state)
    after = [i for images, _ in resumed for i in indices(images)]
    assert after == rest and sorted(before + after) == list(range(TRAIN_IMAGES))


def test_per_sample_views_come_from_the_recipe(tmp_path):
    data = datamodule(shards(tmp_path), batched_views=False)
    views, _ = next(iter(data.train_dataloader()))
    assert len(views) == 2 and views[0].shape == (4, 3, 16, 16) and views[0].dtype == torch.float32
    images, _ = next(iter(data.val_dataloader()))
    assert images.shape == (4, 3, 16, 16)


def test_prepare_command_and_bad_images(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "folder")
    broken = folder / "train" / "class0" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(BadImageError, match="broken.png"):
        prepare_image_folder(folder, tmp_path / "shards")
    with pytest.warns(UserWarning, match="skipped 1 undecodable"):
        main(["prepare", f"--source={folder}", f"--output={tmp_path / 'shards'}", "--bad_images=skip"])
    assert "Wrote the shards" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "shards" / "ssl_lightning.json").read_text())
    assert manifest["splits"]["train"]["skipped"] == [str(broken)]
    with pytest.raises(ConfigurationError, match="has no train, val folder"):
        prepare_image_folder(tmp_path / "shards" / "train", tmp_path / "other")


def test_shards_of_another_tool_are_refused(tmp_path):
    root = shards(tmp_path)
    (root / "ssl_lightning.json").unlink()
    with pytest.raises(ForeignShardsError, match="not written by `ssl-lightning prepare`"):
        StreamingImages(data_dir=str(root)).setup("fit")


def test_a_resumed_fit_trains_on_exactly_the_unseen_images(tmp_path):
    """Lightning keeps the StreamingDataLoader's position (and our seed) in the checkpoint."""
    root = shards(tmp_path)

    def fit(steps, ckpt_path, seed):
        seed_everything(seed)
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{step}", every_n_train_steps=2, save_top_k=-1)
        trainer = quiet_trainer([checkpoint], max_steps=steps, enable_checkpointing=True, deterministic=True)
        model = tiny("VICReg", seed=seed, in_chans=3)
        data = StreamingImages(data_dir=str(root), batch_size=4, num_workers=0, image_size=16, batched_views=True)
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return model

    full = fit(5, None, seed=0)
    resumed = fit(5, str(tmp_path / "ck" / "step=2.ckpt"), seed=1)
    assert_same_tree(resumed.state_dict(), full.state_dict(), "weights")
