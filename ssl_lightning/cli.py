"""The ``ssl-lightning`` command: a LightningCLI over every method and DataModule of the package.

    ssl-lightning fit --config examples/quickstart.yaml
    ssl-lightning fit --model VICReg --data FashionMNIST --trainer.max_epochs=1
    ssl-lightning fit --model.help VICReg

The DataModule's ``channels`` and ``image_size`` are linked into the method's ``in_chans`` and
``image_size``, so the backbone always matches the data.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import ssl_lightning.callbacks  # noqa: F401  (registers the callbacks' short names)
import ssl_lightning.data  # noqa: F401  (registers the DataModules' short names)
from ssl_lightning.methods.base import SSLMethod


class SSLLightningCLI(LightningCLI):
    """LightningCLI in subclass mode for both the method and the DataModule."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.channels", "model.init_args.in_chans", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.init_args.image_size", apply_on="instantiate")


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ssl-lightning`` and ``python -m ssl_lightning``."""
    SSLLightningCLI(
        SSLMethod,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
