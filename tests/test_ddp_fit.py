"""Every method's quickstart trains for a few steps under 2-process DDP on the CPU (gloo), launched
exactly as a user would: ``python -m ssl_lightning fit --config ... --trainer.strategy=ddp
--trainer.devices=2``. Lightning's launcher starts the second rank by re-running the command. The
replicas must end with identical parameters, and the online probe must have logged under DDP.

The per-loss gradient equivalence (2 processes = 1 process on the whole batch) is tested with each
loss and method; this test covers the full path: CLI, DataModule sharding, training_step,
collectives, optimizer, EMA and callbacks together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import fake_data

ROOT = Path(__file__).parents[1]
# About 20 s each (three Python processes): the default run takes one method of each kind (joint
# embedding, blockwise, EMA teacher with masks); the three siblings of these run with `-m slow`.
QUICKSTARTS = [
    "quickstart",
    pytest.param("barlow_quickstart", marks=pytest.mark.slow),
    "blockwise_quickstart",
    "ijepa_quickstart",
    pytest.param("flexpredict_quickstart", marks=pytest.mark.slow),
    pytest.param("lejepa_quickstart", marks=pytest.mark.slow),
]


@pytest.mark.distributed
@pytest.mark.parametrize("example", QUICKSTARTS)
def test_two_process_ddp_fit(example: str, tmp_path: Path):
    fake_data.write_fake_fashion_mnist(tmp_path / "data", num_train=64, num_test=32)
    command = [
        sys.executable,
        "-m",
        "ssl_lightning",
        "fit",
        f"--config={ROOT / 'examples' / f'{example}.yaml'}",
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=tests.ddp_checks.RanksInSync",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "ddp_check.json").read_text())
    assert report["world_size"] == 2 and report["strategy"] == "DDPStrategy"
    assert report["global_step"] == 3
    assert report["max_parameter_difference"] == 0.0
    assert any(name.startswith("probe/") and name.endswith("val_acc") for name in report["logged"])
    # Each quickstart states its lr for a reference batch: 2 processes × 8 images = a global batch of 16.
    config = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    reference = config["model"]["init_args"]["lr_reference_batch_size"]
    expected = f"global batch 16 = lr_reference_batch_size {reference} × {16 / reference:.4g}"
    assert expected in result.stdout + result.stderr
