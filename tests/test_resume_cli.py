"""Preemption through the command line: a run killed with SIGKILL mid-epoch and started again with
the same command plus ``--ckpt_path=last`` ends bit for bit where the uninterrupted run ends, in the
same TensorBoard version directory; alone and as a 2-process DDP run (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fake_data import write_fake_fashion_mnist
from tests.test_resume import assert_same_tree

ROOT = Path(__file__).parents[1]
STEPS, EVERY, KILLED_AT = 12, 3, 10  # 8 batches an epoch: last.ckpt of step 9 is mid-epoch
# The quickstart's callbacks, with checkpoints every 3 steps instead of 50, and the kill switch.
CALLBACKS = (
    "[{class_path: lightning.pytorch.callbacks.ModelCheckpoint,"
    f" init_args: {{every_n_train_steps: {EVERY}, save_top_k: 0, save_last: true}}}},"
    " {class_path: ssl_lightning.callbacks.OnlineLinearProbe},"
    " {class_path: ssl_lightning.callbacks.OnlineKNN, init_args: {k: 3, bank_size: 64}},"
    " {class_path: ssl_lightning.callbacks.RankMe},"
    " {class_path: tests.ddp_checks.SignalAtStep}]"
)


def quickstart(directory: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "ssl_lightning",
        "fit",
        f"--config={ROOT / 'examples' / 'quickstart.yaml'}",
        f"--data.init_args.data_dir={directory.parent / 'data'}",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=-1",
        f"--trainer.max_steps={STEPS}",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.callbacks={CALLBACKS}",
        "--model.init_args.backbone_kwargs={channels: [8, 8, 8, 8]}",  # a smaller network: faster steps
        "--model.init_args.projector_dims=[64, 64]",
        "--data.init_args.image_size=16",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        command,
        check=False,
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )


def last_checkpoint(directory: Path) -> dict:
    return torch.load(directory / "logs/quickstart/version_0/checkpoints/last.ckpt", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The single-process run that the killed runs must end equal to (its run directory)."""
    root = tmp_path_factory.mktemp("reference")
    write_fake_fashion_mnist(root / "data", num_train=64, num_test=16)
    reference = quickstart(root / "uninterrupted")
    assert reference.returncode == 0, reference.stderr[-3000:]
    return root / "uninterrupted"


def assert_kill_and_resume_is_exact(tmp_path: Path, reference: Path, *extra: str, env=None) -> None:
    """SIGKILL at step 10 (after the signals in ``env``, if any) + the same command with
    ``--ckpt_path=last`` ends where the ``reference`` run ended, in the killed run's version directory."""
    write_fake_fashion_mnist(tmp_path / "data", num_train=64, num_test=16)
    killed = quickstart(tmp_path / "killed", *extra, env={**(env or {}), "SIGNAL_AT_STEP": str(KILLED_AT)})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert last_checkpoint(tmp_path / "killed")["global_step"] == KILLED_AT // EVERY * EVERY
    resumed = quickstart(tmp_path / "killed", *extra, "--ckpt_path=last", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    versions = sorted(p.name for p in (tmp_path / "killed/logs/quickstart").iterdir())
    assert versions == ["version_0"]
    assert len(list((tmp_path / "killed/logs/quickstart/version_0").glob("events.out.tfevents.*"))) == 2
    expected, actual = last_checkpoint(reference), last_checkpoint(tmp_path / "killed")
    assert actual["global_step"] == expected["global_step"] == STEPS
    for part in ("state_dict", "optimizer_states", "lr_schedulers", "callbacks"):
        assert_same_tree(actual[part], expected[part], part)


def test_sigkill_then_same_command_with_ckpt_path_last_is_exact(tmp_path, uninterrupted):
    assert_kill_and_resume_is_exact(tmp_path, uninterrupted)


@pytest.mark.slow  # 80 s on 2 cores
@pytest.mark.distributed
def test_two_process_run_resumes_exactly(tmp_path):
    ddp = ("--trainer.devices=2", "--trainer.strategy=ddp")
    write_fake_fashion_mnist(tmp_path / "reference" / "data", num_train=64, num_test=16)
    reference = quickstart(tmp_path / "reference" / "uninterrupted", *ddp)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert_kill_and_resume_is_exact(tmp_path, tmp_path / "reference" / "uninterrupted", *ddp)


def test_slurm_requeue_signal_saves_requeues_and_resumes_exactly(tmp_path, uninterrupted):
    """Under SLURM (its variables set, a stand-in ``scontrol`` on the PATH), SIGUSR1 makes Lightning's
    SLURMEnvironment(auto_requeue=True) write ``hpc_ckpt_1.ckpt`` and call ``scontrol requeue``; the
    requeued job's same command resumes from it (newer than last.ckpt) and ends exactly."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "pretrain", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1"}
    slurm |= {"SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NNODES": "1"}
    slurm |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SIGNALS": "SIGUSR1,SIGKILL"}
    assert_kill_and_resume_is_exact(tmp_path, uninterrupted, env=slurm)
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert torch.load(tmp_path / "killed/hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == KILLED_AT
