"""What every ssl_lightning DataModule shares: finding (or downloading) the files, building the
view and evaluation transforms, and the loaders.

The training loader resumes exactly: a ``StatefulDataLoader`` (torchdata) over a
:class:`~ssl_lightning.data.sampling.ResumableSampler`, whose position Lightning saves in every
checkpoint, and each sample's views drawn from a seed of ``(seed, epoch, index)``, so the same on
any number of workers (:mod:`ssl_lightning.seeding`).

Training batches are ``(views, labels)`` (a list of ``(B, C, H, W)`` float tensors, one per view,
and ``(B,)`` long labels, -1 where unknown); validation batches are ``(images, labels)``. With
``batched_views=True`` the training loader yields ``(uint8 images, labels)`` and the views are made
on the training device, for the whole batch at once, in :meth:`SSLDataModule.on_after_batch_transfer`
(:mod:`ssl_lightning.data.batched`), from a random stream keyed by the batch's position in the run.
"""

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from ssl_lightning.data.batched import BatchedViews
from ssl_lightning.data.sampling import ResumableSampler, SeededSamples
from ssl_lightning.data.transforms import batched_load_transform, eval_transform
from ssl_lightning.data.views import JointEmbeddingViews, MultiViewTransform, ViewRecipe
from ssl_lightning.errors import ConfigurationError, SSLLightningError
from ssl_lightning.seeding import derive_seed, draw_seed

VIEW_STREAM = 0x76696577  # "view": keys the batched views' generator apart from other streams of the seed

# torchdata 0.11's StatefulDataLoader calls a deprecated torch function at every iterator; nothing to act on.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning, module="torchdata")


class DatasetNotFoundError(SSLLightningError, FileNotFoundError):
    """A dataset's files are not where the DataModule looks; the message says how to get them."""


