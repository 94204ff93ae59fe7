"""Block sizes of the I-JEPA multi-block masks (Assran et al., arXiv 2301.08243, §3).

A block covers a fraction ``scale`` of the H×W patch grid with aspect ratio ``aspect`` = h / w
(rows over columns). The official code turns the two numbers into a size as follows (SPEC.md §1):
``keep = floor(H·W·scale)``, ``h = round(sqrt(keep·aspect))``, ``w = round(sqrt(keep/aspect))``,
then shrinks ``h`` and ``w`` until ``h < H`` and ``w < W``. ``round`` is Python's (ties to even),
as in the official code. A large aspect therefore gives a *tall* block: with 196 patches,
scale 0.2 and aspect 1.5 give 8 rows × 5 columns.

Scale and aspect are drawn uniformly from their ranges. The paper draws them independently; the
official code reuses one uniform number for both, so a large block is always a tall one. The
second behaviour is what the published facts of SPEC.md §1 describe (targets on 14×14 are only
ever 5×6, 6×6, 6×5, 7×5 or 8×5 there), and independent draws also give 5×5, 5×7, 6×4, 6×7, 7×4
and 7×6.
"""

from __future__ import annotations

import itertools
import math

Size = tuple[int, int]


def lerp(value_range: tuple[float, float], u: float) -> float:
    """The point at fraction ``u`` ∈ [0, 1) of ``value_range`` (how a uniform draw is mapped)."""
    low, high = value_range
    return low + u * (high - low)


def block_size(grid: Size, scale: float, aspect: float) -> Size:
    """(h, w) of a block covering ``scale`` of ``grid`` with aspect ratio h/w = ``aspect``."""
    height, width = grid
    return _block_size_for_keep(grid, int(height * width * scale), aspect)


def _block_size_for_keep(grid: Size, keep: int, aspect: float) -> Size:
    height, width = grid
    h = round(math.sqrt(keep * aspect))
    w = round(math.sqrt(keep / aspect))
    return min(h, height - 1), min(w, width - 1)


def possible_block_sizes(
    grid: Size,
    scale: tuple[float, float],
    aspect: tuple[float, float],
    shared_draw: bool,
) -> set[Size]:
    """Every (h, w) that :func:`block_size` can return for draws from ``scale`` × ``aspect``.

    Exact, not sampled: for each reachable ``keep`` the aspect interval is cut where
    ``sqrt(keep·aspect)`` or ``sqrt(keep/aspect)`` crosses a half-integer (where rounding
    changes), and one aspect inside each piece is evaluated. ``shared_draw`` reproduces the
    official code (one uniform number for both scale and aspect), which ties each ``keep`` to a
    narrower aspect interval. The upper ends of the ranges are included, so the set may hold a
    size that only a draw of exactly 1.0 would give: a safe superset for validation.
    """
    height, width = grid
    patches = height * width
    scale_low, scale_high = scale
    sizes = set()
    for keep in range(int(patches * scale_low), int(patches * scale_high) + 1):
        aspect_range = aspect
        if shared_draw and scale_high > scale_low:
            # The uniform draws u for which floor(patches · scale(u)) == keep, mapped to aspects.
            u_low = max(0.0, (keep / patches - scale_low) / (scale_high - scale_low))
            u_high = min(1.0, ((keep + 1) / patches - scale_low) / (scale_high - scale_low))
            aspect_range = (lerp(aspect, u_low), lerp(aspect, u_high))
        sizes |= _sizes_for_keep(grid, keep, aspect_range)
    return sizes


def _sizes_for_keep(grid: Size, keep: int, aspect_range: tuple[float, float]) -> set[Size]:
    low, high = aspect_range
    cuts = {low, high}
    if keep > 0:
        largest_side = math.sqrt(keep * max(high, 1 / low))
        for n in range(math.ceil(largest_side) + 1):
            half_square = (n + 0.5) ** 2
            cuts |= {a for a in (half_square / keep, keep / half_square) if low < a < high}
    cuts = sorted(cuts)
    probes = [low, high] + [(a + b) / 2 for a, b in itertools.pairwise(cuts)]
    return {_block_size_for_keep(grid, keep, a) for a in probes}
