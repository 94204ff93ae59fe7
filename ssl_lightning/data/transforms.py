"""Transform building blocks shared by the view recipes and the DataModules.

Every pipeline works on ``uint8`` image tensors (``torchvision.transforms.v2``) and converts to
normalised ``float32`` only at the end, which keeps per-sample augmentation cheap on few CPU cores.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor
from torchvision.transforms import v2

from ssl_lightning.errors import ConfigurationError

SMALL_IMAGE_SIZE = 64
"""Images at most this many pixels wide get the small-image recipe: no blur, no resize at eval."""

EVAL_CROP_FRACTION = 0.875
"""Centre-crop fraction at evaluation for large images (the usual 224 of 256 on ImageNet)."""

Interpolation = Literal["nearest", "bilinear", "bicubic"]
"""Resampling of crops and resizes, by torchvision's name (``InterpolationMode`` values)."""
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)


def is_small_image(image_size: int) -> bool:
    """Whether ``image_size`` is CIFAR-like, where blur destroys the little detail there is."""
    return image_size <= SMALL_IMAGE_SIZE


def interpolation_mode(name: str) -> v2.InterpolationMode:
    """torchvision's ``InterpolationMode`` called ``name`` (one of :data:`INTERPOLATIONS`), with a clear error."""
    if name not in INTERPOLATIONS:
        raise ConfigurationError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {name!r}")
    return v2.InterpolationMode(name)


def with_probability(p: float, transform: v2.Transform) -> list[v2.Transform]:
    """``transform`` applied with probability ``p``, as a list to splice into a pipeline.

    Returns an empty list when ``p`` is 0, so disabled operations are absent from the pipeline
    (cheaper, and visible when the pipeline is inspected).
    """
    if p <= 0.0:
        return []
    return [v2.RandomApply([transform], p=p)]


def blur_kernel_size(image_size: int) -> int:
    """The Gaussian blur's kernel side: about 10% of the image side, odd (BYOL: 23 px at 224 px)."""
    return 2 * round(0.05 * image_size) + 1


def gaussian_blur(image_size: int, sigma: Sequence[float], p: float) -> list[v2.Transform]:
    """Random Gaussian blur with a kernel of :func:`blur_kernel_size`."""
    return with_probability(p, v2.GaussianBlur(blur_kernel_size(image_size), sigma=tuple(sigma)))


def random_grayscale(channels: int, p: float) -> list[v2.Transform]:
    """Random conversion to grayscale (keeping the channel count); absent on one-channel data."""
    if channels == 1:
        return []
    return with_probability(p, v2.Grayscale(num_output_channels=channels))


@dataclass(frozen=True)
class ViewSpec:
    """One view's augmentation: what a recipe says about it, from which both the per-sample
    pipeline (:func:`per_sample_pipeline`) and the batched one (:mod:`ssl_lightning.data.batched`) are built.

    Operations in order: random resized crop to ``size`` (area ``crop_scale``, aspect ``crop_ratio``),
    horizontal flip, colour jitter (``jitter`` = brightness, contrast, saturation, hue strengths; one-channel
    images get the first two only), grayscale (RGB only), Gaussian blur (sigma in ``blur_sigma``),
    solarisation; each with its probability (0: absent).
    """

    size: int
    crop_scale: tuple[float, float]
    interpolation: Interpolation = "bilinear"
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.0
    jitter_prob: float = 0.0
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0


SOLARIZE_THRESHOLD = 128
"""Mid-grey on uint8 images, the scale every per-sample pipeline works on."""


def per_sample_pipeline(spec: ViewSpec, channels: int) -> v2.Compose:
    """The torchvision pipeline (uint8 image → uint8 view) of one :class:`ViewSpec`."""
    brightness, contrast, saturation, hue = spec.jitter
    if channels == 1:
        jitter = v2.ColorJitter(brightness=brightness, contrast=contrast)
    else:
        jitter = v2.ColorJitter(brightness, contrast, saturation, hue)
    flip = [v2.RandomHorizontalFlip(p=spec.hflip_prob)] if spec.hflip_prob > 0 else []
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                spec.size, scale=tuple(spec.crop_scale), ratio=tuple(spec.crop_ratio),
                interpolation=interpolation_mode(spec.interpolation),
            ),
            *flip,
            *with_probability(spec.jitter_prob, jitter),
            *random_grayscale(channels, spec.grayscale_prob),
            *gaussian_blur(spec.size, spec.blur_sigma, spec.blur_prob),
            *with_probability(spec.solarize_prob, v2.RandomSolarize(SOLARIZE_THRESHOLD, p=1.0)),
        ]
    )  # fmt: skip


def batched_load_size(image_size: int) -> int:
    """The side images of varying size are brought to for batched views of ``image_size``: what the
    evaluation crop keeps around it (256 for 224), or ``image_size`` itself for small images."""
    return image_size if is_small_image(image_size) else round(image_size / EVAL_CROP_FRACTION)


def batched_load_transform(image_size: int, native_size: int | None) -> v2.Compose:
    """What the workers do in batched-view mode: decode to a ``uint8`` tensor and, for images of
    varying size, resize the short side and centre-crop to :func:`batched_load_size`, so that images
    batch; the views' random crops are then drawn from it."""
    geometry = []
    if native_size is None:
        load_size = batched_load_size(image_size)
        geometry = [v2.Resize(load_size, antialias=True), v2.CenterCrop(load_size)]
    return v2.Compose([v2.ToImage(), *geometry, v2.ToPureTensor()])


def to_normalized_float(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """uint8 image -> float32 in [0, 1] -> per-channel standardisation -> plain tensor."""
    return v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
            v2.ToPureTensor(),
        ]
    )


class MultiViewTransform:
    """Per-sample callable: one image (PIL or uint8 tensor) -> list of view tensors.

    The image is converted to a uint8 tensor once, then every view pipeline runs on it
    independently, so each view gets its own random draw.
    """

    def __init__(self, view_pipelines: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.to_image = v2.ToImage()
        self.view_pipelines = list(view_pipelines)

    def __call__(self, image) -> list[Tensor]:
        image = self.to_image(image)
        return [pipeline(image) for pipeline in self.view_pipelines]


def eval_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    native_size: int | None = None,
    interpolation: Interpolation = "bilinear",
) -> v2.Compose:
    """Deterministic evaluation transform: image -> one normalised float tensor.

    - Stored images already at ``image_size`` (CIFAR at 32, STL-10 at 96): no resize at all.
    - Fixed-size square images at another size (CIFAR upsampled for a ViT): plain resize.
    - Images of varying size (``native_size=None``, ImageFolder): resize the short side, then
      centre-crop; large images keep the central 87.5% (resize 256 -> crop 224), small ones are
      resized straight to ``image_size``.

    ``interpolation`` is the resampling of the resize (bicubic in VISSL's ViT linear evaluation,
    bilinear in the VICReg and Barlow Twins evaluation code).
    """
    mode = interpolation_mode(interpolation)
    if native_size == image_size:
        geometry = []
    elif native_size is not None:
        geometry = [v2.Resize((image_size, image_size), interpolation=mode)]
    else:
        crop_fraction = 1.0 if is_small_image(image_size) else EVAL_CROP_FRACTION
        geometry = [v2.Resize(round(image_size / crop_fraction), interpolation=mode), v2.CenterCrop(image_size)]
    return v2.Compose([v2.ToImage(), *geometry, to_normalized_float(mean, std)])