class SSLDataModule(LightningDataModule, ABC):
    """Base of the ssl_lightning DataModules.

    Subclasses state their data as class attributes (``num_classes``, ``channels``,
    ``native_size``, ``mean``, ``std``, ``required_files``) and implement ``search_dirs``,
    ``build_datasets``, ``how_to_get_data`` and, when the data can be fetched, ``download_data``.
    ``num_classes``, ``channels`` and ``image_size`` are readable from construction on, so the
    CLI can link them into the method before ``setup``.

    Args:
        data_dir: folder holding (or receiving) the dataset files.
        batch_size: training batch size per process; the last incomplete batch is dropped.
        num_workers: DataLoader worker processes.
        views: view recipe for training; ``None`` = ``JointEmbeddingViews()`` (two views).
        val_batch_size: validation batch size; ``None`` = ``batch_size``.
        download: fetch the dataset into ``data_dir`` when it is found nowhere.
        image_size: side of the training views and validation images; ``None`` = the size the
            images are stored at.
        seed: seed of the training order and augmentations; ``None`` = drawn from torch's RNG when
            the training loader is first built (``seed_everything`` decides it). A resumed run takes
            the seed from its checkpoint.
        batched_views: make the training views on the training device, a batch at a time
            (:mod:`ssl_lightning.data.batched`), instead of per sample in the loader's workers, which
            then only decode (and bring images of varying size to one size). Same recipe, same
            parameter distributions; worth it when the workers cannot keep up (GPUs, many views).
    """

    num_classes: int
    channels: int
    native_size: int | None = None
    """Side of the stored (square) images; ``None`` when it varies from image to image."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    required_files: tuple[str, ...] = ()
    """Names that must all exist in a directory for it to hold the dataset."""

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 256,
        num_workers: int = 2,
        views: ViewRecipe | None = None,
        val_batch_size: int | None = None,
        download: bool = True,
        image_size: int | None = None,
        seed: int | None = None,
        batched_views: bool = False,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.views = views if views is not None else JointEmbeddingViews()
        self.val_batch_size = val_batch_size or batch_size
        self.download = download
        self.image_size = image_size or self.native_size
        self.seed = seed
        self.batched_views = batched_views
        self.batched: BatchedViews | None = None
        self._view_generator: torch.Generator | None = None
        self.view_batches = 0
        """Training batches whose views :meth:`on_after_batch_transfer` made (in the checkpoint)."""
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    # ----------------------------------------------------------------- what subclasses provide
    @abstractmethod
    def search_dirs(self) -> list[Path]:
        """Directories that may hold the files, most preferred first."""

    @abstractmethod
    def build_datasets(
        self, root: Path, train_transform: MultiViewTransform, val_transform: Callable
    ) -> tuple[Dataset, Dataset]:
        """Training and validation datasets read from ``root`` (one of ``search_dirs``)."""

    @abstractmethod
    def how_to_get_data(self) -> str:
        """Instructions shown when the files cannot be found."""

    def download_data(self) -> None:
        """Fetch the dataset into ``data_dir``; by default there is nowhere to fetch it from."""
        raise DatasetNotFoundError(f"{type(self).__name__} cannot download its data")

    def contains_data(self, directory: Path) -> bool:
        """Whether ``directory`` holds every one of ``required_files``."""
        return all((directory / name).exists() for name in self.required_files)

    # ------------------------------------------------------------------------- shared logic
    def find_data(self) -> Path | None:
        """The first of ``search_dirs`` that holds the dataset, or ``None``."""
        return next((d for d in self.search_dirs() if self.contains_data(d)), None)

    def missing_data_error(self, reason: str) -> DatasetNotFoundError:
        looked_in = ", ".join(str(directory) for directory in self.search_dirs())
        return DatasetNotFoundError(
            f"{type(self).__name__}: {reason}. Looked in: {looked_in}. {self.how_to_get_data()}"
        )

    def prepare_data(self) -> None:
        """Download when asked to and the files are found nowhere (once per node)."""
        if not self.download or self.find_data() is not None:
            return
        try:
            self.download_data()
        except Exception as error:
            raise self.missing_data_error(f"download failed ({error})") from error

    def data_root(self) -> Path:
        """The directory holding the dataset, with a clear error when there is none."""
        root = self.find_data()
        if root is None:
            reason = "dataset files not found"
            if self.download:
                reason += " (call prepare_data() to download them; the Trainer does)"
            raise self.missing_data_error(reason)
        return root

    def evaluation_transform(self) -> Callable:
        """The deterministic transform of validation images (see :func:`eval_transform`), resampling
        as the view recipe's ``eval_interpolation`` says."""
        return eval_transform(self.image_size, self.mean, self.std, self.native_size, self.views.eval_interpolation)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        if self.batched_views:
            specs = self.views.view_specs(self.image_size, self.channels)
            self.batched = BatchedViews(specs, self.mean, self.std)
            train_transform = batched_load_transform(self.image_size, self.native_size)
        else:
            train_transform = self.views.train_transform(self.image_size, self.channels, self.mean, self.std)
        self.train_dataset, self.val_dataset = self.build_datasets(
            self.data_root(), train_transform, self.evaluation_transform()
        )

    def train_dataloader(self) -> DataLoader:
        if len(self.train_dataset) < self.batch_size:
            raise ConfigurationError(
                f"{type(self).__name__}: the training set has {len(self.train_dataset)} images, "
                f"fewer than batch_size={self.batch_size}; with drop_last there would be no batch"
            )
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = ResumableSampler(self.train_dataset, self.batch_size, world_size, rank, self.training_seed())
        return StatefulDataLoader(
            SeededSamples(self.train_dataset),
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            **self._worker_options(),
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Batched views: a training batch's ``uint8`` images become the recipe's views, on their device.

        Batch ``n`` of the run draws from a generator seeded by ``(seed, rank, n)``: every process has
        its own stream, and a checkpoint needs only ``n`` (the same on every rank) to resume it exactly.
        """
        if self.batched is None or self.trainer is None or not self.trainer.training:
            return batch
        images, labels = batch
        if self._view_generator is None or self._view_generator.device != images.device:
            self._view_generator = torch.Generator(images.device)
        rank = self.trainer.global_rank
        self._view_generator.manual_seed(derive_seed(self.seed or 0, VIEW_STREAM, rank, self.view_batches))
        self.view_batches += 1
        return self.batched(images, self._view_generator), labels

    def state_dict(self) -> dict:
        """Batched views: the seed and how many batches the views have been made for (their random
        stream's position). Per-sample views need nothing here: the loader's state covers them."""
        return {"seed": self.seed, "view_batches": self.view_batches} if self.batched_views else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seed = state_dict.get("seed", self.seed)
        self.view_batches = state_dict.get("view_batches", 0)

    def training_seed(self) -> int:
        """``seed``, drawn on first use from torch's RNG, the same on every process."""
        if self.seed is None:
            self.seed = draw_seed(self.trainer.strategy if self.trainer is not None else None)
        return self.seed

    def val_dataloader(self) -> DataLoader:
        return self._ordered_loader(self.val_dataset)

    def train_eval_dataloader(self) -> DataLoader:
        """The training images with the validation transform, in order and all of them (no shuffle, no
        dropped batch), as ``(images, labels)`` batches: the bank of an offline kNN evaluation."""
        transform = self.evaluation_transform()
        train_dataset, _ = self.build_datasets(self.data_root(), transform, transform)
        return self._ordered_loader(train_dataset)

    def _ordered_loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.val_batch_size, **self._worker_options())

    def _worker_options(self) -> dict:
        return {
            "num_workers": self.num_workers,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": self.num_workers > 0,
        }
