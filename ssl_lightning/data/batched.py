"""Views of a whole batch, built on the training device after the transfer.

The loader's workers only decode the images (and bring images of varying size to one fixed size,
:func:`~ssl_lightning.data.transforms.batched_load_transform`) and hand over ``uint8`` batches;
:class:`BatchedViews` then makes every view of every image at once, from the same
:class:`~ssl_lightning.data.transforms.ViewSpec` the per-sample pipelines are built from, each
sample with its own random parameters:

- random resized crop: torchvision's sampling (10 tries of area and log-aspect, then the central
  fallback), resampled bilinearly by ``grid_sample`` without antialiasing: our recipes' crops
  shrink by at most 1.14× (global views of 224 px from the 256 px the workers hand over) or about
  1.4× (multi-crop local views), where torchvision's antialiased resize and this differ little;
- horizontal flip; colour jitter (brightness, contrast, saturation: torchvision's formulas; hue: a
  rotation in YIQ space, :func:`shift_hue`; always in that order, where torchvision draws an order
  per image: drawing it here would need the draw on the host); grayscale (ITU-R 601-2 luma);
  Gaussian blur (per-sample sigma, reflect padding, torchvision's kernel size); solarisation at 128/255.

They work in float32 on [0, 1] (no rounding to uint8 between operations). Every draw comes from one
``torch.Generator`` on the images' device, so no value is read back to the host. The measured
comparison with kornia's augmentations is in ``benchmarks/RESULTS.md`` (``benchmarks/data_throughput.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.data.transforms import SOLARIZE_THRESHOLD, ViewSpec, blur_kernel_size

CROP_TRIES = 10
LUMA = (0.299, 0.587, 0.114)


def uniform(low: float, high: float, shape: Sequence[int], generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def coin(p: float, n: int, generator: torch.Generator) -> Tensor:
    """``(n,)`` bool, each True with probability ``p``."""
    return torch.rand(n, generator=generator, device=generator.device) < p


def crop_boxes(
    n: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float], generator: torch.Generator
) -> Tensor:
    """``(n, 4)`` crop boxes ``(x1, y1, x2, y2)`` in pixel edges, drawn as torchvision's
    ``RandomResizedCrop.get_params`` does, for every sample at once."""
    area = uniform(scale[0], scale[1], (n, CROP_TRIES), generator) * (height * width)
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1]), (n, CROP_TRIES), generator))
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    # torchvision's fallback when no try fits: the central crop of the clamped aspect ratio.
    in_ratio = width / height
    fallback_w = width if in_ratio <= ratio[1] else round(height * ratio[1])
    fallback_h = height if in_ratio >= ratio[0] else round(width / ratio[0])
    found = valid.any(dim=1)
    w = torch.where(found, w, torch.full_like(w, float(fallback_w)))
    h = torch.where(found, h, torch.full_like(h, float(fallback_h)))
    top = torch.floor(torch.rand(n, generator=generator, device=generator.device) * (height - h + 1))
    left = torch.floor(torch.rand(n, generator=generator, device=generator.device) * (width - w + 1))
    top = torch.where(found, top, torch.floor((height - h) / 2))
    left = torch.where(found, left, torch.floor((width - w) / 2))
    return torch.stack([left, top, left + w, top + h], dim=1)


def resized_crops(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """``images`` ``(B, C, H, W)`` float cropped to ``boxes`` (pixel edges), mirrored left-right where
    ``flip`` ``(B,)`` is True, and resampled bilinearly to ``size``² (``affine_grid`` + ``grid_sample``,
    3× faster than ``roi_align`` here; the flip is a sign of the affine map, so it costs nothing)."""
    n, channels, height, width = images.shape
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    scale_x = (x2 - x1) / width
    theta[:, 0, 0] = scale_x if flip is None else torch.where(flip, -scale_x, scale_x)
    theta[:, 0, 2] = (x1 + x2) / width - 1
    theta[:, 1, 1], theta[:, 1, 2] = (y2 - y1) / height, (y1 + y2) / height - 1
    grid = F.affine_grid(theta, [n, channels, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def luma(images: Tensor) -> Tensor:
    """``(B, 1, H, W)`` grayscale of RGB (or one-channel) images."""
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``_blend``: ``factor·images + (1 − factor)·other``, clamped to [0, 1]."""
    factor = per_sample(factor)
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def shift_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Hue rotated by ``shift`` (a fraction of the circle, per sample) in YIQ space: one 3×3 linear map
    per image (as NVIDIA DALI's hue), where torchvision's ``adjust_hue`` goes through HSV, which is
    piecewise and here 5× slower. Both turn the hue the same way by the same fraction of the circle
    (the I-Q plane turns the other way round than HSV's hue) and keep the luma; they differ in how
    saturated colours clip."""
    to_yiq = images.new_tensor(RGB_TO_YIQ)
    angle = shift * (-2 * math.pi)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(images), 3, 3, device=images.device, dtype=images.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, images).clamp_(0, 1)


def jitter_factors(spec: ViewSpec, n: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Per-sample ColorJitter factors, drawn as torchvision's (brightness, contrast and saturation
    uniform in ``[max(0, 1 − s), 1 + s]``, hue in ``[−s, s]``), set to the identity (1, or 0 for the
    hue) for the samples the jitter skips (probability ``1 − spec.jitter_prob``)."""
    apply = coin(spec.jitter_prob, n, generator)
    factors = {}
    for name, strength in zip(("brightness", "contrast", "saturation", "hue"), spec.jitter):
        if name == "hue":
            drawn, identity = uniform(-strength, strength, (n,), generator), 0.0
        else:
            drawn, identity = uniform(max(0.0, 1 - strength), 1 + strength, (n,), generator), 1.0
        factors[name] = torch.where(apply, drawn, torch.full_like(drawn, identity))
    return factors


def color_jitter(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> Tensor:
    """ColorJitter with probability ``spec.jitter_prob`` (:func:`jitter_factors`): brightness, contrast,
    saturation then hue. One-channel images get brightness and contrast only."""
    factors = jitter_factors(spec, len(images), generator)
    brightness, contrast, saturation, hue = spec.jitter
    if brightness:
        images = images.mul_(per_sample(factors["brightness"])).clamp_(0, 1)
    if contrast:
        images = blend(images, luma(images).mean(dim=(1, 2, 3), keepdim=True), factors["contrast"])
    if images.shape[1] == 3 and saturation:
        images = blend(images, luma(images), factors["saturation"])
    if images.shape[1] == 3 and hue:
        images = shift_hue(images, factors["hue"])
    return images


def gaussian_blur(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> Tensor:
    """Blur with probability ``spec.blur_prob``, sigma uniform in ``spec.blur_sigma`` per sample."""
    n, channels, height, width = images.shape
    apply = coin(spec.blur_prob, n, generator)
    sigma = uniform(*spec.blur_sigma, (n,), generator)
    size = blur_kernel_size(spec.size)
    offsets = torch.arange(size, device=images.device, dtype=images.dtype) - size // 2
    kernel = torch.exp(-0.5 * (offsets / sigma.view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (n·C, size)
    flat = F.pad(images.reshape(1, n * channels, height, width), [size // 2] * 4, mode="reflect")
    flat = flat.contiguous(memory_format=torch.channels_last)  # depthwise convolutions: 3× faster on CPUs
    flat = F.conv2d(flat, kernel.view(-1, 1, size, 1), groups=n * channels)
    flat = F.conv2d(flat, kernel.view(-1, 1, 1, size), groups=n * channels)
    return torch.where(per_sample(apply), flat.reshape(n, channels, height, width), images)


def make_view(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> Tensor:
    """One view of every image of ``images`` ``(B, C, H, W)`` float in [0, 1]."""
    n, channels, height, width = images.shape
    boxes = crop_boxes(n, height, width, spec.crop_scale, spec.crop_ratio, generator)
    flip = coin(spec.hflip_prob, n, generator) if spec.hflip_prob > 0 else None
    view = resized_crops(images, boxes, spec.size, flip)
    if spec.jitter_prob > 0:
        view = color_jitter(view, spec, generator)
    if spec.grayscale_prob > 0 and channels == 3:
        view = torch.where(per_sample(coin(spec.grayscale_prob, n, generator)), luma(view).expand_as(view), view)
    if spec.blur_prob > 0:
        view = gaussian_blur(view, spec, generator)
    if spec.solarize_prob > 0:
        solarize = per_sample(coin(spec.solarize_prob, n, generator)) & (view >= SOLARIZE_THRESHOLD / 255)
        view = torch.where(solarize, 1 - view, view)
    return view


class BatchedViews:
    """Every view of a ``uint8`` batch, normalised: the batched counterpart of
    :class:`~ssl_lightning.data.transforms.MultiViewTransform`.

    Args:
        specs: one :class:`~ssl_lightning.data.transforms.ViewSpec` per view (the recipe's).
        mean, std: per-channel normalisation of the views.
    """

    def __init__(self, specs: Sequence[ViewSpec], mean: Sequence[float], std: Sequence[float]) -> None:
        self.specs = list(specs)
        self.mean, self.std = tuple(mean), tuple(std)

    @torch.no_grad()
    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        """``images`` ``(B, C, H, W)`` uint8 on the generator's device → one ``(B, C, size, size)``
        float32 tensor per view."""
        images = images.float().div_(255)
        mean = images.new_tensor(self.mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.std).view(1, -1, 1, 1)
        return [make_view(images, spec, generator).sub_(mean).div_(std) for spec in self.specs]
