"""Construction-time checks of a multi-block mask configuration.

A sampler that retries until every mask keeps more than ``min_keep`` patches hangs forever when
no placement can succeed (SPEC.md §8: an 8×8 grid with ``min_keep=10`` hangs on the fourth batch
of another library). These checks reject such configurations before the first batch, with a
message that names the offending block sizes and a fix. They are exact: the block sizes come
from :func:`possible_block_sizes`, and the best placement of a context block against target
blocks is computed in closed form.
"""

from __future__ import annotations

import math
from typing import Literal

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.masks.block_size import Size, possible_block_sizes

CornerRange = Literal["full", "official"]
ContextSubset = Literal["random", "first"]

# The three ways the official sampler differs from ours: option -> (official value, our default).
OFFICIAL_DIFFERENCES: dict[str, tuple[str | bool, str | bool]] = {
    "corner_range": ("official", "full"),
    "shared_size_draw": (True, False),
    "context_subset": ("first", "random"),
}


def check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_grid(grid: Size) -> None:
    if len(grid) != 2 or any(not isinstance(n, int) or n < 2 for n in grid):
        raise ConfigurationError(
            f"grid_size must be two integers >= 2 (height, width in patches), got {grid!r}: "
            "blocks are shrunk to at most (height - 1) × (width - 1), so a grid needs two rows "
            "and two columns. Use larger images or a smaller patch_size."
        )


def check_range(name: str, value_range: tuple[float, float], upper: float) -> None:
    """Reject a (low, high) range unless 0 < low <= high <= upper."""
    low, high = value_range
    if not 0 < low <= high <= upper:
        bound = "1" if upper == 1 else "inf"
        raise ConfigurationError(
            f"{name} must be a range (low, high) with 0 < low <= high <= {bound}, got {value_range!r}."
        )


def sampling_options(reference: bool, **options: str | bool | None) -> dict[str, str | bool]:
    """Resolve the options of :data:`OFFICIAL_DIFFERENCES`: ``None`` follows ``reference``.

    ``reference=True`` means exactly the official code, so it rejects an explicit non-official
    value instead of silently overriding one of them; to mix, leave ``reference`` False and set
    each option.
    """
    if type(reference) is not bool:  # a value error like the options': "yes" is not True
        raise ConfigurationError(f"reference must be True or False, got {reference!r}.")
    resolved = {}
    for name, value in options.items():
        official, ours = OFFICIAL_DIFFERENCES[name]
        if value is None:
            resolved[name] = official if reference else ours
            continue
        if value not in (official, ours) or type(value) is not type(official):
            raise ConfigurationError(
                f"{name} must be {ours!r} (our default), {official!r} (the official code's) or None "
                f"(follow reference), got {value!r}."
            )
        if reference and value != official:
            raise ConfigurationError(
                f"reference=True (IJEPA: reference_masks=True) reproduces the official code exactly, "
                f"which has {name}={official!r}, but {name}={value!r} was given. Leave {name} unset with reference=True, or drop "
                "reference and set the three options yourself (corner_range='full', "
                "shared_size_draw=True, context_subset='first' is the official sampler with only "
                "the last row/column fixed)."
            )
        resolved[name] = value
    return resolved


def check_feasible(
    grid: Size,
    target_scale: tuple[float, float],
    target_aspect: tuple[float, float],
    context_scale: tuple[float, float],
    context_aspect: tuple[float, float],
    min_keep: int,
    allow_overlap: bool,
    shared_size_draw: bool,
    corner_range: CornerRange,
) -> None:
    """Raise ``ValueError`` if some drawable block sizes can never leave > ``min_keep`` patches.

    Every mask must keep more than ``min_keep`` patches, as in the official code: a target block
    of ``h·w <= min_keep`` patches can never qualify, and neither can a context block that keeps
    too few patches once the target blocks are removed, even in its best placement (all targets
    stacked in the corner opposite the context block). ``shared_size_draw`` and ``corner_range``
    are the sampler's (:class:`~ssl_lightning.masks.MultiBlockMaskSampler`): the first decides
    which block sizes can be drawn, the second which corners (``"official"``: none in the last row
    or column), so how far a context block can get from the targets.
    """
    target_sizes = possible_block_sizes(grid, target_scale, target_aspect, shared_draw=shared_size_draw)
    context_sizes = possible_block_sizes(grid, context_scale, context_aspect, shared_draw=shared_size_draw)
    for role, sizes, fix in (
        ("target", target_sizes, "raise target_scale"),
        ("context", context_sizes, "raise context_scale"),
    ):
        h, w = min(sizes, key=lambda size: (math.prod(size), size))
        if h * w <= min_keep:
            raise ConfigurationError(
                f"On a {grid[0]}×{grid[1]} patch grid, {role} blocks can be as small as {h}×{w} = "
                f"{h * w} patches, which is not more than min_keep={min_keep}: such a mask can "
                f"never be accepted. Lower min_keep, {fix}, or use a finer patch grid."
            )
    if allow_overlap:
        return
    for context in context_sizes:
        for target in target_sizes:
            kept = _best_context_kept(grid, context, target, corner_range)
            if kept <= min_keep:
                raise ConfigurationError(
                    f"On a {grid[0]}×{grid[1]} patch grid, a {context[0]}×{context[1]} context "
                    f"block keeps at most {kept} patches once {target[0]}×{target[1]} target "
                    f"blocks are removed, which is not more than min_keep={min_keep}. Lower "
                    "target_scale or min_keep, raise context_scale, or pass allow_overlap=True."
                )


def _best_context_kept(grid: Size, context: Size, target: Size, corner_range: CornerRange) -> int:
    # The official corners never reach the last row and column: the usable grid is one smaller.
    height, width = (n - (corner_range == "official") for n in grid)
    overlap_rows = max(0, context[0] + target[0] - height)
    overlap_cols = max(0, context[1] + target[1] - width)
    return context[0] * context[1] - overlap_rows * overlap_cols
