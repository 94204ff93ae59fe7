"""The ``compile`` option of every method: in-place compilation of the hot modules (state-dict keys
unchanged), the same loss and gradients as eager, a bounded number of compilations when the JEPA
mask lengths change every batch, compiled losses under DDP and compiled modules after FSDP2 sharding.

The cheap ``aot_eager`` backend (AOTAutograd's forward and backward graphs run by the eager
kernels) stands in for inductor, which compiles too slowly on a 2-core CPU; one slow test uses
inductor itself.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch import Callback
from torch import nn
from torch._dynamo.backends.registry import lookup_backend

from ssl_lightning.cli import main
from ssl_lightning.losses import BarlowTwinsLoss, VICRegLoss
from ssl_lightning.methods import SSLMethod
from tests import fsdp_helpers
from tests.distributed_utils import assert_two_process_loss_gradients_equal, run_lightning_distributed
from tests.tiny_methods import JEPA_METHODS, METHOD_NAMES, fit, tiny, tiny_batch


class CountingBackend:
    """A ``torch.compile`` backend that counts the FX graphs Dynamo hands it (one per compilation
    of a frame or of a graph-break piece, recompilations included) and runs them with aot_eager."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return lookup_backend("aot_eager")(graph_module, example_inputs)


@pytest.fixture(autouse=True)
def fresh_compile_caches():
    """No test reuses another's compiled code (Dynamo caches per code object, across modules)."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def test_option_saved_validated_and_needs_a_module_list():
    model = tiny("VICReg", compile=True, compile_options={"mode": "max-autotune"})
    assert model.hparams.compile is True and model.hparams.compile_options == {"mode": "max-autotune"}
    assert callable(model.compile)  # nn.Module.compile is not shadowed by the option
    with pytest.raises(ValueError, match=r"torch.compile does not take: \['modes'\]"):
        tiny("VICReg", compile=True, compile_options={"modes": "max-autotune"})
    with pytest.raises(TypeError, match="must be a dict"):
        tiny("IJEPA", compile=True, compile_options="max-autotune")

    class Unlisted(SSLMethod):
        def __init__(self) -> None:
            super().__init__(torch.optim.AdamW, compile=True)

    with pytest.raises(NotImplementedError, match="Unlisted does not list its compiled_modules"):
        Unlisted().configure_model()


def test_yaml_option_reaches_the_method(capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--model=IJEPA",
                "--data=FashionMNIST",
                "--model.init_args.compile=true",
                "--model.init_args.compile_options={backend: aot_eager}",
                "--print_config",
            ]
        )
    printed = capsys.readouterr().out
    assert "compile: true" in printed and "backend: aot_eager" in printed


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_compiled_in_place_once_with_unchanged_state_dict(name):
    eager, compiled = tiny(name), tiny(name, compile=True, compile_options={"backend": "aot_eager"})
    compiled.configure_model()
    modules = compiled.compiled_modules()
    wrappers = [module._compiled_call_impl for module in modules]  # set by nn.Module.compile
    assert all(wrapper is not None for wrapper in wrappers)
    compiled.configure_model()  # Lightning may call it again (e.g. fit, then test): nothing changes
    assert [module._compiled_call_impl for module in modules] == wrappers
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.load_state_dict(eager.state_dict())  # strict: checkpoints load either way
    eager.configure_model()
    assert all(module._compiled_call_impl is None for module in eager.compiled_modules())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_compiled_training_step_equals_eager(name):
    """Same weights, batch and random draws (masks, noise): the loss and every gradient agree to
    1e-6 relative (measured: bit-identical, as aot_eager runs the same kernels)."""
    backend = CountingBackend()
    results = []
    for model in (tiny(name), tiny(name, compile=True, compile_options={"backend": backend})):
        model.configure_model()
        torch.manual_seed(5)
        loss = model.training_step(tiny_batch(name), 0)["loss"]
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters() if p.requires_grad]))
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
    assert backend.graphs > 0  # the compiled model did run compiled code
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-6, atol=1e-7)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-6, atol=1e-7)


def test_blockwise_modules_do_not_share_one_recompile_budget():
    """nn.Module.compile sends every module through one wrapper function; sharing its 8
    recompilations, the blockwise method's 17 modules gave 12 graphs (measured) and ran the rest
    eagerly. With a budget per module, each module that computes anything (all but the small
    stem's max-pool, an ``nn.Identity``) compiles at least one graph: 16 (measured)."""
    backend = CountingBackend()
    model = tiny("BlockwiseBarlowTwins", compile=True, compile_options={"backend": backend})
    model.configure_model()
    model.training_step(tiny_batch("BlockwiseBarlowTwins"), 0)["loss"].backward()
    computing = [module for module in model.compiled_modules() if not isinstance(module, nn.Identity)]
    assert backend.graphs >= len(computing) == 16


class MaskLengths(Callback):
    def __init__(self) -> None:
        self.lengths = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        context_idx, target_idx = pl_module.last_masks
        self.lengths.add((context_idx.shape[1], target_idx[0].shape[1]))


@pytest.mark.parametrize("name", JEPA_METHODS)
def test_jepa_compiles_each_module_once_although_mask_lengths_change(name):
    """20 training steps through the Trainer, with about a dozen different (context, target)
    lengths: 4 graphs, one per compiled module (context and target encoder, predictor, loss), and
    no recompilation. Without the token dimension marked dynamic it took 7 (measured)."""
    backend, lengths = CountingBackend(), MaskLengths()
    model = tiny(name, compile=True, compile_options={"backend": backend})
    trainer = fit(model, name, steps=20, callbacks=[lengths])
    assert trainer.global_step == 20 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert len(lengths.lengths) >= 5
    assert len(model.compiled_modules()) == 4
    assert backend.graphs == 4


def test_fit_with_compile_trains_and_validates():
    model = tiny("VICReg", compile=True, compile_options={"backend": "aot_eager"})
    before = [p.detach().clone() for p in model.backbone.parameters()]
    trainer = fit(model, "VICReg", steps=2, limit_val_batches=1, num_sanity_val_steps=0, val_check_interval=2)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, model.backbone.parameters()))


