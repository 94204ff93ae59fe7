"""The short ``README.md`` an export writes next to the weights: method, encoder, data, training
length, the run's last evaluation numbers and the command that loads the weights back.

The run is known from the pretraining checkpoint (epoch, step) and read from its log folder when the
checkpoint lies in ``<version>/checkpoints/``: LightningCLI's ``config.yaml`` (the data) and the
TensorBoard events (the last ``probe/val*``, ``knn/val*`` and ``rankme*`` values at or before the
checkpoint's step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EVALUATION_TAGS = ("probe/val", "knn/val", "rankme")
CARD_MARKER = "<!-- written by ssl_lightning export -->"


@dataclass
class RunRecord:
    """What a pretraining run left about itself."""

    epoch: int | None = None
    global_step: int | None = None
    data: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def version_folder(checkpoint: Path) -> Path | None:
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def data_description(config_file: Path) -> str | None:
    """``ClassName(arg=value, ...)`` of the run's DataModule in LightningCLI's saved config."""
    if not config_file.is_file():
        return None
    data = (yaml.safe_load(config_file.read_text()) or {}).get("data") or {}
    if not isinstance(data, dict) or "class_path" not in data:
        return None
    arguments = {
        k: v for k, v in (data.get("init_args") or {}).items() if k in ("data_dir", "image_size", "batch_size")
    }
    shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    return f"{data['class_path'].rsplit('.', 1)[-1]}({shown})"


def last_metrics(folder: Path, step: int | None) -> dict[str, float]:
    """The last value of every evaluation scalar logged in ``folder``'s TensorBoard events, up to ``step``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics: dict[str, float] = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            if tag.startswith(EVALUATION_TAGS):
                values = [e for e in accumulator.Scalars(tag) if step is None or e.step <= step]
                if values:
                    metrics[tag] = values[-1].value
    return metrics


def run_record(checkpoint: Path, epoch: int | None, global_step: int | None) -> RunRecord:
    """The :class:`RunRecord` of a pretraining checkpoint whose epoch counter and step are known
    (``None`` for foreign weights): the rest from its log folder, empty where nothing is recorded."""
    record = RunRecord(epoch, global_step)
    folder = version_folder(checkpoint)
    if folder is not None:
        record.data = data_description(folder / "config.yaml")
        record.metrics = last_metrics(folder, record.global_step)
    return record


def model_card(title: str, facts: dict[str, Any], record: RunRecord, load_snippet: str) -> str:
    """The card's Markdown: ``facts`` (method, encoder, architecture...) and the run, then how to load."""
    lines = [CARD_MARKER, f"# {title}", ""]
    lines += [f"- **{key}**: {value}" for key, value in facts.items()]
    if record.global_step is not None:
        lines.append(f"- **Pretraining**: {record.global_step} optimizer steps (epoch counter {record.epoch})")
    lines.append(f"- **Data**: {record.data or 'not recorded'}")
    if record.metrics:
        lines += ["", "| evaluation (online, last logged) | value |", "|---|---:|"]
        lines += [f"| {tag} | {value:.4f} |" for tag, value in sorted(record.metrics.items())]
    lines += ["", "## Load", "", "```python", load_snippet, "```", ""]
    return "\n".join(lines)


def write_card(folder: Path, stem: str, text: str) -> Path:
    """``folder/README.md``, unless a README not written by us is there: then ``<stem>.README.md``."""
    card = folder / "README.md"
    if card.exists() and not card.read_text().startswith(CARD_MARKER):
        card = folder / f"{stem}.README.md"
    card.write_text(text)
    return card
