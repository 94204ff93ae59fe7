"""The package's error classes. Each message says what is wrong and how to fix it, so the
``ssl-lightning`` command prints it as one line and exits with status 1 (``--debug`` or
``SSL_LIGHTNING_DEBUG=1`` shows the traceback); any other exception keeps its traceback.

Each class also derives from the built-in exception its situation used to raise (``ValueError``,
``TypeError``, ``FileNotFoundError``, ``FloatingPointError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping


class SSLLightningError(Exception):
    """Base of the errors whose message is the whole story (the CLI prints no traceback)."""


class ConfigurationError(SSLLightningError, ValueError):
    """An argument or setting that cannot work: out of range, inconsistent with another, or with the data."""


class ConfigurationTypeError(SSLLightningError, TypeError):
    """An argument of the wrong kind (e.g. a backbone that is neither a timm name nor an ``nn.Module``)."""


class DataError(SSLLightningError, ValueError):
    """A data file that is not what it should be (e.g. a truncated IDX file, an undecodable image)."""


class CheckpointError(SSLLightningError, ValueError):
    """A file is not a checkpoint of the expected kind, or does not match the configured model."""


class CheckpointNotFoundError(SSLLightningError, FileNotFoundError):
    """No checkpoint or exported encoder at the given path; the message says what to pass."""


class TrainingDivergedError(SSLLightningError, FloatingPointError):
    """The loss or the weights stopped being finite; training stopped before the damage was saved."""


def is_debug(arguments: list[str], environment: Mapping[str, str]) -> bool:
    """Whether the command asks for tracebacks: ``--debug`` among ``arguments`` or
    ``SSL_LIGHTNING_DEBUG`` set to anything but ``""``/``0`` in ``environment``."""
    return "--debug" in arguments or environment.get("SSL_LIGHTNING_DEBUG", "0") not in ("", "0")


def our_error(error: BaseException) -> SSLLightningError | None:
    """``error`` itself or the first of its causes and contexts that is an :class:`SSLLightningError`
    (jsonargparse, for one, re-raises an ``__init__``'s error as its own ``ValueError``), else ``None``."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SSLLightningError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
