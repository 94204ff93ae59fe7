"""Tests of the JEPA building blocks: sin-cos positions, masked ViT encoder, predictors, EMA, schedules."""

from __future__ import annotations

import itertools
import math

import pytest
import timm
import torch

from ssl_lightning.nn.ema import ema_update_, frozen_copy, momentum_at
from ssl_lightning.nn.pos_embed import sincos_pos_embed_2d
from ssl_lightning.nn.predictor import JEPAPredictor, StochasticPositionPredictor
from ssl_lightning.nn.schedules import cosine_ramp, linear_ramp, warmup_cosine
from ssl_lightning.nn.vit import JEPA_VIT_ARGS, MaskedViTEncoder, gather_tokens

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}  # 4×4 grid
TINY_PREDICTOR = {"pred_dim": 32, "pred_depth": 2, "num_heads": 4}


def random_indices(batch: int, num_patches: int, keep: int) -> torch.Tensor:
    """Distinct random patch indices per sample, in random order."""
    return torch.rand(batch, num_patches).argsort(dim=1)[:, :keep]


# --- 2-D sin-cos positions ------------------------------------------------------------------


def test_sincos_matches_spec_values():
    table = sincos_pos_embed_2d(14, 384)
    assert table.shape == (196, 384)
    channels = [0, 96, 192, 288]
    # patch 1 = row 0, column 1; patch 14 = row 1, column 0 (SPEC §1)
    torch.testing.assert_close(table[1, channels], torch.tensor([0.841471, 0.540302, 0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(table[14, channels], torch.tensor([0.0, 1.0, 0.841471, 0.540302]), atol=1e-6, rtol=0)


def test_sincos_matches_formula_on_non_square_grid():
    height, width, dim = 3, 5, 8
    quarter = dim // 4
    expected = torch.empty(height * width, dim)
    for y in range(height):
        for x in range(width):
            for i in range(quarter):
                omega = 10000 ** (-i / quarter)
                expected[y * width + x, [i, quarter + i, 2 * quarter + i, 3 * quarter + i]] = torch.tensor(
                    [math.sin(x * omega), math.cos(x * omega), math.sin(y * omega), math.cos(y * omega)]
                )
    torch.testing.assert_close(sincos_pos_embed_2d((height, width), dim), expected)


def test_sincos_rejects_dim_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(4, 30)


# --- masked ViT encoder ---------------------------------------------------------------------


def test_encoder_keep_idx_gathers_tokens_with_their_positions():
    encoder = MaskedViTEncoder(**{**TINY_VIT, "depth": 0}).eval()
    images = torch.randn(3, 3, 32, 32)
    keep_idx = random_indices(3, 16, 7)
    full = encoder(images)
    expected = full[torch.arange(3)[:, None], keep_idx]
    torch.testing.assert_close(encoder(images, keep_idx), expected)


def add_sincos_hook(encoder: MaskedViTEncoder):
    """Add the sin-cos table to timm's (B, H, W, D) patch embedding, outside our wrapper."""
    table = sincos_pos_embed_2d(encoder.grid_size, encoder.embed_dim).reshape(*encoder.grid_size, -1)
    return encoder.vit.patch_embed.register_forward_hook(lambda module, args, out: out + table)


def test_encoder_matches_timm_forward_features():
    torch.manual_seed(0)
    encoder = MaskedViTEncoder(**TINY_VIT).eval()
    images = torch.randn(2, 3, 32, 32)
    ours = encoder(images)
    add_sincos_hook(encoder)
    assert ours.shape == (2, 16, 64)
    torch.testing.assert_close(ours, encoder.vit.forward_features(images))


def test_encoder_on_kept_tokens_equals_attention_restricted_to_them():
    # Encoding only the kept tokens = timm's full forward where every token may attend to the
    # kept tokens only, read at the kept positions.
    torch.manual_seed(0)
    encoder = MaskedViTEncoder(**TINY_VIT).eval()
    images = torch.randn(3, 3, 32, 32)
    keep_idx = random_indices(3, 16, 9)
    ours = encoder(images, keep_idx)
    add_sincos_hook(encoder)
    kept = torch.zeros(3, 16, dtype=torch.bool).scatter_(1, keep_idx, True)
    full = encoder.vit.forward_features(images, attn_mask=kept[:, None, None, :])
    torch.testing.assert_close(ours, full[torch.arange(3)[:, None], keep_idx], atol=1e-5, rtol=1e-5)


def test_encoder_non_square_images():
    encoder = MaskedViTEncoder(**{**TINY_VIT, "img_size": (32, 48)})
    assert encoder.grid_size == (4, 6) and encoder.num_patches == 24
    torch.testing.assert_close(encoder.pos_embed, sincos_pos_embed_2d((4, 6), 64))
    assert encoder(torch.randn(2, 3, 32, 48)).shape == (2, 24, 64)


def test_encoder_other_input_size_uses_that_grid_positions():
    torch.manual_seed(0)
    encoder = MaskedViTEncoder(**TINY_VIT).eval()
    encoder_48 = MaskedViTEncoder(**{**TINY_VIT, "img_size": 48}).eval()
    encoder_48.load_state_dict(encoder.state_dict())
    images = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(encoder(images), encoder_48(images))


def test_encoder_from_timm_name_exports_to_timm_and_round_trips():
    torch.manual_seed(0)
    encoder = MaskedViTEncoder("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2).eval()
    assert (encoder.embed_dim, encoder.num_heads, encoder.grid_size, encoder.num_patches) == (192, 3, (4, 4), 16)
    assert all(key.startswith("vit.") for key in encoder.state_dict())
    timm_vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, **JEPA_VIT_ARGS)
    timm_vit.load_state_dict(encoder.vit.state_dict())  # strict: same keys, no surgery

    images = torch.randn(2, 3, 32, 32)
    reloaded = MaskedViTEncoder("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2).eval()
    reloaded.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(reloaded(images), encoder(images))
    encoder.double()
    assert encoder.pos_embed.dtype == torch.float64
    torch.testing.assert_close(encoder(images.double()).float(), reloaded(images), atol=1e-5, rtol=1e-5)


def test_encoder_errors():
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        MaskedViTEncoder(**{**TINY_VIT, "img_size": 30})
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        MaskedViTEncoder("vit_tiny_patch16_224", img_size=(32, 36), depth=1)
    for name in ("resnet18", "no_such_model"):
        with pytest.raises(ValueError, match="not a ViT"):
            MaskedViTEncoder(name)


# --- predictors ---------------------------------------------------------------------------


def predictor_inputs(batch=3, num_context=6, num_targets=4, target_len=3):
    torch.manual_seed(1)
    context = torch.randn(batch, num_context, 64)
    context_idx = random_indices(batch, 16, num_context)
    target_idx = [random_indices(batch, 16, target_len) for _ in range(num_targets)]
    return context, context_idx, target_idx


def test_predictor_shape_and_block_major_order():
    torch.manual_seed(0)
    predictor = JEPAPredictor(64, 4, **TINY_PREDICTOR).eval()
    context, context_idx, target_idx = predictor_inputs()
    out = predictor(context, context_idx, target_idx)
    assert out.shape == (4 * 3, 3, 64)
    for t, block_idx in enumerate(target_idx):
        torch.testing.assert_close(out[t * 3 : (t + 1) * 3], predictor(context, context_idx, [block_idx]))


def test_predictor_target_blocks_do_not_interact():
    torch.manual_seed(0)
    predictor = JEPAPredictor(64, 4, **TINY_PREDICTOR).eval()
    context, context_idx, target_idx = predictor_inputs(num_targets=2)
    out = predictor(context, context_idx, target_idx)
    moved = predictor(context, context_idx, [target_idx[0], (target_idx[1] + 5) % 16])
    torch.testing.assert_close(moved[:3], out[:3])
    assert not torch.allclose(moved[3:], out[3:])


def test_predictor_images_do_not_interact():
    # Row t·B + b may depend on image b's context only.
    torch.manual_seed(0)
    predictor = JEPAPredictor(64, 4, **TINY_PREDICTOR).eval()
    context, context_idx, target_idx = predictor_inputs()
    out = predictor(context, context_idx, target_idx).unflatten(0, (4, 3))
    changed_context = context.clone()
    changed_context[1] += 1.0
    changed = predictor(changed_context, context_idx, target_idx).unflatten(0, (4, 3))
    torch.testing.assert_close(changed[:, [0, 2]], out[:, [0, 2]])
    assert not torch.allclose(changed[:, 1], out[:, 1])


def test_predictor_follows_positions_not_token_order():
    # Transformers are permutation-equivariant, so shuffling tokens together with their indices
    # must shuffle the predictions the same way: tokens and positions stay paired.
    torch.manual_seed(0)
    predictor = JEPAPredictor(64, 4, **TINY_PREDICTOR).eval()
    context, context_idx, target_idx = predictor_inputs(num_targets=1)
    out = predictor(context, context_idx, target_idx)
    context_perm, target_perm = torch.randperm(6), torch.randperm(3)
    shuffled = predictor(context[:, context_perm], context_idx[:, context_perm], [target_idx[0][:, target_perm]])
    torch.testing.assert_close(shuffled, out[:, target_perm], atol=1e-5, rtol=1e-5)
    other_positions = predictor(context, context_idx, [(target_idx[0] + 1) % 16])
    assert not torch.allclose(other_positions, out)


def stop_with_ijepa_weights(noise_std: float):
    """A StoP predictor and an I-JEPA predictor with equal weights, the mask token = the input bias."""
    torch.manual_seed(0)
    ijepa = JEPAPredictor(64, 4, **TINY_PREDICTOR)
    stop = StochasticPositionPredictor(64, 4, noise_std=noise_std, **TINY_PREDICTOR)
    stop.load_state_dict({k: v for k, v in ijepa.state_dict().items() if k != "mask_token"})
    with torch.no_grad():
        ijepa.mask_token.copy_(ijepa.input_proj.bias)
    return stop, ijepa


def test_stop_without_noise_equals_ijepa_with_bias_as_mask_token():
    stop, ijepa = stop_with_ijepa_weights(noise_std=0.0)
    inputs = predictor_inputs()
    torch.testing.assert_close(stop.train()(*inputs), ijepa.train()(*inputs))


def test_stop_noise_fresh_in_training_absent_in_eval():
    stop, ijepa = stop_with_ijepa_weights(noise_std=0.25)
    inputs = predictor_inputs()
    stop.train()
    assert not torch.allclose(stop(*inputs), stop(*inputs))
    stop.eval()
    torch.testing.assert_close(stop(*inputs), ijepa.eval()(*inputs))


def test_stop_noise_has_std_noise_std_in_encoder_space():
    stop = StochasticPositionPredictor(64, 4, noise_std=0.25, **TINY_PREDICTOR).train()
    with torch.no_grad():  # A = [I | 0], no bias: the token minus ψ is the first 32 noise channels
        stop.input_proj.weight.copy_(torch.eye(32, 64))
        stop.input_proj.bias.zero_()
    positions = torch.randn(500, 16, 32)
    noise = stop.target_tokens(positions) - positions
    assert abs(noise.std().item() - 0.25) < 0.01
    assert abs(noise.mean().item()) < 0.01


def test_stop_context_tokens_get_no_noise():
    stop = StochasticPositionPredictor(64, 4, noise_std=1.0, **TINY_PREDICTOR).train()
    context, context_idx, target_idx = predictor_inputs()
    seen = []
    stop.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    stop(context, context_idx, target_idx)
    clean = stop.input_proj(context) + sincos_pos_embed_2d(4, 32)[context_idx]
    torch.testing.assert_close(seen[0][:, :6], clean.repeat(4, 1, 1))


def test_stop_gradient_reaches_tied_projection_through_both_paths():
    stop = StochasticPositionPredictor(64, 4, **TINY_PREDICTOR)
    context, context_idx, target_idx = predictor_inputs()
    # Noise path only: zero context features give the context path no weight gradient.
    stop.train()(torch.zeros_like(context), context_idx, target_idx).square().sum().backward()
    assert stop.input_proj.weight.grad.abs().sum() > 0
    stop.zero_grad()
    # Context path only: in eval the noise is zero, so the target path gives no weight gradient.
    stop.eval()(context, context_idx, target_idx).square().sum().backward()
    assert stop.input_proj.weight.grad.abs().sum() > 0


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_stop_has_no_mask_token():
    ijepa = JEPAPredictor(64, 4, **TINY_PREDICTOR)
    stop = StochasticPositionPredictor(64, 4, **TINY_PREDICTOR)
    assert stop.mask_token is None
    assert num_params(stop) == num_params(ijepa) - 32  # pred_dim
    with pytest.raises(ValueError, match="non-negative"):
        StochasticPositionPredictor(64, 4, noise_std=-0.1)


# --- EMA and schedules -------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.9, torch.tensor(0.9)])
def test_ema_update_is_the_lerp_formula(momentum):
    student = torch.nn.Linear(4, 3)
    teacher = frozen_copy(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in teacher.parameters()]
    ema_update_(teacher.parameters(), student.parameters(), momentum)
    for old, new, s in zip(before, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * s.detach())
        assert new.grad is None and new.grad_fn is None and not new.requires_grad
    assert all(p.grad is None for p in student.parameters())


def test_ema_update_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="matching"):
        ema_update_([torch.zeros(2)], [torch.zeros(2), torch.zeros(2)], 0.9)


def assert_monotone(values, increasing):
    pairs = list(itertools.pairwise(values))
    assert all((b >= a) if increasing else (b <= a) for a, b in pairs)


def test_momentum_schedule():
    assert momentum_at(0, 100) == pytest.approx(0.996)
    assert momentum_at(50, 100) == pytest.approx(0.998)
    assert momentum_at(100, 100) == 1.0 and momentum_at(150, 100) == 1.0
    assert_monotone([momentum_at(s, 100) for s in range(101)], increasing=True)


def test_warmup_cosine_schedule():
    args = {"total_steps": 100, "warmup_steps": 20, "start": 2e-4, "peak": 1e-3, "end": 1e-6}
    assert warmup_cosine(0, **args) == pytest.approx(2e-4)
    assert warmup_cosine(10, **args) == pytest.approx(6e-4)
    assert warmup_cosine(20, **args) == pytest.approx(1e-3)
    assert warmup_cosine(60, **args) == pytest.approx((1e-3 + 1e-6) / 2)
    assert warmup_cosine(100, **args) == pytest.approx(1e-6)
    assert warmup_cosine(200, **args) == pytest.approx(1e-6)
    assert_monotone([warmup_cosine(s, **args) for s in range(21)], increasing=True)
    assert_monotone([warmup_cosine(s, **args) for s in range(20, 101)], increasing=False)
    assert warmup_cosine(0, 100, 0, 2e-4, 1e-3, 1e-6) == pytest.approx(1e-3)  # no warmup


def test_cosine_ramp_and_linear_ramp():
    assert cosine_ramp(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_ramp(25, 100, 0.04, 0.4) == pytest.approx(0.4 - 0.36 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_ramp(100, 100, 0.04, 0.4) == pytest.approx(0.4)
    assert_monotone([cosine_ramp(s, 100, 0.04, 0.4) for s in range(101)], increasing=True)
    assert linear_ramp(-5, 10, 1.0, 2.0) == 1.0 and linear_ramp(5, 10, 1.0, 2.0) == 1.5
    assert linear_ramp(0, 0, 1.0, 2.0) == 2.0  # an empty phase is already over


def test_gather_tokens():
    tokens = torch.arange(2 * 4 * 3.0).reshape(2, 4, 3)
    idx = torch.tensor([[3, 0], [1, 1]])
    expected = torch.stack([tokens[0, [3, 0]], tokens[1, [1, 1]]])
    torch.testing.assert_close(gather_tokens(tokens, idx), expected)
