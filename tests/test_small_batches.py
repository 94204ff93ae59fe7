"""A training batch too small for BatchNorm is our error, raised before the first step, not
BatchNorm's "Expected more than 1 value per channel" from deep inside the forward pass."""

import pytest
import torch

from tests.tiny_methods import JEPA_METHODS, METHOD_NAMES, quiet_trainer, tiny, tiny_data


# LeJEPA's BatchNorm layers see every view, so its limit is SIGReg's (tests/test_lejepa.py).
@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if n not in (*JEPA_METHODS, "LeJEPA")])
def test_batch_of_one_is_refused_before_the_first_step(name):
    model = tiny(name)
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    trainer = quiet_trainer(max_steps=2)
    with pytest.raises(ValueError, match=rf"{name}: a training batch of 1 image per device is too small .*batch_size"):
        trainer.fit(model, tiny_data(name, batch_size=1))
    assert trainer.global_step == 0
    assert all(torch.equal(weights[key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize("name", JEPA_METHODS)
def test_methods_without_batchnorm_train_on_batches_of_one(name):
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(tiny(name), tiny_data(name, batch_size=1))
    assert trainer.global_step == 2
