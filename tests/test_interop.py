"""Weights in from other code bases and out to Hugging Face (#17).

The foreign checkpoints are made here from our own modules' state dicts with the renaming written
out in this file from the official layouts (facebookresearch/ijepa and amirbar/StoP save
``encoder``/``predictor``/``target_encoder`` under DDP's ``module.`` with ``predictor_embed``,
``predictor_blocks``, ``predictor_norm``, ``predictor_proj`` and a ``(1, N, D)`` sin-cos
``pos_embed``), or by the other library itself (timm, torchvision, transformers), never by calling
our own mapping.
"""

from __future__ import annotations

import logging

import pytest
import timm
import torch
import torchvision
from lightning.pytorch import Callback, Trainer

from ssl_lightning.cli import main
from ssl_lightning.errors import CheckpointError, ConfigurationError
from ssl_lightning.evaluation import export_encoder, load_encoder, load_pretrained
from ssl_lightning.methods import VICReg
from tests.fake_data import write_fake_fashion_mnist
from tests.jepa_helpers import batch_and_masks
from tests.jepa_helpers import tiny_method as tiny_jepa
from tests.pretrained import pretrained_checkpoint
from tests.synthetic import NoisyClassDataModule
from tests.test_cli import QUICKSTART, TINY

transformers = pytest.importorskip("transformers")


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter redrawn, so that weights that were not loaded cannot pass for loaded ones."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return module


def official_encoder(encoder) -> dict[str, torch.Tensor]:
    """A MaskedViTEncoder as the official code's DDP-wrapped ViT state dict."""
    state = {f"module.{key}": value.clone() for key, value in encoder.vit.state_dict().items()}
    state["module.pos_embed"] = encoder.pos_embed[None].clone()
    return state


def official_predictor(predictor) -> dict[str, torch.Tensor]:
    renames = {"input_proj.": "predictor_embed.", "blocks.": "predictor_blocks.", "norm.": "predictor_norm."}
    renames["output_proj."] = "predictor_proj."
    state = {}
    for key, value in predictor.state_dict().items():
        new = next((new + key[len(old) :] for old, new in renames.items() if key.startswith(old)), key)
        state[f"module.{new}"] = value.clone()
    state["module.predictor_pos_embed"] = predictor.pos_embed[None].clone()
    if "module.mask_token" not in state:  # StoP's predictor always has one, unused with its noise tokens
        state["module.mask_token"] = torch.zeros(1, 1, predictor.input_proj.out_features)
    return state


def official_checkpoint(model, path):
    torch.save(
        {
            "encoder": official_encoder(model.context_encoder),
            "predictor": official_predictor(model.predictor),
            "target_encoder": official_encoder(model.target_encoder),
            "opt": {"state": {}, "param_groups": []},
            "scaler": None,
            "epoch": 300,
            "loss": 0.1,
            "batch_size": 128,
            "world_size": 16,
            "lr": 1e-3,
        },
        path,
    )
    return path


def assert_same_weights(actual: torch.nn.Module, expected: torch.nn.Module) -> None:
    expected_state = expected.state_dict()
    for key, value in actual.state_dict().items():
        assert torch.equal(value, expected_state[key]), key


@pytest.mark.parametrize("name", ["IJEPA", "FlexPredict"])
def test_official_checkpoint_gives_the_same_loss(name, tmp_path):
    source = randomize(tiny_jepa(name, seed=0), seed=1)
    source.target_encoder.load_state_dict(randomize(tiny_jepa(name, seed=0), seed=2).context_encoder.state_dict())
    path = official_checkpoint(source, tmp_path / "IN1K-vit.tiny.pth.tar")
    model = tiny_jepa(name, seed=3)
    report = model.load_weights(str(path))
    assert report.layout == "ijepa"
    vit_tensors = 2 + 12 * 2 + 2  # patch embedding, 12 per block (4 norms, qkv, proj, fc1, fc2), final norm
    predictor_tensors = 2 + 1 + 12 * 2 + 2 + 2 - (name == "FlexPredict")  # in, mask token, blocks, norm, out
    assert report.loaded == {"encoder": vit_tensors, "target_encoder": vit_tensors, "predictor": predictor_tensors}
    assert {"opt", "epoch", "lr"} <= set(report.not_mapped)
    assert ("predictor.mask_token" in report.not_mapped) == (name == "FlexPredict")
    assert_same_weights(model, source)
    images, context_idx, target_idx = batch_and_masks(model)
    source.eval(), model.eval()  # FlexPredict draws noise only in training
    with torch.no_grad():
        expected, _ = source.prediction_loss(images, context_idx, target_idx)
        got, _ = model.prediction_loss(images, context_idx, target_idx)
    assert torch.equal(got, expected)


