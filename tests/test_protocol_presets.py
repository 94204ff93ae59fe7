"""The linear-evaluation presets of examples/protocols/ hold the published protocols' values (from the
official code: facebookresearch/vicreg and barlowtwins evaluate.py, shoaibahmed/blockwise_ssl eval.sh,
VISSL's ImageNet linear benchmark with its ViT model config), and run on Fashion-MNIST on the CPU
through the overlay their README documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from ssl_lightning.cli import main
from tests.fake_data import write_fake_fashion_mnist
from tests.pretrained import pretrained_checkpoint

PROTOCOLS = Path(__file__).parents[1] / "examples" / "protocols"
CPU_OVERLAY = PROTOCOLS / "overlays" / "fashion_mnist_cpu.yaml"
COMMON = {"global_batch": 256, "lr_reference_batch_size": 256, "image_size": 224, "crop_scale": [0.08, 1.0]}
# Joint-embedding protocols: plain linear head, SGD momentum 0.9, wd 1e-6, cosine over 100 epochs, bilinear.
JOINT = {"head_type": "linear", "momentum": 0.9, "nesterov": False, "weight_decay": 1e-6, "epochs": 100}
PROTOCOL_VALUES = {
    "linear_vicreg_imagenet.yaml": {**JOINT, "lr": 0.02, "milestones": None, "interpolation": "bilinear"},
    "linear_barlow_imagenet.yaml": {**JOINT, "lr": 0.3, "milestones": None, "interpolation": "bilinear"},
    "linear_blockwise_imagenet.yaml": {**JOINT, "lr": 0.1, "milestones": None, "interpolation": "bilinear"},
    "linear_vissl_imagenet.yaml": {
        "head_type": ["bn_linear", "linear"],
        "pool": ["avg", "last4"],
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "epochs": 28,
        "lr": 0.01,
        "milestones": [8, 16, 24],
        "interpolation": "bicubic",
    },
}


def printed_config(capsys, *configs: Path) -> dict:
    arguments = ["fit"]
    for config in configs:
        arguments += ["--config", str(config)]
    with pytest.raises(SystemExit) as exit_info:
        main([*arguments, "--model.init_args.checkpoint=unused.ckpt", "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_every_preset_is_checked():
    assert {path.name for path in PROTOCOLS.glob("*.yaml")} == set(PROTOCOL_VALUES)


@pytest.mark.parametrize("preset", PROTOCOL_VALUES)
def test_preset_holds_the_protocol(preset, capsys):
    expected = {**COMMON, **PROTOCOL_VALUES[preset]}
    config = printed_config(capsys, PROTOCOLS / preset)
    model, data, trainer = config["model"]["init_args"], config["data"]["init_args"], config["trainer"]
    optimizer = model["optimizer"]
    assert optimizer["class_path"] == "torch.optim.SGD"
    for key in ("lr", "momentum", "nesterov", "weight_decay"):
        assert optimizer["init_args"][key] == pytest.approx(expected[key]), key
    assert model["lr_reference_batch_size"] == expected["lr_reference_batch_size"]
    assert trainer["devices"] * trainer.get("num_nodes", 1) * data["batch_size"] == expected["global_batch"]
    assert model["head_type"] == expected["head_type"]
    assert model["pool"] == expected.get("pool")
    assert model["lr_milestones"] == expected["milestones"]
    assert model["lr_gamma"] == pytest.approx(0.1)
    assert model["warmup_epochs"] == 0 and model["final_lr_factor"] == 0
    assert trainer["max_epochs"] == expected["epochs"]
    assert config["data"]["class_path"] == "ssl_lightning.data.ImageFolder" and data["image_size"] == 224
    views = data["views"]
    assert views["class_path"] == "ssl_lightning.data.LinearEvalViews"
    assert views["init_args"]["crop_scale"] == expected["crop_scale"] and views["init_args"]["hflip_prob"] == 0.5
    assert views["init_args"]["interpolation"] == expected["interpolation"]
    assert views["init_args"]["eval_interpolation"] == expected["interpolation"]


def test_cpu_overlay_keeps_the_protocol_and_swaps_data_and_hardware(capsys):
    protocol = printed_config(capsys, PROTOCOLS / "linear_vissl_imagenet.yaml")
    layered = printed_config(capsys, PROTOCOLS / "linear_vissl_imagenet.yaml", CPU_OVERLAY)
    assert layered["model"] == protocol["model"]
    assert layered["data"]["init_args"]["views"] == protocol["data"]["init_args"]["views"]
    assert layered["data"]["class_path"] == "ssl_lightning.data.FashionMNIST"
    assert layered["data"]["init_args"]["image_size"] is None and layered["data"]["init_args"]["batch_size"] == 256
    assert layered["trainer"]["accelerator"] == "cpu" and layered["trainer"]["devices"] == 1
    assert layered["trainer"]["max_epochs"] == protocol["trainer"]["max_epochs"]


def test_vissl_preset_trains_four_heads_on_fashion_mnist_on_cpu(tmp_path, tmp_path_factory):
    """The README's command line, on a tiny I-JEPA checkpoint (32 px, like the I-JEPA quickstart)."""
    write_fake_fashion_mnist(tmp_path / "data")
    checkpoint = pretrained_checkpoint("IJEPA", tmp_path_factory.getbasetemp() / "pretrained")
    main(
        [
            "fit",
            "--config",
            str(PROTOCOLS / "linear_vissl_imagenet.yaml"),
            "--config",
            str(CPU_OVERLAY),
            f"--model.init_args.checkpoint={checkpoint}",
            "--data.init_args.image_size=32",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.batch_size=16",
            "--data.init_args.num_workers=0",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    saved = torch.load(
        tmp_path / "linear_vissl_imagenet" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert saved["hyper_parameters"]["lr_milestones"] == [8, 16, 24] and saved["hyper_parameters"]["num_classes"] == 10
    weights = {key: value.shape for key, value in saved["state_dict"].items() if key.endswith("weight")}
    heads = {key: shape for key, shape in weights.items() if key.startswith("heads.")}
    assert heads == {
        f"heads.{kind}_{pool}.{0 if kind == 'linear' else 1}.weight": (10, 64 if pool == "avg" else 256)
        for kind in ("bn_linear", "linear")
        for pool in ("avg", "last4")
    }