def compiled_losses(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """VICReg plus Barlow Twins, each compiled: their gradient-carrying all-gather and all-reduce.
    Raises unless each loss compiled to exactly one graph: an untraceable collective would split
    it at a graph break (torch.distributed.nn.functional's all_gather) or leave it eager (its all_reduce)."""
    torch.compiler.reset()
    total = 0
    for loss_fn in (VICRegLoss(), BarlowTwinsLoss()):
        backend = CountingBackend()
        loss_fn.compile(backend=backend)
        total = total + loss_fn(z1, z2)[0]
        assert backend.graphs == 1, f"{type(loss_fn).__name__} compiled to {backend.graphs} graphs, not 1"
    return total, {}


@pytest.mark.distributed
def test_compiled_losses_keep_global_batch_gradients_under_ddp(tmp_path):
    """The losses' collectives are functional collectives, which Dynamo traces: each compiled loss
    is one graph without breaks in 2 processes, and the gradients equal those of one process on
    the whole batch."""
    assert_two_process_loss_gradients_equal(compiled_losses, str(tmp_path / "grads.pt"))


def fsdp2_eager_and_compiled_run(rank: int, world_size: int, out_path: str) -> None:
    """Three FSDP2 I-JEPA steps from the same seed, eager then compiled; rank 0 saves both final
    (gathered) states and whether the compiled run's modules were compiled."""
    finals = []
    for compile in (False, True):
        torch.compiler.reset()
        pl.seed_everything(0)
        options = {"compile": compile, "compile_options": {"backend": "aot_eager"}}
        model = tiny("IJEPA", **fsdp_helpers.TINY_VIT, **options)
        fsdp_helpers.fit(model, "fsdp2", max_steps=3)
        finals.append(fsdp_helpers.full_state(model))
    compiled = all(module._compiled_call_impl is not None for module in model.compiled_modules())
    if rank == 0:
        torch.save({"eager": finals[0], "compiled": finals[1], "all_compiled": compiled}, out_path)


@pytest.mark.distributed
def test_compiled_after_fsdp2_sharding_trains_like_eager(tmp_path):
    """configure_model shards, then compiles the sharded modules: the weights after 3 steps equal
    the eager FSDP2 run's to 1e-6 relative (measured: bit-identical)."""
    out_path = tmp_path / "finals.pt"
    run_lightning_distributed(fsdp2_eager_and_compiled_run, 2, str(out_path))
    record = torch.load(out_path)
    assert record["all_compiled"]
    torch.testing.assert_close(record["compiled"], record["eager"], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["VICReg", "IJEPA"])
def test_inductor_training_step_close_to_eager(name):
    """With inductor's fused kernels the results differ by rounding only (1e-4 relative)."""
    losses = []
    for model in (tiny(name), tiny(name, compile=True)):
        model.configure_model()
        torch.manual_seed(5)
        losses.append(model.training_step(tiny_batch(name), 0)["loss"].detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
