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

from ssl_lightning.masks.block_size import Size, possible_block_sizes


def check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_grid(grid: Size) -> None:
    if len(grid) != 2 or any(not isinstance(n, int) or n < 2 for n in grid):
        raise ValueError(
            f"grid_size must be two integers >= 2 (height, width in patches), got {grid!r}: "
            "blocks are shrunk to at most (height - 1) × (width - 1), so a grid needs two rows "
            "and two columns. Use larger images or a smaller patch_size."
        )


def check_range(name: str, value_range: tuple[float, float], upper: float) -> None:
    """Reject a (low, high) range unless 0 < low <= high <= upper."""
    low, high = value_range
    if not 0 < low <= high <= upper:
        bound = "1" if upper == 1 else "inf"
        raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high <= {bound}, got {value_range!r}.")


def check_feasible(
    grid: Size,
    target_scale: tuple[float, float],
    target_aspect: tuple[float, float],
    context_scale: tuple[float, float],
    context_aspect: tuple[float, float],
    min_keep: int,
    allow_overlap: bool,
    reference: bool,
) -> None:
    """Raise ``ValueError`` if some drawable block sizes can never leave > ``min_keep`` patches.

    Every mask must keep more than ``min_keep`` patches, as in the official code: a target block
    of ``h·w <= min_keep`` patches can never qualify, and neither can a context block that keeps
    too few patches once the target blocks are removed, even in its best placement (all targets
    stacked in the corner opposite the context block).
    """
    target_sizes = possible_block_sizes(grid, target_scale, target_aspect, shared_draw=reference)
    context_sizes = possible_block_sizes(grid, context_scale, context_aspect, shared_draw=reference)
    for role, sizes, fix in (
        ("target", target_sizes, "raise target_scale"),
        ("context", context_sizes, "raise context_scale"),
    ):
        h, w = min(sizes, key=lambda size: (math.prod(size), size))
        if h * w <= min_keep:
            raise ValueError(
                f"On a {grid[0]}×{grid[1]} patch grid, {role} blocks can be as small as {h}×{w} = "
                f"{h * w} patches, which is not more than min_keep={min_keep}: such a mask can "
                f"never be accepted. Lower min_keep, {fix}, or use a finer patch grid."
            )
    if allow_overlap:
        return
    for context in context_sizes:
        for target in target_sizes:
            kept = _best_context_kept(grid, context, target, reference)
            if kept <= min_keep:
                raise ValueError(
                    f"On a {grid[0]}×{grid[1]} patch grid, a {context[0]}×{context[1]} context "
                    f"block keeps at most {kept} patches once {target[0]}×{target[1]} target "
                    f"blocks are removed, which is not more than min_keep={min_keep}. Lower "
                    "target_scale or min_keep, raise context_scale, or pass allow_overlap=True."
                )


def _best_context_kept(grid: Size, context: Size, target: Size, reference: bool) -> int:
    # The official corners never reach the last row and column: the usable grid is one smaller.
    height, width = (n - reference for n in grid)
    overlap_rows = max(0, context[0] + target[0] - height)
    overlap_cols = max(0, context[1] + target[1] - width)
    return context[0] * context[1] - overlap_rows * overlap_cols
