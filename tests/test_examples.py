"""Every ``examples/*.yaml`` trains (or, for kNN evaluation, validates) for one batch
(``--trainer.fast_dev_run``) on small generated data in the format its DataModule reads; nothing is
downloaded. GPU recipes run on the CPU in float32 on one device here: the test checks the
configuration, not the hardware."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import ssl_lightning.data
from ssl_lightning.cli import main
from tests import fake_data
from tests.pretrained import pretrained_checkpoint

EXAMPLES_DIR = Path(__file__).parents[1] / "examples"
# The protocol presets (examples/protocols/) too; not their overlays.
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml")) + sorted((EXAMPLES_DIR / "protocols").glob("*.yaml"))
# Too large for a CPU test run (ViT-H with its EMA teacher and AdamW state: > 10 GB, minutes per step;
# ViT-L on 8 views of each image).
SLOW_EXAMPLES = {"ijepa_vith14_imagenet.yaml", "flexpredict_vith16_imagenet.yaml", "lejepa_vitl14_imagenet.yaml"}
# Four 8192-wide projectors (600 M parameters with their LARS state) take over a minute to build and
# step on a CPU: the rest of that recipe runs with narrower ones.
NARROWED = {"blockwise_resnet50_imagenet.yaml": ["--model.init_args.projector_dims=[512, 512, 512]"]}
FAKE_WRITERS = {
    "FashionMNIST": fake_data.write_fake_fashion_mnist,
    "MNIST": fake_data.write_fake_mnist,
    "CIFAR10": fake_data.write_fake_cifar10,
    "CIFAR100": fake_data.write_fake_cifar100,
    "STL10": fake_data.write_fake_stl10,
    "ImageFolder": fake_data.write_fake_image_folder,
    "StreamingImages": fake_data.write_fake_shards,
}
# Evaluation examples load a pretraining checkpoint (here a tiny one, for the data's channels) and
# some of them run with `validate`.
EVALUATION_SUBCOMMANDS = {"LinearEval": "fit", "KNNEval": "validate", "LowShotEval": "validate"}
# 1% of the 128 fake training images is 1 image, fewer than the 10 classes: label 10% of them here.
SMALL_DATA_ARGUMENTS = {"LowShotEval": ["--model.init_args.label_fraction=0.1"]}
ON_ONE_CPU = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.num_nodes=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--trainer.sync_batchnorm=false",
    "--trainer.fast_dev_run=true",
]


def example_params():
    for path in EXAMPLES:
        marks = [pytest.mark.slow] if path.name in SLOW_EXAMPLES else []
        yield pytest.param(path, id=path.stem, marks=marks)


def test_examples_exist():
    assert {"quickstart.yaml", "vicreg_cifar10.yaml", "vicreg_imagenet.yaml"} <= {p.name for p in EXAMPLES}


def evaluation_arguments(model_class: str, data_class: str, directory: Path, model_args: dict) -> list[str]:
    """A tiny checkpoint the evaluation accepts: of the method it names, of I-JEPA when it pools ViT tokens
    (on 32 px images: a tiny ViT at 224 px is too slow here), of VICReg otherwise."""
    if model_class not in EVALUATION_SUBCOMMANDS:
        return []
    channels = getattr(ssl_lightning.data, data_class).channels
    method = model_args.get("method") or ("IJEPA" if model_args.get("pool") else "VICReg")
    checkpoint = pretrained_checkpoint(method, directory, in_chans=channels)
    vit_size = ["--data.init_args.image_size=32"] if method == "IJEPA" else []
    return [f"--model.init_args.checkpoint={checkpoint}", *vit_size, *SMALL_DATA_ARGUMENTS.get(model_class, [])]


@pytest.mark.parametrize("example", example_params())
def test_example_runs_one_batch(example: Path, tmp_path: Path, tmp_path_factory):
    config = yaml.safe_load(example.read_text())
    data_class = config["data"]["class_path"].rsplit(".", 1)[-1]
    model_class = config["model"]["class_path"].rsplit(".", 1)[-1]
    FAKE_WRITERS[data_class](tmp_path / "data")
    main(
        [
            EVALUATION_SUBCOMMANDS.get(model_class, "fit"),
            "--config",
            str(example),
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.batch_size=8",
            "--data.init_args.num_workers=0",
            f"--trainer.default_root_dir={tmp_path}",
            *ON_ONE_CPU,
            *NARROWED.get(example.name, []),
            *evaluation_arguments(
                model_class, data_class, tmp_path_factory.getbasetemp() / "pretrained", config["model"]["init_args"]
            ),
        ]
    )


def test_fsdp2_strategy_overlay_parses(capsys):
    """examples/strategies/fsdp2.yaml layers onto a ViT method's config (the run itself is tested in test_fsdp.py)."""
    examples = EXAMPLES_DIR
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(examples / "ijepa_vith14_imagenet.yaml"),
                "--config",
                str(examples / "strategies" / "fsdp2.yaml"),
                "--print_config",
            ]
        )
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    strategy = printed["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.ModelParallelStrategy"
    assert strategy["init_args"]["data_parallel_size"] == 16 and strategy["init_args"]["tensor_parallel_size"] == 1
