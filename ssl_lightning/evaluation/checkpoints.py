"""Reading a checkpoint file, with errors that say what the file holds when it is not what we need."""

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


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist (a ``FileNotFoundError``).
        CheckpointError: the file is not a Lightning checkpoint (an exported ``.safetensors``
            encoder, a plain state dict, a file holding pickled objects of another library, ...).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"Checkpoint not found: {path}. Pass the .ckpt file a pretraining run saved, e.g. "
            "logs/<name>/version_<n>/checkpoints/<epoch-step>.ckpt."
        )
    if path.suffix == ".safetensors":
        raise CheckpointError(
            f"{path} is a safetensors weights file (an exported encoder?), not a Lightning checkpoint. "
            "Load exported encoders with ssl_lightning.evaluation.load_encoder; pass the pretraining .ckpt here."
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle raises many types; the message is what matters
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True) ({reason}). ssl_lightning checkpoints "
            "hold only tensors and plain values: this file is not a checkpoint, or comes from another library."
        ) from error
    if not isinstance(content, dict) or not isinstance(content.get("state_dict"), dict):
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no 'state_dict' entry): it holds {describe(content)}. "
            "Pass the .ckpt file of an ssl_lightning pretraining run."
        )
    return content
