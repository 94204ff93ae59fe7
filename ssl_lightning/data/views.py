"""View recipes: how one training image becomes the views a self-supervised method sees.

A recipe is a small configuration object (selectable from YAML through jsonargparse's subclass
mode, e.g. ``views: {class_path: IJEPAViews}``); the DataModule asks it for a per-sample
transform once it knows the image size, channel count and normalisation of its data.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torchvision.transforms import v2

from ssl_lightning.data.transforms import (
    Interpolation,
    MultiViewTransform,
    ViewSpec,
    interpolation_mode,
    is_small_image,
    per_sample_pipeline,
    to_normalized_float,
)
from ssl_lightning.errors import ConfigurationError


class ViewRecipe(ABC):
    """Base class of view recipes: subclasses describe each view as a :class:`ViewSpec`, from which
    the per-sample pipelines (:meth:`view_pipelines`, in the loader's workers) and the batched views
    (:class:`~ssl_lightning.data.batched.BatchedViews`, on the training device) are both built.

    ``eval_interpolation`` is the resampling of the DataModule's validation resize (see
    :func:`~ssl_lightning.data.transforms.eval_transform`): bilinear, except where a recipe
    (:class:`LinearEvalViews`) lets an evaluation protocol choose it.
    """

    eval_interpolation: Interpolation = "bilinear"

    @abstractmethod
    def view_specs(self, image_size: int, channels: int) -> list[ViewSpec]:
        """One :class:`ViewSpec` per view, for a DataModule of ``image_size`` and ``channels``."""

    def view_pipelines(self, image_size: int, channels: int) -> list[v2.Transform]:
        """One per-sample augmentation pipeline (uint8 image -> uint8 image) per view."""
        return [per_sample_pipeline(spec, channels) for spec in self.view_specs(image_size, channels)]

    def train_transform(
        self,
        image_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> MultiViewTransform:
        """Per-sample callable: image -> list of normalised ``(channels, image_size, image_size)``
        float views."""
        finish = to_normalized_float(mean, std)
        pipelines = self.view_pipelines(image_size, channels)
        return MultiViewTransform([v2.Compose([pipeline, finish]) for pipeline in pipelines])


class JointEmbeddingViews(ViewRecipe):
    """The BYOL / Barlow Twins / VICReg two-view recipe (Grill et al. 2020; Zbontar et al. 2021;
    Bardes et al. 2022).

    Per view: RandomResizedCrop (bicubic, as in the official Barlow Twins and VICReg code), horizontal
    flip, colour jitter, random grayscale, Gaussian blur and solarisation. Blur and solarisation are asymmetric between views: the ``i``-th view uses
    ``blur_probs[i % len(blur_probs)]`` (default 1.0 / 0.1) and likewise ``solarize_probs``
    (default 0.0 / 0.2).

    Automatic choices (options left at ``None``): for images of at most 64 px (CIFAR-like) the
    crop scale is (0.2, 1) and there is no blur, as in the usual CIFAR recipes; otherwise (0.08, 1)
    and the blur probabilities above. On one-channel data the jitter changes brightness and
    contrast only and there is no grayscale operation (both are meaningless without colour).

    Args:
        num_views: number of views per image.
        crop_scale: RandomResizedCrop area range; ``None`` = automatic (see above).
        hflip_prob: horizontal flip probability.
        jitter_prob: probability of applying the colour jitter.
        jitter: ColorJitter strengths (brightness, contrast, saturation, hue).
        grayscale_prob: probability of converting to grayscale (RGB data only).
        blur_probs: per-view Gaussian blur probabilities; ``None`` = automatic (see above).
        blur_sigma: range of the blur's standard deviation, in pixels.
        solarize_probs: per-view solarisation probabilities.
        interpolation: resampling of the RandomResizedCrop (``"bicubic"``, ``"bilinear"`` or ``"nearest"``).
    """

    def __init__(
        self,
        num_views: int = 2,
        crop_scale: tuple[float, float] | None = None,
        hflip_prob: float = 0.5,
        jitter_prob: float = 0.8,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        grayscale_prob: float = 0.2,
        blur_probs: tuple[float, ...] | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_probs: tuple[float, ...] = (0.0, 0.2),
        interpolation: Interpolation = "bicubic",
    ) -> None:
        if num_views < 1:
            raise ConfigurationError(f"num_views must be at least 1, got {num_views}")
        interpolation_mode(interpolation)  # a clear error now rather than at the first image
        self.interpolation = interpolation
        self.num_views = num_views
        self.crop_scale = crop_scale
        self.hflip_prob = hflip_prob
        self.jitter_prob = jitter_prob
        self.jitter = jitter
        self.grayscale_prob = grayscale_prob
        self.blur_probs = blur_probs
        self.blur_sigma = blur_sigma
        self.solarize_probs = solarize_probs

    def view_specs(self, image_size: int, channels: int) -> list[ViewSpec]:
        small = is_small_image(image_size)
        crop_scale = self.crop_scale or ((0.2, 1.0) if small else (0.08, 1.0))
        blur_probs = self.blur_probs
        if blur_probs is None:
            blur_probs = (0.0,) if small else (1.0, 0.1)
        return [
            self.spec(
                image_size,
                crop_scale,
                blur_prob=blur_probs[view % len(blur_probs)],
                solarize_prob=self.solarize_probs[view % len(self.solarize_probs)],
            )
            for view in range(self.num_views)
        ]

    def spec(self, size: int, crop_scale: tuple[float, float], blur_prob: float, solarize_prob: float) -> ViewSpec:
        """One view of this recipe at ``size`` px."""
        return ViewSpec(
            size,
            tuple(crop_scale),
            self.interpolation,
            hflip_prob=self.hflip_prob,
            jitter_prob=self.jitter_prob,
            jitter=tuple(self.jitter),
            grayscale_prob=self.grayscale_prob,
            blur_prob=blur_prob,
            blur_sigma=tuple(self.blur_sigma),
            solarize_prob=solarize_prob,
        )


class IJEPAViews(ViewRecipe):
    """The I-JEPA recipe (Assran et al. 2023): one view, RandomResizedCrop scale (0.3, 1), and
    nothing else.

    The crop resamples bilinearly by default, torchvision's default that the official code
    (facebookresearch/ijepa, ``src/transforms.py``) keeps. The masking of that single view into
    context and target blocks is the method's job.
    """

    def __init__(self, crop_scale: tuple[float, float] = (0.3, 1.0), interpolation: Interpolation = "bilinear") -> None:
        interpolation_mode(interpolation)
        self.crop_scale = crop_scale
        self.interpolation = interpolation

    def view_specs(self, image_size: int, channels: int) -> list[ViewSpec]:
        return [ViewSpec(image_size, tuple(self.crop_scale), self.interpolation)]


class StoPViews(ViewRecipe):
    """The FlexPredict / StoP recipe (Bar et al. 2023, reference run): one view, the I-JEPA crop
    plus horizontal flip, random grayscale (p 0.2) and Gaussian blur (p 0.5, sigma in [0.1, 2]), in
    the reference's order.

    The reference enables I-JEPA's colour distortion with jitter strength 0, which leaves only its
    grayscale step; hence no colour jitter here. On one-channel data there is no grayscale
    operation; for images of at most 64 px the blur is off unless ``blur_prob`` is given. The crop
    resamples bilinearly by default, as the reference (``src/data_manager.py``, torchvision's default).
    """

    def __init__(
        self,
        crop_scale: tuple[float, float] = (0.3, 1.0),
        hflip_prob: float = 0.5,
        blur_prob: float | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        grayscale_prob: float = 0.2,
        interpolation: Interpolation = "bilinear",
    ) -> None:
        interpolation_mode(interpolation)
        self.interpolation = interpolation
        self.crop_scale = crop_scale
        self.hflip_prob = hflip_prob
        self.blur_prob = blur_prob
        self.blur_sigma = blur_sigma
        self.grayscale_prob = grayscale_prob

    def view_specs(self, image_size: int, channels: int) -> list[ViewSpec]:
        blur_prob = self.blur_prob
        if blur_prob is None:
            blur_prob = 0.0 if is_small_image(image_size) else 0.5
        spec = ViewSpec(
            image_size,
            tuple(self.crop_scale),
            self.interpolation,
            hflip_prob=self.hflip_prob,
            grayscale_prob=self.grayscale_prob,
            blur_prob=blur_prob,
            blur_sigma=tuple(self.blur_sigma),
        )
        return [spec]


class LinearEvalViews(ViewRecipe):
    """The usual training augmentation of linear evaluation (e.g. Chen et al. 2020, Bardes et al.
    2022): one view, RandomResizedCrop and horizontal flip, nothing else.

    The resampling is the protocol's: bilinear (torchvision's default) in the VICReg and Barlow
    Twins evaluation code, bicubic for both the training crop and the validation resize in VISSL's
    ViT protocol (Goyal et al. 2021; used by I-JEPA and StoP).

    Args:
        crop_scale: RandomResizedCrop area range; ``None`` = (0.08, 1), or (0.2, 1) for images of at
            most 64 px (CIFAR-like), as in the pretraining recipe.
        hflip_prob: horizontal flip probability.
        interpolation: resampling of the training crop (``"bilinear"``, ``"bicubic"`` or ``"nearest"``).
        eval_interpolation: resampling of the DataModule's validation resize.
    """

    def __init__(
        self,
        crop_scale: tuple[float, float] | None = None,
        hflip_prob: float = 0.5,
        interpolation: Interpolation = "bilinear",
        eval_interpolation: Interpolation = "bilinear",
    ) -> None:
        interpolation_mode(interpolation)
        interpolation_mode(eval_interpolation)
        self.crop_scale = crop_scale
        self.hflip_prob = hflip_prob
        self.interpolation = interpolation
        self.eval_interpolation = eval_interpolation

    def view_specs(self, image_size: int, channels: int) -> list[ViewSpec]:
        crop_scale = self.crop_scale or ((0.2, 1.0) if is_small_image(image_size) else (0.08, 1.0))
        return [ViewSpec(image_size, tuple(crop_scale), self.interpolation, hflip_prob=self.hflip_prob)]


class MultiCropViews(JointEmbeddingViews):
    """Multi-crop views (Caron et al. 2020; the LeJEPA recipe, Balestriero & LeCun 2025, SPEC.md §9):
    ``num_global`` large crops followed by ``num_local`` small ones, all with one photometric policy.

    The views come in that order, globals first; each global view is ``global_size`` px (default: the
    DataModule's image size) and each local view ``local_size`` px (default: 98/224 of the global size,
    the paper's ratio, at least 4 px). Collated, a batch holds one ``(B, C, size, size)`` tensor per view,
    so views of different sizes travel side by side; a method forwards the views of each size together.
    With ``num_local=0`` every view is global, as in the paper's recipe for CNNs and the official
    small-data run (4 views at 128 px).

    Per view: RandomResizedCrop (bilinear, torchvision's default, which the official code keeps),
    horizontal flip, colour jitter (0.4, 0.4, 0.2, 0.1) with probability 0.8, grayscale 0.2, Gaussian
    blur 0.5 and solarisation 0.2 — the same for every view. As in :class:`JointEmbeddingViews`, images
    of at most 64 px get no blur unless ``blur_prob`` is given, and one-channel data no grayscale and
    brightness/contrast jitter only.

    Args:
        num_global: global views per image (at least 2: LeJEPA's prediction target is their mean).
        num_local: local views per image.
        global_scale, local_scale: RandomResizedCrop area ranges of the two kinds (paper: (0.3, 1) and
            (0.05, 0.3)).
        global_size, local_size: their sides in pixels; ``None`` = automatic (see above).
        blur_prob: Gaussian blur probability; ``None`` = 0.5, or 0 for images of at most 64 px.
        solarize_prob: solarisation probability.
        hflip_prob, jitter_prob, jitter, grayscale_prob, blur_sigma, interpolation: as in
            :class:`JointEmbeddingViews`.
    """

    def __init__(
        self,
        num_global: int = 2,
        num_local: int = 6,
        global_scale: tuple[float, float] = (0.3, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.3),
        global_size: int | None = None,
        local_size: int | None = None,
        hflip_prob: float = 0.5,
        jitter_prob: float = 0.8,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        grayscale_prob: float = 0.2,
        blur_prob: float | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_prob: float = 0.2,
        interpolation: Interpolation = "bilinear",
    ) -> None:
        if num_global < 2 or num_local < 0:
            raise ConfigurationError(
                f"MultiCropViews needs at least 2 global views and no negative count of local ones, got "
                f"num_global={num_global}, num_local={num_local}"
            )
        for name, size in (("global_size", global_size), ("local_size", local_size)):
            if size is not None and (not isinstance(size, int) or size < 1):
                raise ConfigurationError(f"{name} must be a positive number of pixels or None, got {size!r}")
        super().__init__(
            num_views=num_global + num_local,
            crop_scale=global_scale,
            hflip_prob=hflip_prob,
            jitter_prob=jitter_prob,
            jitter=jitter,
            grayscale_prob=grayscale_prob,
            blur_probs=None if blur_prob is None else (blur_prob,),
            blur_sigma=blur_sigma,
            solarize_probs=(solarize_prob,),
            interpolation=interpolation,
        )
        self.num_global = num_global
        self.num_local = num_local
        self.local_scale = local_scale
        self.global_size = global_size
        self.local_size = local_size

    def view_sizes(self, image_size: int) -> tuple[int, int]:
        """``(global, local)`` view sides in pixels for a DataModule of ``image_size``."""
        global_size = self.global_size or image_size
        return global_size, self.local_size or max(4, round(global_size * 98 / 224))

    def view_specs(self, image_size: int, channels: int) -> list[ViewSpec]:
        global_size, local_size = self.view_sizes(image_size)
        blur_prob = self.blur_probs[0] if self.blur_probs is not None else (0.0 if is_small_image(global_size) else 0.5)
        solarize_prob = self.solarize_probs[0]
        kinds = [(global_size, self.crop_scale)] * self.num_global + [(local_size, self.local_scale)] * self.num_local
        return [self.spec(size, scale, blur_prob, solarize_prob) for size, scale in kinds]
