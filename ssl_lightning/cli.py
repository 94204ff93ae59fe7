"""The ``ssl-lightning`` command: a LightningCLI over every method, evaluation module and DataModule
of the package, plus ``export`` and ``prepare``.

    ssl-lightning fit --config examples/quickstart.yaml
    ssl-lightning fit --model VICReg --data FashionMNIST --trainer.max_epochs=1
    ssl-lightning fit --model.help VICReg
    ssl-lightning fit --config examples/linear_eval.yaml --model.init_args.checkpoint=PATH
    ssl-lightning validate --config examples/knn_eval.yaml --model.init_args.checkpoint=PATH
    ssl-lightning export --checkpoint PATH --output encoder.safetensors
    ssl-lightning prepare --source imagenet/ --output imagenet-shards/   # for StreamingImages
    ssl-lightning fit --config examples/quickstart.yaml --ckpt_path=last   # resume after a kill

Errors of ours (:mod:`ssl_lightning.errors`) print as one line and exit with status 1; ``--debug``
(anywhere on the line) or ``SSL_LIGHTNING_DEBUG=1`` shows their traceback.

The DataModule's ``channels`` and ``image_size`` are linked into the model's ``in_chans`` and
``image_size``, so the backbone always matches the data. The model may be any LightningModule that
accepts those two arguments: the methods and the evaluation modules (``LinearEval``, ``KNNEval``).
"""

from __future__ import annotations

import os
import sys

from jsonargparse import auto_cli
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

import ssl_lightning.callbacks  # registers the callbacks' short names
import ssl_lightning.data  # noqa: F401  (registers the DataModules' short names)
from ssl_lightning.checkpointing import (
    RecordLogVersion,
    continue_in_logged_version,
    find_last_checkpoint,
    use_atomic_checkpoints,
)
from ssl_lightning.cli_checks import (
    COMMANDS_LINE,
    SSLArgumentParser,
    check_launch,
    drop_dry_run_checkpoints,
    warn_overridden_links,
)
from ssl_lightning.data.streaming import prepare_image_folder  # (also registers StreamingImages' short name)
from ssl_lightning.errors import is_debug, our_error
from ssl_lightning.evaluation import export_encoder  # (also registers the methods' and evaluations' short names)

EXPORT = "export"
PREPARE = "prepare"
DATA_TO_MODEL_LINKS = {"channels": "in_chans", "image_size": "image_size"}


class SSLLightningCLI(LightningCLI):
    """LightningCLI in subclass mode for both the model and the DataModule, with the checks of
    :mod:`ssl_lightning.cli_checks`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in DATA_TO_MODEL_LINKS.items():
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse as LightningCLI does, and once more without defaults to know what the user gave."""
        super().parse_arguments(parser, args)
        explicit = parser.parse_args(args, defaults=False)
        subcommand = explicit.get("subcommand")
        explicit = explicit.get(subcommand) if subcommand else explicit
        self.explicit_model_args = dict(explicit.get("model.init_args") or {})

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        warn_overridden_links(self.explicit_model_args, self.datamodule, DATA_TO_MODEL_LINKS)
        drop_dry_run_checkpoints(self.trainer)
        use_atomic_checkpoints(self.trainer)
        self.trainer.callbacks.append(RecordLogVersion())

    def before_fit(self) -> None:
        check_launch(self.trainer)
        self.resolve_last_checkpoint()
        self.skip_init_from_on_resume()

    def before_validate(self) -> None:
        check_launch(self.trainer)

    before_test = before_predict = before_validate

    def skip_init_from_on_resume(self) -> None:
        """A resumed run takes its weights from the checkpoint: ``init_from`` is not read (it may be gone)."""
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt_path not in (None, "last") and getattr(self.model, "init_from", None) is not None:
            rank_zero_info(f"Resuming from {ckpt_path}: init_from={self.model.init_from} is not read.")
            self.model.init_from = None

    def resolve_last_checkpoint(self) -> None:
        """``--ckpt_path=last``: resume from the newest last or SLURM-requeue checkpoint of this
        configuration's log directory, logging into the version directory it was written in."""
        arguments = self.config_init[self.subcommand]
        if arguments.get("ckpt_path") != "last":
            return
        checkpoint = find_last_checkpoint(self.trainer)
        if checkpoint is not None:
            arguments["ckpt_path"] = str(checkpoint)
            continue_in_logged_version(self.trainer, checkpoint)


CLI_OPTIONS = {
    "model_class": LightningModule,
    "datamodule_class": LightningDataModule,
    "subclass_mode_model": True,
    "subclass_mode_data": True,
    "auto_configure_optimizers": False,
    "save_config_kwargs": {"overwrite": True},
    "parser_class": SSLArgumentParser,
    "parser_kwargs": {"epilog": COMMANDS_LINE},
}


def export_command(args: list[str]) -> None:
    """``ssl-lightning export``: :func:`~ssl_lightning.evaluation.export_encoder` from the command line."""
    weights = auto_cli(export_encoder, args=args, as_positional=False)
    written = f"{weights} and {weights.with_suffix('.json')}" if weights.suffix == ".safetensors" else f"{weights}/"
    print(f"Wrote {written} and a model card README.md")


def prepare_command(args: list[str]) -> None:
    """``ssl-lightning prepare``: :func:`~ssl_lightning.data.streaming.prepare_image_folder` from the command line."""
    output = auto_cli(prepare_image_folder, args=args, as_positional=False)
    print(f"Wrote the shards of {output} (train with --data StreamingImages --data.data_dir={output})")


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ssl-lightning`` and ``python -m ssl_lightning`` (returns nothing: a console
    script's return value becomes its exit status). An :class:`~ssl_lightning.errors.SSLLightningError`
    (raised, or the cause of what was raised) is printed as ``error: <message>`` and exits with status 1,
    unless the command asks for ``--debug``."""
    command = sys.argv[1:] if args is None else list(args)
    debug = is_debug(command, os.environ)
    command = [argument for argument in command if argument != "--debug"]
    if args is None:
        sys.argv[1:] = command
    try:
        run(None if args is None else command)
    except Exception as error:
        ours = None if debug else our_error(error)
        if ours is None:
            raise
        print(f"error: {ours}\n(--debug shows the traceback)", file=sys.stderr)
        sys.exit(1)


def run(args: list[str] | None = None) -> SSLLightningCLI | None:
    """``ssl-lightning`` from Python: the finished CLI (its ``trainer.callback_metrics`` hold the
    run's last metrics), or ``None`` for ``export`` and ``prepare``."""
    command = sys.argv[1:] if args is None else args
    if command[:1] == [EXPORT]:
        export_command(command[1:])
        return None
    if command[:1] == [PREPARE]:
        prepare_command(command[1:])
        return None
    return SSLLightningCLI(**CLI_OPTIONS, args=args)


def build(args: list[str]) -> SSLLightningCLI:
    """The model, DataModule and Trainer of a configuration, instantiated but not run
    (``cli.model``, ``cli.datamodule``, ``cli.trainer``): ``args`` as after a subcommand, e.g.
    ``["--config", "examples/quickstart.yaml", "--trainer.max_steps=10"]``."""
    return SSLLightningCLI(**CLI_OPTIONS, args=args, run=False)


if __name__ == "__main__":
    main()
