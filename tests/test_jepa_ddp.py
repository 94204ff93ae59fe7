"""I-JEPA and FlexPredict under DDP: two CPU processes on two half-batches give the gradients of one
process on the whole batch (SPEC.md §5). One pair of processes serves both methods.

Masks: drawn once for the whole batch from a fixed seed; rank r takes the rows of its images. The
JEPA loss is a per-rank mean over equally many predictions, so DDP's gradient averaging must give
the whole-batch gradient, with no collective in the loss.

FlexPredict's noise arrangement: one standard-normal tensor (T, B, Kt, D) is drawn from a fixed
seed for the whole batch, like the masks; rank r's predictor gets the slice of its images
[:, r·B/2:(r+1)·B/2] and the single process gets all of it (``tests.jepa_helpers.fixed_noise``
replaces the predictor's draw and scales it by noise_std). Each image then sees the same noise in
both runs.
"""

from __future__ import annotations

import pytest
import torch

from tests.distributed_utils import run_distributed
from tests.jepa_helpers import METHODS, distributed_gradients, single_process_gradients


@pytest.fixture(scope="module")
def two_process_gradients(tmp_path_factory) -> dict[str, list[torch.Tensor]]:
    out = tmp_path_factory.mktemp("ddp") / "grads.pt"
    run_distributed(distributed_gradients, 2, str(out))
    return torch.load(out)


@pytest.mark.distributed
@pytest.mark.parametrize("name", list(METHODS))
def test_two_process_gradients_equal_single_process(name, two_process_gradients):
    single = single_process_gradients(name)
    assert len(single) == len(two_process_gradients[name])
    for whole, halves in zip(single, two_process_gradients[name]):
        torch.testing.assert_close(halves, whole, rtol=1e-4, atol=1e-6)