def test_official_checkpoint_evaluates_and_round_trips_through_both_exports(tmp_path):
    # ViT-Ti's width: no shape shows the number of heads, the standard ViT of that width does (3).
    vit_tiny = {"embed_dim": 192, "num_heads": 3, "pred_dim": 48, "image_size": 64}  # a 16×16 grid: default masks
    source = randomize(tiny_jepa("IJEPA", seed=0, **vit_tiny), seed=1)
    path = official_checkpoint(source, tmp_path / "official.pth.tar")
    pretrained = load_pretrained(path)
    assert pretrained.name == "IJEPA"
    assert pretrained.hparams["embed_dim"] == 192 and pretrained.hparams["num_heads"] == 3
    assert pretrained.hparams["pred_dim"] == 48 and pretrained.hparams["image_size"] == 64
    images = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        expected = source(images)
        assert torch.equal(pretrained.features()(images), expected)

    timm_file = export_encoder(path, tmp_path / "timm" / "encoder.safetensors")
    hf_folder = export_encoder(path, tmp_path / "hf", format="hf")
    for exported in (timm_file, hf_folder):
        again = tiny_jepa("IJEPA", seed=4, **vit_tiny)
        again.load_weights(str(exported))
        assert_same_weights(again.target_encoder, source.target_encoder)
        assert_same_weights(again.context_encoder, source.target_encoder)  # encoder-only files fill both
    with torch.no_grad():
        assert torch.equal(load_encoder(timm_file)(images), expected)
        assert torch.equal(load_pretrained(hf_folder).features()(images), expected)


def test_hf_export_loads_in_transformers_with_our_features(tmp_path):
    checkpoint = pretrained_checkpoint("IJEPA", tmp_path)
    folder = tmp_path / "ijepa-hf"
    main(["export", f"--checkpoint={checkpoint}", f"--output={folder}", "--format=hf"])
    model = transformers.IJepaModel.from_pretrained(folder).eval()
    ours = load_pretrained(checkpoint).method
    images = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        got = model(pixel_values=images).last_hidden_state.mean(dim=1)
        torch.testing.assert_close(got, ours(images), atol=1e-5, rtol=0)
    config = model.config
    assert config.layer_norm_eps == 1e-6 and config.hidden_size == 64 and config.num_channels == 1
    assert config.ssl_lightning["encoder"] == "target"
    card = (folder / "README.md").read_text()
    assert "IJEPA, target encoder" in card and "IJepaModel.from_pretrained" in card


@pytest.mark.parametrize("spelling", ["save_pretrained", "module_names"])
def test_hugging_face_model_loads_as_an_encoder(spelling, tmp_path):
    config = transformers.IJepaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        image_size=32, patch_size=4, num_channels=1, layer_norm_eps=1e-6,
    )  # fmt: skip
    torch.manual_seed(0)
    hf_model = transformers.IJepaModel(config).eval()
    with torch.no_grad():  # fixed sin-cos positions, as every I-JEPA has
        hf_model.embeddings.position_embeddings.copy_(tiny_jepa("IJEPA").context_encoder.pos_embed[None])
    folder = tmp_path / "hf"
    if spelling == "save_pretrained":
        hf_model.save_pretrained(folder)
    else:
        folder.mkdir()
        config.save_pretrained(folder)
        torch.save(hf_model.state_dict(), folder / "pytorch_model.bin")
    model = tiny_jepa("IJEPA", seed=5)
    assert model.load_weights(str(folder)).layout == "hf-ijepa"
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = hf_model(pixel_values=images).last_hidden_state.mean(dim=1)
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=0)


def test_timm_vit_weights_load_as_an_encoder(tmp_path):
    vit = timm.create_model(
        "vit_base_patch16_224", pretrained=False, img_size=32, patch_size=4, in_chans=1, embed_dim=64, depth=2,
        num_heads=4, class_token=False, global_pool="avg", fc_norm=False, num_classes=0,
    )  # fmt: skip
    with torch.no_grad():
        vit.pos_embed.copy_(tiny_jepa("IJEPA").context_encoder.pos_embed[None])
    torch.save(vit.state_dict(), tmp_path / "vit_tiny_gap.pth")
    model = tiny_jepa("IJEPA", seed=6)
    assert model.load_weights(str(tmp_path / "vit_tiny_gap.pth")).layout == "timm-vit"
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(images), vit.eval()(images), atol=1e-6, rtol=0)


