"""Checks the ``ssl-lightning`` command runs around LightningCLI, so that a mistake costs a line of
output rather than a hang, a silently changed value, a checkpoint in the current folder or a
thousand lines of help."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator

from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

COMMANDS_LINE = (
    "Commands: fit, validate, test, predict (LightningCLI; `ssl-lightning fit --help`), export "
    "(an encoder as timm or Hugging Face weights; `ssl-lightning export --help`) and prepare (an image "
    "folder as streaming shards; `ssl-lightning prepare --help`)."
)
MAX_LISTED_SUBCLASSES = 4


def short_names() -> list[str]:
    """The class names ``--model``, ``--data`` and ``--trainer.callbacks`` accept for this package."""

    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    bases = (LightningModule, LightningDataModule, Callback)
    return sorted({c.__name__ for base in bases for c in subclasses(base) if c.__module__.startswith("ssl_lightning")})


def with_suggestion(message: str) -> str:
    """``message`` with "did you mean" for a mistyped class name and, when no command was given, the
    list of commands (LightningCLI's own list does not know ``export``)."""
    if "subcommand" in message and "not provided" in message:
        return f"{message}\n{COMMANDS_LINE}"
    given = re.search(r"Given value: (\S+)\s*$", message)
    if given and "." not in given.group(1):
        close = difflib.get_close_matches(given.group(1), short_names(), n=3, cutoff=0.6)
        close = close or [n for n in short_names() if n.lower() == given.group(1).lower()]
        if close:
            return f"{message}\nUnknown name {given.group(1)!r}: did you mean {' or '.join(map(repr, close))}?"
    return message


class SSLArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with the hints of :func:`with_suggestion` in its errors and short lists
    of known subclasses in its help (``backbone: str | nn.Module`` listed every ``nn.Module`` of
    torch, timm and torchvision: 1,400 lines of ``--model.help VICReg``)."""

    def error(self, message: str, *args, **kwargs):
        return super().error(with_suggestion(message), *args, **kwargs)

    def format_help(self) -> str:
        return shorten_subclass_lists(super().format_help())


def shorten_subclass_lists(help_text: str) -> str:
    """Cut each "known subclasses: a, b, …)" list of a help text to its first entries."""

    def shorten(match: re.Match) -> str:
        names = re.sub(r"\s+", "", match.group(1)).split(",")  # the help wraps lines inside names too
        if len(names) <= MAX_LISTED_SUBCLASSES:
            return match.group(0)
        shown = ", ".join(names[:MAX_LISTED_SUBCLASSES])
        return f"known subclasses: {shown}, … {len(names) - MAX_LISTED_SUBCLASSES} more, any import path)"

    return re.sub(r"known\s+subclasses:([^)]*)\)", shorten, help_text)


def drop_dry_run_checkpoints(trainer: Trainer) -> None:
    """Remove the checkpoint callbacks of a ``fast_dev_run``.

    Lightning skips a ``ModelCheckpoint``'s saves under ``fast_dev_run`` except the ``save_last``
    one at the end of training, which lands in ``./checkpoints`` (the dry run has no logger to give
    it a folder): a full ImageNet model's checkpoint in the current folder.
    """
    checkpointing = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint | OnExceptionCheckpoint)]
    if trainer.fast_dev_run and checkpointing:
        trainer.callbacks = [c for c in trainer.callbacks if c not in checkpointing]
        rank_zero_info(f"fast_dev_run: a dry run saves no checkpoint ({len(checkpointing)} checkpoint callback(s) off)")


def check_launch(trainer: Trainer) -> None:
    """Fail at once when ``num_nodes`` > 1 but nothing launched this process as one of several nodes.

    With no cluster launcher (SLURM, torchrun) and no ``NODE_RANK``/``MASTER_ADDR``, Lightning
    starts this node's processes and waits for the other nodes' forever.
    """
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if trainer.num_nodes <= 1 or type(environment) is not LightningEnvironment:
        return
    if "NODE_RANK" in os.environ or "MASTER_ADDR" in os.environ:
        return
    devices = trainer.num_devices
    raise SystemExit(
        f"trainer.num_nodes={trainer.num_nodes} × devices={devices} asks for {trainer.num_nodes * devices} processes "
        "on several machines, but this one was not launched as one of them, so it would wait forever. Run the "
        f"command on each node with `torchrun --nnodes={trainer.num_nodes} --nproc_per_node={devices} "
        "--node_rank=<0…> --master_addr=<node 0> -m ssl_lightning fit ...` or `srun` (docs/scaling.md), or on this "
        "machine alone with --trainer.num_nodes=1 (and a strategy's data_parallel_size equal to devices)."
    )


def warn_overridden_links(explicit_model_args: dict, datamodule: LightningDataModule, links: dict[str, str]) -> None:
    """Warn for each model argument given explicitly that a DataModule link replaced with another value."""
    for source, target in links.items():
        given, linked = explicit_model_args.get(target), getattr(datamodule, source)
        if given is not None and given != linked:
            rank_zero_warn(
                f"--model.init_args.{target}={given} is replaced by the DataModule's {source}={linked}: the model's "
                f"{target} always follows the data. Drop the argument, or change the data (--data.init_args...)."
            )
