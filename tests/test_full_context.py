"""Full-context masks (``full_context=True``): every context patch is kept, shorter contexts are
padded with PAD_INDEX, and the padding is never attended to. References come from the layout's
boolean masks and from running each image alone, unpadded."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback
from timm.layers import Attention
from torch._dynamo.backends.registry import lookup_backend

from ssl_lightning.callbacks import MaskVisualization, mask_overlay
from ssl_lightning.callbacks.mask_images import OUTSIDE_BRIGHTNESS
from ssl_lightning.masks import PAD_INDEX, MultiBlockMaskSampler
from ssl_lightning.nn.predictor import JEPAPredictor, StochasticPositionPredictor
from ssl_lightning.nn.vit import MaskedViTEncoder
from tests.jepa_helpers import tiny_method
from tests.tiny_methods import fit

# 8×8 grid, 4 small targets: contexts of one batch differ in length (as in tests/jepa_helpers.py).
SMALL_GRID = {"grid_size": 8, "target_scale": (0.1, 0.15), "min_keep": 3}
# 16 px / patch 4 = a 4×4 grid of 16 patches.
TINY_ENCODER = {"img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 4}
TINY_PREDICTOR = {"pred_dim": 16, "pred_depth": 2, "num_heads": 4}
# Real context indices per image, of different lengths, none of them patch 0 (where padding is
# gathered from): (B=3, Kc=7) once padded.
CONTEXTS = [[1, 2, 5, 6, 9, 10, 13], [3, 4, 8, 15], [2, 7, 11, 12, 14]]


def padded(rows: list[list[int]]) -> torch.Tensor:
    """Index rows padded at the end with PAD_INDEX to the longest."""
    length = max(map(len, rows))
    return torch.tensor([row + [PAD_INDEX] * (length - len(row)) for row in rows])


def set_fused_attn(module: torch.nn.Module, fused: bool) -> None:
    """Switch every timm ``Attention`` of ``module`` between SDPA and its explicit softmax path."""
    attentions = [m for m in module.modules() if isinstance(m, Attention)]
    assert attentions
    for attention in attentions:
        attention.fused_attn = fused


def tiny_encoder(fused: bool) -> MaskedViTEncoder:
    torch.manual_seed(0)
    encoder = MaskedViTEncoder(**TINY_ENCODER).eval()
    set_fused_attn(encoder, fused)
    return encoder


def tiny_predictor(fused: bool, predictor_class: type[JEPAPredictor] = JEPAPredictor) -> JEPAPredictor:
    torch.manual_seed(0)
    predictor = predictor_class(32, 4, **TINY_PREDICTOR).eval()  # eval: StoP draws no noise
    set_fused_attn(predictor, fused)
    return predictor


def predictor_inputs(context_idx: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    context = torch.randn(*context_idx.shape, 32, generator=generator)
    targets = [torch.tensor([[0, 4], [0, 1], [5, 9]]), torch.tensor([[3, 14], [10, 11], [0, 15]])]
    return context, targets


# --- sampler -----------------------------------------------------------------------------------


def test_full_context_rows_are_each_images_whole_context_padded_at_the_end():
    sampler = MultiBlockMaskSampler(**SMALL_GRID, full_context=True)
    generator = torch.Generator().manual_seed(0)
    layout = sampler.sample_layout(16, generator=generator)
    state = generator.get_state()
    context_idx, targets = sampler.indices(layout, generator)
    assert torch.equal(generator.get_state(), state)  # no random subset, no draw
    assert PAD_INDEX == -1 and len(targets) == 4
    expected = [row.flatten().nonzero().squeeze(1).tolist() for row in layout.context_mask]
    lengths = [len(row) for row in expected]
    assert min(lengths) < max(lengths)  # the batch needs padding
    assert context_idx.shape == (16, max(lengths)) and context_idx.dtype == torch.long
    for row, real in zip(context_idx.tolist(), expected):
        assert row == real + [PAD_INDEX] * (max(lengths) - len(real))


def test_without_full_context_contexts_are_cut_to_the_shortest():
    layouts, contexts = [], []
    for full_context in (False, True):
        sampler = MultiBlockMaskSampler(**SMALL_GRID, full_context=full_context)
        generator = torch.Generator().manual_seed(0)
        layouts.append(sampler.sample_layout(16, generator=generator))
        contexts.append(sampler.indices(layouts[-1], generator)[0])
    torch.testing.assert_close(layouts[0].context_mask, layouts[1].context_mask)  # the same blocks
    lengths = layouts[0].context_mask.flatten(1).sum(1)
    cut, full = contexts
    assert cut.shape == (16, int(lengths.min())) and full.shape == (16, int(lengths.max()))
    assert (cut >= 0).all() and (cut.diff(dim=1) > 0).all()
    for row, mask in zip(cut, layouts[0].context_mask.flatten(1)):
        assert mask[row].all()  # a subset of the image's own context


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reference": True}, "reference=True"),
        ({"context_subset": "first"}, "cuts nothing"),
        ({"context_subset": "random"}, "cuts nothing"),
    ],
)
def test_full_context_rejects_the_options_it_contradicts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiBlockMaskSampler(**SMALL_GRID, full_context=True, **kwargs)


def test_full_context_must_be_a_bool_and_ijepa_rejects_it_with_reference_masks():
    with pytest.raises(ValueError, match="full_context must be True or False"):
        MultiBlockMaskSampler(**SMALL_GRID, full_context="yes")
    with pytest.raises(ValueError, match="reference_masks=True"):
        tiny_method(full_context=True, reference_masks=True)


# --- encoder and predictor -----------------------------------------------------------------------


@pytest.mark.parametrize("fused", [True, False])
def test_encoder_padding_mask_without_padding_changes_nothing(fused):
    encoder = tiny_encoder(fused)
    images = torch.randn(3, 1, 16, 16)
    keep_idx = torch.tensor([[1, 2, 3, 9], [0, 5, 6, 7], [4, 8, 12, 15]])
    no_padding = torch.zeros(3, 4, dtype=torch.bool)
    expected = encoder(images, keep_idx)
    torch.testing.assert_close(encoder(images, keep_idx, no_padding), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_padded_encoder_rows_equal_each_image_encoded_alone(fused):
    encoder = tiny_encoder(fused)
    images = torch.randn(3, 1, 16, 16)
    keep_idx = padded(CONTEXTS)
    padding = keep_idx == PAD_INDEX
    out = encoder(images, keep_idx, padding)
    assert out.shape == (3, 7, 32) and out.isfinite().all()
    for b, real in enumerate(CONTEXTS):
        alone = encoder(images[b : b + 1], torch.tensor([real]))[0]
        torch.testing.assert_close(out[b, : len(real)], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_encoder_never_attends_to_padded_slots(fused):
    encoder = tiny_encoder(fused)
    images = torch.randn(3, 1, 16, 16)
    keep_idx = padded(CONTEXTS)
    padding = keep_idx == PAD_INDEX
    out = encoder(images, keep_idx, padding)
    # Padding gathers patch 0, which no context holds: a new patch 0 changes only padded rows...
    changed_images = images.clone()
    changed_images[..., :4, :4] = torch.randn(3, 1, 4, 4)
    changed = encoder(changed_images, keep_idx, padding)
    torch.testing.assert_close(changed[~padding], out[~padding])
    assert not torch.allclose(changed[padding], out[padding])
    # ...and so does gathering the padding from another patch.
    elsewhere = encoder(images, keep_idx.masked_fill(padding, 13), padding)
    torch.testing.assert_close(elsewhere[~padding], out[~padding])


@pytest.mark.parametrize("fused", [True, False])
def test_predictor_padding_mask_without_padding_changes_nothing(fused):
    predictor = tiny_predictor(fused)
    context_idx = torch.tensor([[1, 2, 3, 9], [0, 5, 6, 7], [4, 8, 12, 15]])
    context, targets = predictor_inputs(context_idx)
    expected = predictor(context, context_idx, targets)
    no_padding = torch.zeros(3, 4, dtype=torch.bool)
    torch.testing.assert_close(predictor(context, context_idx, targets, no_padding), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("predictor_class", [JEPAPredictor, StochasticPositionPredictor])
@pytest.mark.parametrize("fused", [True, False])
def test_padded_predictions_equal_each_image_predicted_alone(fused, predictor_class):
    predictor = tiny_predictor(fused, predictor_class)
    context_idx = padded(CONTEXTS)
    context, targets = predictor_inputs(context_idx)
    out = predictor(context, context_idx, targets, context_idx == PAD_INDEX)
    assert out.shape == (2 * 3, 2, 32) and out.isfinite().all()
    blocks = out.unflatten(0, (2, 3))  # block-major rows
    for b, real in enumerate(CONTEXTS):
        n = len(real)
        alone = predictor(context[b : b + 1, :n], torch.tensor([real]), [t[b : b + 1] for t in targets])
        torch.testing.assert_close(blocks[:, b], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_predictor_never_attends_to_padded_context(fused):
    predictor = tiny_predictor(fused)
    context_idx = padded(CONTEXTS)
    padding = context_idx == PAD_INDEX
    context, targets = predictor_inputs(context_idx)
    out = predictor(context, context_idx, targets, padding)
    garbage = context.masked_fill(padding[..., None], 1e3)
    torch.testing.assert_close(predictor(garbage, context_idx.masked_fill(padding, 7), targets, padding), out)
    # Without the mask the same garbage would change the predictions: the test can fail.
    unmasked = predictor(garbage, context_idx.masked_fill(padding, 7), targets)
    assert not torch.allclose(unmasked, out, atol=1e-3)


# --- methods -------------------------------------------------------------------------------------


def test_ijepa_full_context_loss_equals_per_image_computation():
    model = tiny_method(loss="mse", full_context=True)
    with torch.no_grad():  # weights far larger than at init: attention to a padded token would show in the loss
        for weight in [*model.context_encoder.parameters(), *model.predictor.parameters()]:
            if weight.ndim == 2:
                weight.normal_(std=0.2)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(8, 1, 32, 32, generator=generator)
    context_idx, target_idx = model.mask_sampler(8, generator=generator)
    padding = context_idx == PAD_INDEX
    assert padding.any() and not padding[:, 0].any()
    loss, _ = model.prediction_loss(images, context_idx, target_idx)
    squared_errors = []
    for b in range(8):
        real = context_idx[b : b + 1, ~padding[b]]
        tokens = model.target_encoder(images[b : b + 1])[0]
        normalized = torch.nn.functional.layer_norm(tokens, tokens.shape[-1:])
        context = model.context_encoder(images[b : b + 1], real)
        for block in target_idx:
            prediction = model.predictor(context, real, [block[b : b + 1]])[0]
            squared_errors.append((prediction - normalized[block[b]]).square())
    torch.testing.assert_close(loss, torch.cat(squared_errors).mean(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["IJEPA", "FlexPredict"])
def test_full_context_training_step_is_finite_and_trains_every_network(name):
    model = tiny_method(name, full_context=True)
    assert model.mask_sampler.full_context and model.hparams["full_context"] is True
    images = torch.randn(8, 1, 32, 32)
    loss = model.training_step(([images], torch.zeros(8)), 0)["loss"]
    assert (model.last_masks[0] == PAD_INDEX).any()
    assert loss.isfinite()
    loss.backward()
    for network in (model.context_encoder, model.predictor):
        grads = [p.grad for p in network.parameters() if p.requires_grad]
        assert all(g is not None and g.isfinite().all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in model.target_encoder.parameters())


@pytest.mark.parametrize("name", ["IJEPA", "FlexPredict"])
def test_full_context_fits_under_the_trainer(name):
    model = tiny_method(name, full_context=True)
    before = [p.detach().clone() for p in model.context_encoder.parameters()]
    trainer = fit(model, name, steps=2)
    assert trainer.global_step == 2 and trainer.callback_metrics["train/loss"].isfinite()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.context_encoder.parameters()))


class ContextLengths(Callback):
    def __init__(self) -> None:
        self.lengths = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lengths.add(pl_module.last_masks[0].shape[1])


def test_full_context_compiles_each_module_once_although_the_padded_length_changes():
    """As without padding (tests/test_compile.py): one graph per compiled module. Without the
    padding mask's token dimension marked dynamic it took 6 (measured)."""
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return lookup_backend("aot_eager")(graph_module, example_inputs)

    torch.compiler.reset()
    lengths = ContextLengths()
    model = tiny_method(full_context=True, compile=True, compile_options={"backend": counting_backend})
    try:
        trainer = fit(model, "IJEPA", steps=10, callbacks=[lengths])
    finally:
        torch.compiler.reset()
    assert trainer.callback_metrics["train/loss"].isfinite() and len(lengths.lengths) >= 3
    assert len(graphs) == len(model.compiled_modules()) == 4


