"""I-JEPA multi-block masks against the facts of SPEC.md §1 (Assran et al., arXiv 2301.08243)."""

from __future__ import annotations

import pytest
import torch

from ssl_lightning.masks import MultiBlockMaskSampler, indices_to_mask, possible_block_sizes
from tests.jepa_helpers import tiny_method

# The official code's value of each option that separates it from our default.
OFFICIAL = {"corner_range": "official", "shared_size_draw": True, "context_subset": "first"}
OURS = {"corner_range": "full", "shared_size_draw": False, "context_subset": "random"}
EDGE_FIXED = {**OFFICIAL, "corner_range": "full"}
OFFICIAL_TARGETS = {
    # SPEC.md §1, reference-compatible mode, official scales; sizes are rows × columns.
    14: {(5, 6), (6, 6), (6, 5), (7, 5), (8, 5)},
    16: {(5, 7), (6, 7), (6, 6), (7, 6), (8, 6), (9, 6)},
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def seeded(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def block_mask(corner: tuple[int, int], size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """One block as an (H, W) mask, by slicing: an implementation independent of the sampler's."""
    mask = torch.zeros(grid, dtype=torch.bool)
    mask[corner[0] : corner[0] + size[0], corner[1] : corner[1] + size[1]] = True
    return mask


def all_masks(sampler: MultiBlockMaskSampler, batches: int, batch_size: int, seed: int = 0):
    """(context (N, H, W), targets (N, num_targets, H, W)) boolean masks over several batches."""
    generator = seeded(seed)
    contexts, targets = [], []
    for _ in range(batches):
        context_idx, target_idx = sampler(batch_size, generator=generator)
        contexts.append(indices_to_mask(context_idx, sampler.grid))
        targets.append(torch.stack([indices_to_mask(t, sampler.grid) for t in target_idx], 1))
    return torch.cat(contexts), torch.cat(targets)


@pytest.mark.parametrize("grid, context", [(14, 13), (16, 15)])
def test_reference_block_sizes_match_the_official_facts(grid, context):
    sampler = MultiBlockMaskSampler(grid, reference=True)
    generator = seeded(1)
    target_sizes = set()
    for _ in range(600):
        layout = sampler.sample_layout(2, generator=generator)
        assert layout.context_size == (context, context)
        assert (layout.context_corners == 0).all()
        target_sizes.add(layout.target_size)
    assert target_sizes == OFFICIAL_TARGETS[grid]


def target_sizes(sampler: MultiBlockMaskSampler, draws: int = 600, seed: int = 1) -> set[tuple[int, int]]:
    generator = seeded(seed)
    return {sampler.sample_layout(2, generator=generator).target_size for _ in range(draws)}


def keeps_first_indices(sampler: MultiBlockMaskSampler, batches: int = 4, seed: int = 2) -> bool:
    """Whether every context of a few batches is its first ``Kc`` kept indices (row-major)."""
    generator = seeded(seed)
    for _ in range(batches):
        layout = sampler.sample_layout(32, generator=generator)
        context_idx, _ = sampler.indices(layout, generator)
        for row, image_kept in zip(context_idx, layout.context_mask.flatten(1)):
            if row.tolist() != image_kept.nonzero().flatten()[: len(row)].tolist():
                return False
    return True


def covers_last_row_and_column(sampler: MultiBlockMaskSampler) -> bool:
    contexts, targets = all_masks(sampler, batches=10, batch_size=32)
    covered = contexts.any(0) | targets.any((0, 1))
    return bool(covered[-1].all() and covered[:, -1].all())


@pytest.mark.parametrize("grid, context", [(14, 13), (16, 15)])
def test_official_sampler_with_only_the_edge_fixed(grid, context):
    sampler = MultiBlockMaskSampler(grid, **EDGE_FIXED)
    # Exactly the official target shapes (SPEC.md §1), but corners reach the last row and column.
    assert target_sizes(sampler) == OFFICIAL_TARGETS[grid]
    assert covers_last_row_and_column(sampler)
    assert keeps_first_indices(sampler)
    layouts = [sampler.sample_layout(8, generator=seeded(seed)) for seed in range(5)]
    assert all(layout.context_size == (context, context) for layout in layouts)
    corners = torch.cat([layout.context_corners for layout in layouts])
    assert set(corners.flatten().tolist()) == {0, 1}
    # Independent scale and aspect draws (our default) reach shapes the official code never draws.
    independent = MultiBlockMaskSampler(grid, **{**EDGE_FIXED, "shared_size_draw": False})
    assert target_sizes(independent) > OFFICIAL_TARGETS[grid]


@pytest.mark.parametrize(
    "options",
    [{}, *({name: value} for name, value in OFFICIAL.items()), EDGE_FIXED, OFFICIAL],
    ids=["defaults", *OFFICIAL, "edge_fixed", "official"],
)
def test_each_option_changes_only_its_own_behaviour(options):
    sampler = MultiBlockMaskSampler(14, **options)
    official = {name: options.get(name) == value for name, value in OFFICIAL.items()}
    assert {name: getattr(sampler, name) for name in OFFICIAL} == {
        name: OFFICIAL[name] if official[name] else OURS[name] for name in OFFICIAL
    }
    assert covers_last_row_and_column(sampler) != official["corner_range"]
    assert (target_sizes(sampler) == OFFICIAL_TARGETS[14]) == official["shared_size_draw"]
    assert keeps_first_indices(sampler) == official["context_subset"]


def test_reference_means_the_three_official_options():
    sampler = MultiBlockMaskSampler(14, reference=True)
    assert {name: getattr(sampler, name) for name in OFFICIAL} == OFFICIAL
    # Restating the official values is allowed and changes nothing.
    same = MultiBlockMaskSampler(14, reference=True, **OFFICIAL)
    assert torch.equal(sampler(16, generator=seeded(0))[0], same(16, generator=seeded(0))[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reference": True, "corner_range": "full"}, r"reference=True .* corner_range='full' was given"),
        ({"reference": True, "shared_size_draw": False}, r"reference=True .* shared_size_draw=False was given"),
        ({"reference": True, "context_subset": "random"}, r"reference=True .* context_subset='random' was given"),
        ({"corner_range": "fixed"}, r"corner_range must be 'full' \(our default\), 'official'"),
        ({"shared_size_draw": "yes"}, "shared_size_draw must be False"),
        ({"shared_size_draw": 1}, "shared_size_draw must be False"),
        ({"context_subset": "all"}, "context_subset must be 'random'"),
        ({"reference": "yes"}, "reference must be True or False"),
    ],
)
def test_invalid_sampling_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiBlockMaskSampler(14, **kwargs)


@pytest.mark.parametrize("method", ["IJEPA", "FlexPredict"])
def test_methods_pass_the_sampling_options_through(method):
    model = tiny_method(method, corner_range="official", shared_size_draw=True, context_subset="first")
    assert {name: getattr(model.mask_sampler, name) for name in OFFICIAL} == OFFICIAL
    assert not model.mask_sampler.reference
    assert tiny_method(method, reference_masks=True).mask_sampler.corner_range == "official"
    assert tiny_method(method, corner_range="full").mask_sampler.context_subset == "random"
    with pytest.raises(ValueError, match="reference=True"):
        tiny_method(method, reference_masks=True, context_subset="random")


@pytest.mark.parametrize("grid", [14, 16])
def test_possible_block_sizes_match_the_official_facts(grid):
    official = ((grid, grid), (0.15, 0.2), (0.75, 1.5))
    assert possible_block_sizes(*official, shared_draw=True) == OFFICIAL_TARGETS[grid]
    assert possible_block_sizes((grid, grid), (0.85, 1.0), (1.0, 1.0), True) == {(grid - 1,) * 2}
    # Independent draws (the paper's description) reach more shapes, e.g. a wide 5×7 on 14×14.
    assert possible_block_sizes(*official, shared_draw=False) > OFFICIAL_TARGETS[grid]


@pytest.mark.parametrize("grid", [14, 16])
def test_reference_never_covers_last_row_or_column_and_targets_lie_in_context(grid):
    sampler = MultiBlockMaskSampler(grid, reference=True)
    contexts, targets = all_masks(sampler, batches=20, batch_size=32)
    covered = contexts.any(0) | targets.any((0, 1))
    last = grid - 1
    assert not covered[last].any() and not covered[:, last].any()
    assert covered[:last, :last].all()
    context_block = block_mask((0, 0), (last, last), (grid, grid))
    assert not (targets & ~context_block).any()


def test_reference_truncation_keeps_the_first_indices():
    sampler = MultiBlockMaskSampler(14, reference=True)
    generator = seeded(2)
    layout = sampler.sample_layout(32, generator=generator)
    context_idx, _ = sampler.indices(layout, generator)
    kept = layout.context_mask.flatten(1)
    for row, image_kept in zip(context_idx, kept):
        assert row.tolist() == image_kept.nonzero().flatten()[: len(row)].tolist()


def test_default_truncation_is_a_random_unbiased_subset():
    rows = torch.arange(14 * 14) // 14
    shifts = {}
    for reference in (False, True):
        sampler = MultiBlockMaskSampler(14, reference=reference)
        generator = seeded(3)
        shift = []
        for _ in range(10):
            layout = sampler.sample_layout(64, generator=generator)
            context_idx, _ = sampler.indices(layout, generator)
            kept = layout.context_mask.flatten(1)
            assert torch.gather(kept, 1, context_idx).all()
            kept_rows = (kept * rows).sum(1) / kept.sum(1)
            shift.append(rows[context_idx].float().mean(1) - kept_rows)
        shifts[reference] = torch.cat(shift).mean()
    # Keeping the first indices pulls the context up by rows (upstream issue #60); ours does not.
    assert abs(shifts[False]) < 0.2
    assert shifts[True] < -1.0


@pytest.mark.parametrize("grid", [(14, 14), (10, 20), (20, 12)])
def test_default_mode_masks(grid):
    sampler = MultiBlockMaskSampler(grid)
    contexts, targets = all_masks(sampler, batches=20, batch_size=32)
    # Every position is reachable, by the targets and by the context.
    assert targets.any((0, 1)).all()
    assert contexts.any(0).all()
    # Targets are removed from their own image's context; every context keeps > min_keep.
    assert not (contexts[:, None] & targets).any()
    assert (contexts.sum((1, 2)) > sampler.min_keep).all()


@pytest.mark.parametrize("grid", [(14, 14), (9, 17)])
@pytest.mark.parametrize("reference", [False, True])
def test_indices_are_the_layout_blocks(grid, reference):
    sampler = MultiBlockMaskSampler(grid, reference=reference)
    generator = seeded(4)
    layout = sampler.sample_layout(8, generator=generator)
    context_idx, target_idx = sampler.indices(layout, generator)
    assert len(target_idx) == sampler.num_targets
    h, w = layout.target_size
    for image in range(8):
        corners = layout.target_corners[image].tolist()
        union = torch.zeros(grid, dtype=torch.bool)
        for block, indices in zip(corners, target_idx):
            assert indices.shape == (8, h * w)
            expected = block_mask(block, (h, w), grid)
            assert indices[image].tolist() == expected.flatten().nonzero().flatten().tolist()
            union |= expected
        context = block_mask(layout.context_corners[image].tolist(), layout.context_size, grid)
        assert torch.equal(layout.context_mask[image], context & ~union)
        assert context_idx[image].unique().numel() == context_idx.shape[1]
        assert context_idx[image].tolist() == sorted(context_idx[image].tolist())


def test_allow_overlap_keeps_the_whole_context_block():
    sampler = MultiBlockMaskSampler(14, allow_overlap=True)
    generator = seeded(5)
    layout = sampler.sample_layout(16, generator=generator)
    context_idx, _ = sampler.indices(layout, generator)
    h, w = layout.context_size
    assert context_idx.shape == (16, h * w)
    for image, corner in enumerate(layout.context_corners.tolist()):
        assert torch.equal(layout.context_mask[image], block_mask(corner, (h, w), (14, 14)))


def test_resamples_images_whose_context_is_too_small():
    # With these big targets about 14% of first draws keep <= 40 context patches on 14×14.
    config = {"grid_size": 14, "target_scale": (0.25, 0.3), "min_keep": 40}
    with pytest.raises(ValueError, match="After 1 draws"):
        for seed in range(10):
            MultiBlockMaskSampler(**config, max_tries=1)(64, generator=seeded(seed))
    contexts, targets = all_masks(MultiBlockMaskSampler(**config, max_tries=50), 10, 64)
    assert (contexts.sum((1, 2)) > 40).all()
    assert not (contexts[:, None] & targets).any()


def test_seeded_generator_reproduces_the_masks():
    sampler = MultiBlockMaskSampler(14)
    first, second, other = (sampler(16, generator=seeded(s)) for s in (7, 7, 8))
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("device", DEVICES)
def test_masks_live_on_the_requested_device(device):
    sampler = MultiBlockMaskSampler(14)
    context_idx, target_idx = sampler(4, generator=seeded(0, device))
    for tensor in (context_idx, *target_idx):
        assert tensor.device.type == device and tensor.dtype == torch.long
    context_idx, _ = sampler(4, device=device)
    assert context_idx.device.type == device


def test_indices_to_mask():
    mask = indices_to_mask(torch.tensor([[0, 5], [3, 4]]), (2, 3))
    expected = torch.tensor([[[1, 0, 0], [0, 0, 1]], [[0, 0, 0], [1, 1, 0]]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_from_image_size():
    assert MultiBlockMaskSampler.from_image_size(224, 16).grid == (14, 14)
    assert MultiBlockMaskSampler.from_image_size((224, 160), 16).grid == (14, 10)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        MultiBlockMaskSampler.from_image_size(225, 16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_scale": (0.0, 0.2)}, "target_scale must be a range"),
        ({"context_scale": (0.85, 1.1)}, "context_scale must be a range"),
        ({"target_scale": (0.2, 0.15)}, "target_scale must be a range"),
        ({"target_aspect": (0.0, 1.5)}, "target_aspect must be a range"),
        ({"context_aspect": (-1.0, 1.0)}, "context_aspect must be a range"),
        ({"num_targets": 0}, "num_targets must be an integer >= 1"),
        ({"min_keep": -1}, "min_keep must be an integer >= 0"),
        ({"grid_size": (1, 14)}, "grid_size must be two integers >= 2"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiBlockMaskSampler(**{"grid_size": 14, **kwargs})


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        # 8×8, official recipe: targets of 4×2 or (reference draws) 3×3 patches never exceed
        # min_keep=10, which makes the official sampler hang (SPEC.md §8).
        ({"grid_size": 8}, "target blocks can be as small as 4×2 = 8 patches"),
        ({"grid_size": 8, "reference": True}, "target blocks can be as small as 3×3 = 9 patches"),
        ({"grid_size": 8, "shared_size_draw": True}, "target blocks can be as small as 3×3 = 9 patches"),
        # Reference corners put 13×13 targets exactly on the 13×13 context block.
        (
            {
                "grid_size": 14,
                "target_scale": (1.0, 1.0),
                "target_aspect": (1.0, 1.0),
                "reference": True,
            },
            "keeps at most 0 patches",
        ),
        # The official corners alone are what makes them coincide with the context block.
        (
            {
                "grid_size": 14,
                "target_scale": (1.0, 1.0),
                "target_aspect": (1.0, 1.0),
                "corner_range": "official",
            },
            "keeps at most 0 patches",
        ),
    ],
)
def test_impossible_configurations_raise_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiBlockMaskSampler(**kwargs)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "kwargs",
    [
        # 13×13 targets leave enough context only if all four coincide, beside the context.
        {"grid_size": 14, "target_scale": (1.0, 1.0), "target_aspect": (1.0, 1.0)},
        {"grid_size": 8, "target_scale": (0.5, 0.6)},
    ],
)
def test_almost_impossible_configurations_raise_on_first_call(kwargs):
    sampler = MultiBlockMaskSampler(**kwargs)
    with pytest.raises(ValueError, match="almost never leaves enough context"):
        sampler(64, generator=seeded(0))
