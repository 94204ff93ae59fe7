"""Reading checkpoint files, with errors that say what a file holds when it is not what we need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ssl_lightning.errors import CheckpointError, CheckpointNotFoundError


def describe(content: Any) -> str:
    """A short description of what ``torch.load`` returned, for error messages."""
    if isinstance(content, dict):
        keys = list(content)
        shown = ", ".join(map(str, keys[:5])) + (", ..." if len(keys) > 5 else "")
        if keys and all(isinstance(value, torch.Tensor) for value in content.values()):
            return f"a plain state dict of {len(keys)} tensors ({shown})"
        return f"a dict with keys {shown}"
    return f"a {type(content).__name__}"


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_tensors(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with a clear error when the file holds
    pickled objects (of another library) or is not a torch file at all."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle raises many types; the message is what matters
        raise CheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True) ({first_line(error)}). ssl_lightning reads "
            "files of tensors and plain values only: this one holds other objects, or is not a checkpoint."
        ) from error


def checkpoint_not_found(path: Path) -> CheckpointNotFoundError:
    return CheckpointNotFoundError(
        f"Checkpoint not found: {path}. Pass the .ckpt file a pretraining run saved, e.g. "
        "logs/<name>/version_<n>/checkpoints/<epoch-step>.ckpt, or weights of a layout ssl_lightning.interop reads."
    )


def is_lightning_checkpoint(content: Any) -> bool:
    """Whether ``torch.load`` returned a Lightning checkpoint (a dict with a ``state_dict`` dict)."""
    return isinstance(content, dict) and isinstance(content.get("state_dict"), dict)
