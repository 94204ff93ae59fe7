"""FlexPredict (StoP) method: it is I-JEPA with stochastic target positions and nothing else.

The predictor-level facts (noise statistics, tied projection, no context noise) are tested in
tests/test_jepa_nn.py; these tests cover the method built on them.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from ssl_lightning.cli import main
from ssl_lightning.nn import StochasticPositionPredictor
from tests.jepa_helpers import batch_and_masks, tiny_method
from tests.synthetic import NoisyClassDataModule


def test_parameters_are_ijepas_minus_the_mask_token():
    ijepa, flex = tiny_method("IJEPA"), tiny_method("FlexPredict")
    assert isinstance(flex.predictor, StochasticPositionPredictor) and flex.predictor.noise_std == 0.25
    ijepa_shapes = {name: p.shape for name, p in ijepa.named_parameters()}
    flex_shapes = {name: p.shape for name, p in flex.named_parameters()}
    assert ijepa_shapes.pop("predictor.mask_token") == (1, 1, 32)
    assert flex_shapes == ijepa_shapes
    assert flex.hparams.noise_std == 0.25 and flex.hparams.pred_dim == 32  # its own and I-JEPA's arguments


def test_without_noise_equals_ijepa_with_the_projection_bias_as_mask_token():
    flex = tiny_method("FlexPredict", noise_std=0.0)
    ijepa = tiny_method("IJEPA")
    state = flex.state_dict()
    state["predictor.mask_token"] = state["predictor.input_proj.bias"].view(1, 1, -1)
    ijepa.load_state_dict(state)
    images, context_idx, target_idx = batch_and_masks(flex)
    flex_loss, flex_features = flex.prediction_loss(images, context_idx, target_idx)
    ijepa_loss, ijepa_features = ijepa.prediction_loss(images, context_idx, target_idx)
    torch.testing.assert_close(flex_loss, ijepa_loss)
    torch.testing.assert_close(flex_features, ijepa_features)


def test_noise_fresh_each_training_step_and_absent_in_eval():
    flex = tiny_method("FlexPredict", noise_std=1.0)
    inputs = batch_and_masks(flex)
    assert flex.prediction_loss(*inputs)[0] != flex.prediction_loss(*inputs)[0]
    flex.eval()
    torch.testing.assert_close(flex.prediction_loss(*inputs)[0], flex.prediction_loss(*inputs)[0])


def test_gradient_reaches_the_tied_projection_and_its_norm_is_logged():
    flex = tiny_method("FlexPredict")
    flex.prediction_loss(*batch_and_masks(flex))[0].backward()
    assert flex.predictor.input_proj.weight.grad.abs().sum() > 0
    trainer = Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=0,
    )
    trainer.fit(flex, NoisyClassDataModule(num_views=1, image_size=32, batch_size=8))
    logged = trainer.callback_metrics["train/tied_projection_norm"]
    # logged in the last training step, before that step's (small) update of the weights
    torch.testing.assert_close(logged, flex.predictor.input_proj.weight.detach().norm(), rtol=1e-3, atol=0)


def test_cli_shows_ijepa_arguments_and_noise_std(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model", "FlexPredict", "--data", "FashionMNIST", "--print_config"])
    printed = capsys.readouterr().out
    assert "noise_std: 0.25" in printed and "pred_depth: 6" in printed and "ema_momentum:" in printed