def test_torchvision_resnet_and_official_vicreg_checkpoint(tmp_path):
    resnet = torchvision.models.resnet18()
    resnet.fc = torch.nn.Identity()
    plain = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict() | resnet.state_dict(), plain)  # with the ImageNet fc
    model = VICReg(backbone="resnet18", projector_dims=[16, 8], small_image_stem=False)
    report = model.load_weights(str(plain))
    assert report.layout == "torchvision-resnet" and "fc.weight" in report.not_mapped
    assert "kept at its initialisation" in report.filled["projector"]
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), resnet.eval()(images), atol=1e-5, rtol=0)

    # main_vicreg.py's checkpoint: the DDP-wrapped model (backbone + projector), optimizer, epoch.
    trained = randomize(VICReg(backbone="resnet18", projector_dims=[16, 8], small_image_stem=False), seed=7)
    state = {f"module.{key}": value for key, value in trained.state_dict().items()}
    torch.save({"epoch": 100, "model": state, "optimizer": {"state": {}}}, tmp_path / "model.pth")
    pretrained = load_pretrained(tmp_path / "model.pth")
    assert pretrained.name == "VICReg" and pretrained.hparams["projector_dims"] == [16, 8]
    assert_same_weights(pretrained.method, trained)


def test_init_from_loads_when_fit_starts_and_a_resumed_checkpoint_wins(tmp_path):
    source = randomize(tiny_jepa("IJEPA", seed=0), seed=1)
    path = official_checkpoint(source, tmp_path / "official.pth.tar")

    class FirstWeights(Callback):
        def on_train_start(self, trainer, pl_module):
            self.state = {k: v.clone() for k, v in pl_module.context_encoder.state_dict().items()}

    def fit(model, ckpt_path=None, steps=1):
        recorder = FirstWeights()
        trainer = Trainer(
            max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, callbacks=[recorder], default_root_dir=tmp_path,
        )  # fmt: skip
        data = NoisyClassDataModule(num_views=1, channels=1, image_size=32, batch_size=8)
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return trainer, recorder.state

    trainer, first = fit(tiny_jepa("IJEPA", seed=2, init_from=str(path)))
    for key, value in source.context_encoder.state_dict().items():
        assert torch.equal(first[key], value), key
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    saved = torch.load(tmp_path / "run.ckpt", weights_only=True)["state_dict"]
    official_checkpoint(randomize(tiny_jepa("IJEPA", seed=0), seed=9), path)  # init_from now holds other weights
    _, resumed = fit(tiny_jepa("IJEPA", seed=2, init_from=str(path)), tmp_path / "run.ckpt", steps=2)
    for key, value in resumed.items():
        assert torch.equal(value, saved[f"context_encoder.{key}"]), key


def test_unknown_layout_lists_its_keys_and_the_known_layouts(tmp_path):
    torch.save({"teacher": {"w": torch.zeros(1)}, "student": {"w": torch.zeros(1)}, "step": 3}, tmp_path / "dino.pth")
    with pytest.raises(CheckpointError, match=r"keys teacher, student, step.*Known layouts: ssl_lightning.*ijepa"):
        tiny_jepa("IJEPA").load_weights(str(tmp_path / "dino.pth"))


def test_shape_mismatch_names_the_first_tensor_and_changes_nothing(tmp_path):
    wider = randomize(tiny_jepa("IJEPA", embed_dim=96, num_heads=4), seed=1)
    path = official_checkpoint(wider, tmp_path / "wider.pth.tar")
    model = tiny_jepa("IJEPA", seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=r"'patch_embed.proj.weight' is \(96, 1, 4, 4\) in the file and \(64, 1, 4, 4\)"
    ):
        model.load_weights(str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_hf_export_of_a_resnet_says_which_format_applies(tmp_path):
    checkpoint = pretrained_checkpoint("VICReg", tmp_path)
    with pytest.raises(ConfigurationError, match="not a ViT.*--format timm"):
        export_encoder(checkpoint, tmp_path / "hf", format="hf")
    assert not (tmp_path / "hf").exists()


def test_cli_export_writes_a_model_card_of_the_run_and_init_from_takes_our_checkpoint(tmp_path, caplog):
    write_fake_fashion_mnist(tmp_path / "data")
    fit = [
        "fit", "--config", str(QUICKSTART), f"--data.data_dir={tmp_path / 'data'}", *TINY,
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.version=run",
    ]  # fmt: skip
    main(fit)
    checkpoint = tmp_path / "quickstart" / "run" / "checkpoints" / "last.ckpt"
    output = tmp_path / "export" / "encoder.safetensors"
    main(["export", f"--checkpoint={checkpoint}", f"--output={output}"])
    card = (output.parent / "README.md").read_text()
    assert "VICReg, backbone encoder" in card and "- **Data**: FashionMNIST(" in card
    assert "| probe/val_acc |" in card and "optimizer steps" in card and "load_encoder(" in card

    with caplog.at_level(logging.INFO):
        main([*fit[:-1], "--trainer.logger.init_args.version=again", f"--model.init_args.init_from={checkpoint}"])
    assert f"Loaded {checkpoint} (layout 'ssl_lightning')" in caplog.text