# --- mask pictures --------------------------------------------------------------------------------


def test_mask_overlay_of_a_padded_context_equals_the_unpadded_drawing():
    images = torch.randn(3, 1, 16, 16)
    targets = [torch.tensor([[0], [0], [0]])]
    picture = mask_overlay(images, padded(CONTEXTS), targets, (4, 4))
    for b, real in enumerate(CONTEXTS):
        alone = mask_overlay(images[b : b + 1], torch.tensor([real]), [t[b : b + 1] for t in targets], (4, 4))
        torch.testing.assert_close(picture[b : b + 1], alone)
    no_target = mask_overlay(images, padded(CONTEXTS), [], (4, 4))
    assert no_target[:, :, :4, :4].max() <= OUTSIDE_BRIGHTNESS  # patch 0 is in no context: dimmed, not drawn as context


def test_mask_grid_of_a_full_context_model():
    model = tiny_method(full_context=True)
    batch = ([torch.randn(8, 1, 32, 32)], torch.zeros(8))
    model.training_step(batch, 0)
    assert (model.last_masks[0] == PAD_INDEX).any()
    grid = MaskVisualization(max_images=4).mask_grid(model, batch)
    assert grid.shape == (3, 2 * 96 + 3 * 2, 2 * 96 + 3 * 2) and grid.isfinite().all()
