"""What every method shares, and nothing more: the optimizer built from the method's own parameter
groups (no weight decay on biases and norm parameters), a per-step warmup + cosine learning-rate
schedule, a stop with a clear message when the loss stops being finite, which leaves the weights and
buffers as they were before the failing batch and never writes a checkpoint holding NaN or inf, and
random draws keyed by the run's position, so that a resumed run draws what an uninterrupted one
would (:mod:`ssl_lightning.seeding`)."""

from __future__ import annotations

import inspect
import math
import operator
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.optim.lr_scheduler import LambdaLR

from ssl_lightning.errors import ConfigurationError, ConfigurationTypeError, TrainingDivergedError
from ssl_lightning.methods.divergence import DivergenceGuard, skips_on_device
from ssl_lightning.nn.schedules import warmup_cosine
from ssl_lightning.seeding import derive_seed, draw_seed

if TYPE_CHECKING:
    from ssl_lightning.interop.load import ImportReport

RUN_SEED_KEY = "ssl_lightning_run_seed"
"""The checkpoint entry holding :attr:`SSLMethod.run_seed`."""

# The keyword arguments `compile_options` may hold: those of torch.compile after the model.
COMPILE_ARGUMENTS = frozenset(inspect.signature(torch.compile).parameters) - {"model"}
# nn.Module.compile runs every module through one shared wrapper function, so without isolation all
# compiled modules share that function's 8 recompilations (torch._dynamo.config.recompile_limit) and,
# past them, run eagerly; a blockwise method's 13 modules alone exceed it. Where torch.compile
# has `isolate_recompiles`, each module gets its own budget.
DEFAULT_COMPILE_OPTIONS = {"isolate_recompiles": True} if "isolate_recompiles" in COMPILE_ARGUMENTS else {}


def weight_decay_groups(parameters, no_decay_lr_scale: float = 1.0) -> list[dict]:
    """Trainable ``parameters`` split into ``[decayed, no-decay]``: parameters with ≤ 1 dimension
    (biases, BatchNorm/LayerNorm scales and shifts) get no weight decay; frozen ones are left out.
    The no-decay group's learning rate is ``no_decay_lr_scale`` × the optimizer's (Barlow Twins:
    0.0048 / 0.2 = 0.024)."""
    decay, no_decay = [], []
    for param in parameters:
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lr_scale": no_decay_lr_scale}]


def declared_batch_size(dataloader) -> int | None:
    """The batch size a training ``DataLoader`` declares (``batch_size``, or its ``batch_sampler``'s), if any."""
    size = getattr(dataloader, "batch_size", None) or getattr(
        getattr(dataloader, "batch_sampler", None), "batch_size", None
    )
    return size if isinstance(size, int) else None


def per_device_batch_size(dataloader) -> int:
    """The batch size of a training ``DataLoader``, for ``lr_reference_batch_size``."""
    size = declared_batch_size(dataloader)
    if size is None:
        raise ConfigurationTypeError(
            f"lr_reference_batch_size needs the training batch size, but the train dataloader "
            f"({type(dataloader).__name__}) does not say it. Use a DataLoader with batch_size=..., or set the "
            "learning rate for your batch yourself and lr_reference_batch_size=None."
        )
    return size


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``module`` (1-, 2- and 3-d, synced or not)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def check_batch_fits_batchnorm(module: nn.Module, dataloader, world_size: int) -> None:
    """Fail before the first step when a training batch is too small for ``module``'s BatchNorm
    layers, which cannot normalise one sample per channel in training mode; their own error
    ("Expected more than 1 value per channel") names neither the layer's owner nor the fix.
    ``SyncBatchNorm`` normalises over all ``world_size`` processes' samples."""
    size = declared_batch_size(dataloader)
    norms = batchnorm_layers(module)
    synced = world_size if any(isinstance(m, nn.SyncBatchNorm) for m in norms) else 1
    if norms and size is not None and size * synced < 2:
        raise ConfigurationError(
            f"{type(module).__name__}: a training batch of {size} image per device is too small for its BatchNorm "
            "layers (projector, ResNet), which need at least 2 to normalise. Raise the batch size "
            "(--data.init_args.batch_size, at least 2 per device)."
        )


class BufferSnapshot:
    """A copy of a module's buffers, taken before a training batch so that a non-finite loss can put
    them back: by the time the loss exists, the forward pass has already folded the batch into
    BatchNorm's running statistics (and ``num_batches_tracked``), and NaN images make them NaN.

    The copies are allocated once and refreshed in place with one ``torch._foreach_copy_`` while the
    module keeps the same buffer tensors (reallocated when it does not, e.g. after ``.to(device)``).
    Restoring copies in place too, so compiled modules keep the tensors they were traced with."""

    def __init__(self) -> None:
        self.buffers: list[Tensor] = []
        self.copies: list[Tensor] = []

    def take(self, module: nn.Module) -> None:
        buffers = list(module.buffers())
        if len(buffers) == len(self.buffers) and all(map(operator.is_, buffers, self.buffers)):
            if buffers:
                torch._foreach_copy_(self.copies, buffers)
        else:
            self.buffers, self.copies = buffers, [buffer.clone() for buffer in buffers]

    def restore(self) -> None:
        if self.buffers:
            torch._foreach_copy_(self.buffers, self.copies)

    def restore_where(self, condition: Tensor) -> None:
        """Put the copies back where the device flag ``condition`` is set, without reading it on the host."""
        for buffer, copy in zip(self.buffers, self.copies):
            buffer.copy_(torch.where(condition, copy, buffer))


def non_finite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """The names of the floating-point tensors of ``state_dict`` that hold a NaN or an infinity (of a
    DTensor, this rank's shard). One host sync per tensor: meant for checkpoints, not for every step."""
    bad = []
    for name, tensor in state_dict.items():
        tensor = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        if isinstance(tensor, Tensor) and tensor.is_floating_point() and not tensor.isfinite().all():
            bad.append(name)
    return bad


def base_arguments(init_locals: dict) -> dict:
    """The :class:`SSLMethod` arguments among a subclass's ``__init__`` locals, for
    ``super().__init__(**base_arguments(locals()))``: each method states them in its own signature
    (with its own defaults, which the CLI shows) and hands them on without listing them again."""
    return {name: init_locals[name] for name in BASE_PARAMETERS}


class SSLMethod(LightningModule):
    """Base of the ssl_lightning methods.

    Args:
        optimizer: builds the optimizer from parameter groups, e.g. ``torch.optim.AdamW`` or
            ``functools.partial(timm.optim.Lars, lr=0.3, weight_decay=1e-6, momentum=0.9)``; in
            YAML a ``class_path``/``init_args`` pair. Group 0 holds the weights, group 1 the biases
            and norm parameters with ``weight_decay=0`` (timm's LARS skips its trust ratio there).
        warmup_epochs: linear warmup length in epochs (fractions allowed): ``warmup_epochs`` × the
            optimizer steps of one epoch (after ``limit_train_batches`` and ``accumulate_grad_batches``),
            whether the run's length is set by ``max_epochs`` or ``max_steps``.
        warmup_steps: linear warmup length in optimizer steps; replaces ``warmup_epochs`` when given
            (needed for datasets without a length).
        warmup_start_factor: learning rate at step 0, as a fraction of the optimizer's lr.
        final_lr_factor: learning rate at the last step, as a fraction of the optimizer's lr.
        lr_reference_batch_size: the linear scaling rule of the VICReg and Barlow Twins code (Goyal et
            al. 2017): when given, the optimizer's ``lr`` is a base rate for this batch size, and every
            group's learning rate is multiplied by ``global batch / lr_reference_batch_size``, the global
            batch being per-device batch × devices × nodes × ``accumulate_grad_batches``. E.g. ``lr=0.2``
            with ``256`` gives 1.6 at a global batch of 2048 however it is split. ``None``: the
            optimizer's ``lr`` as is. The global batch and the resulting rates are logged when fit starts.
        compile: compile the method's hot modules (:meth:`compiled_modules`) in place with
            :meth:`torch.nn.Module.compile` when the fit starts (in :meth:`configure_model`, after
            any sharding). The state dict's keys do not change, so checkpoints load either way.
        compile_options: keyword arguments of :func:`torch.compile`, e.g. ``{"mode": "max-autotune"}``
            or ``{"backend": "aot_eager"}``; ignored unless ``compile`` is true. By default each
            module has its own recompilation budget (``isolate_recompiles=True``, where torch has it).
        channels_last: store the 4-D weights (the convolutions) in channels-last memory format when the
            fit starts (:meth:`configure_model`), so convolutions run in NHWC: faster on CPUs (oneDNN) and
            on GPUs with tensor cores (e.g. 1.3× for a narrow ResNet-18 step on 28 px images on 2 CPU
            cores). Inputs stay as they are; the state dict is unchanged, so checkpoints load either way.
        init_from: weights to start from: an official I-JEPA/StoP ``.pth.tar``, timm or Hugging Face
            I-JEPA weights, a torchvision-layout ResNet (the released VICReg and Barlow Twins ones), or
            another ssl_lightning checkpoint (:mod:`ssl_lightning.interop`). Loaded into the method's
            :meth:`weight_parts` once, when a fit, validation or test starts (:meth:`setup`), before
            Lightning restores a ``ckpt_path``, whose weights then replace them; the ``ssl-lightning``
            command does not read it at all when resuming. :meth:`load_weights` loads weights at
            once. A summary of what was loaded is logged.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable,
        warmup_epochs: float = 10.0,
        warmup_start_factor: float = 0.0,
        final_lr_factor: float = 1e-3,
        compile: bool = False,
        compile_options: dict | None = None,
        warmup_steps: int | None = None,
        lr_reference_batch_size: int | None = None,
        channels_last: bool = False,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if warmup_epochs < 0:
            raise ConfigurationError(f"warmup_epochs must be ≥ 0, got {warmup_epochs}")
        if warmup_steps is not None and (not isinstance(warmup_steps, int) or warmup_steps < 0):
            raise ConfigurationError(f"warmup_steps must be an integer ≥ 0 or None, got {warmup_steps!r}")
        if lr_reference_batch_size is not None and (
            not isinstance(lr_reference_batch_size, int) or lr_reference_batch_size < 1
        ):
            raise ConfigurationError(
                f"lr_reference_batch_size must be a positive integer or None, got {lr_reference_batch_size!r}"
            )
        if compile_options is not None and not isinstance(compile_options, dict):
            raise ConfigurationTypeError(
                f"compile_options must be a dict of torch.compile arguments, got {compile_options!r}"
            )
        unknown = set(compile_options or {}) - COMPILE_ARGUMENTS
        if unknown:
            raise ConfigurationError(
                f"compile_options has keys that torch.compile does not take: {sorted(unknown)}; "
                f"use some of {sorted(COMPILE_ARGUMENTS)}."
            )
        self.optimizer = optimizer
        self.warmup_epochs = warmup_epochs
        self.warmup_steps = warmup_steps
        self.lr_reference_batch_size = lr_reference_batch_size
        self.warmup_start_factor = warmup_start_factor
        self.final_lr_factor = final_lr_factor
        # Not `self.compile`: that would shadow nn.Module.compile.
        self.compile_enabled = compile
        self.compile_options = dict(compile_options or {})
        self._modules_compiled = False
        self.channels_last = channels_last
        self.init_from = init_from
        self._init_from_applied = False
        self._buffers_before_batch = BufferSnapshot()
        self._divergence = DivergenceGuard()
        self._skip_on_device = False  # the optimizer skips a failed step itself: no host sync (see on_train_start)
        self.run_seed: int | None = None
        """Seed of the training batches' random draws: drawn when the first fit starts, then kept
        (and restored from checkpoints)."""

    def save_init_arguments(self) -> None:
        """``save_hyperparameters`` for the calling ``__init__``, leaving out the optimizer callable and
        ``nn.Module`` arguments: checkpoints then hold only plain values and load with
        ``torch.load(weights_only=True)``, which Lightning uses when resuming."""
        frame = inspect.currentframe().f_back
        modules = [name for name, value in frame.f_locals.items() if isinstance(value, nn.Module)]
        self.save_hyperparameters(ignore=["optimizer", *modules], frame=frame)

    def weight_parts(self) -> dict[str, nn.Module]:
        """The parts that weights from other code bases load into (:mod:`ssl_lightning.interop`):
        ``encoder`` always, and ``target_encoder``, ``predictor`` or ``projector`` where the method has them."""
        raise NotImplementedError(
            f"{type(self).__name__} does not name its weight_parts(); it cannot load foreign weights."
        )

    def load_weights(self, source: str) -> ImportReport:
        """Load ``source`` (any layout :mod:`ssl_lightning.interop` reads) into :meth:`weight_parts`,
        all or nothing, log what was loaded and return the report."""
        from ssl_lightning.interop.load import load_weights  # the interop package reads our checkpoints too

        report = load_weights(self.weight_parts(), source)
        rank_zero_info(str(report))
        return report

    def setup(self, stage: str) -> None:
        """Load ``init_from`` once (Lightning calls this before it restores a ``ckpt_path``)."""
        if self.init_from is not None and not self._init_from_applied:
            self.load_weights(self.init_from)
        self._init_from_applied = True

    def configure_model(self) -> None:
        """Lightning's hook once the strategy is set up (before the optimizer exists): under
        ``ModelParallelStrategy`` shard the networks with FSDP2 (:meth:`shard_modules`), convert the
        weights to channels-last when ``channels_last`` is set, then, when
        the method was built with ``compile=True``, compile its hot modules in place
        (:meth:`compiled_modules`). Runs once per fit; calling it again changes nothing."""
        if self.device_mesh is not None:
            self.shard_modules(self.device_mesh)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_enabled and not self._modules_compiled:
            for module in self.compiled_modules():
                module.compile(**{**DEFAULT_COMPILE_OPTIONS, **self.compile_options})
            self._modules_compiled = True

    def compiled_modules(self) -> list[nn.Module]:
        """The modules that ``compile=True`` compiles in place: those that run every training step
        (networks and loss). Each is compiled on its own, so the code between them (mask
        sampling, stop-gradients, noise injection, the EMA update) stays eager."""
        raise NotImplementedError(
            f"{type(self).__name__} does not list its compiled_modules(); it cannot use compile=True."
        )

    def shard_modules(self, device_mesh) -> None:
        """FSDP2-shard this method over ``device_mesh``; methods that support FSDP override this."""
        raise NotImplementedError(
            f"{type(self).__name__} does not support ModelParallelStrategy (FSDP2): only the ViT methods (IJEPA, "
            "FlexPredict) shard their networks. Train ResNet methods with strategy=ddp (and sync_batchnorm=true)."
        )

    def parameter_groups(self) -> list[dict]:
        """The optimizer's parameter groups: :func:`weight_decay_groups` of all parameters. Frozen
        parameters (e.g. EMA teachers) are never handed to the optimizer. A group may carry an
        ``lr_scale``, a factor on the optimizer's learning rate (e.g. per block)."""
        return weight_decay_groups(self.parameters())

    def total_and_warmup_steps(self) -> tuple[int, int]:
        """Optimizer steps of the whole run and of the warmup, from the Trainer's settings."""
        estimated = self.trainer.estimated_stepping_batches
        if not math.isfinite(estimated):
            raise ConfigurationError(
                "The learning-rate schedule needs a known run length: set trainer.max_epochs or trainer.max_steps."
            )
        total = max(1, int(estimated))
        if self.warmup_steps is not None:
            return total, min(total, self.warmup_steps)
        if self.warmup_epochs == 0:
            return total, 0
        return total, min(total, round(self.warmup_epochs * self.optimizer_steps_per_epoch()))

    def optimizer_steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch: training batches per process (after ``limit_train_batches``)
        over ``accumulate_grad_batches``, rounded up as Lightning steps the last partial accumulation."""
        trainer = self.trainer
        self.loaded_train_dataloader()
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ConfigurationError(
                "warmup_epochs needs the number of batches per epoch, but the training data has no length "
                "(an iterable dataset). Give the warmup in optimizer steps instead: warmup_steps=N."
            )
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches))

    def lr_factor(self, step: int) -> float:
        total, warmup = self.total_and_warmup_steps()
        return warmup_cosine(step, total, warmup, self.warmup_start_factor, 1.0, self.final_lr_factor)

    def loaded_train_dataloader(self):
        """The Trainer's training dataloader, loaded now if the fit loop has not yet: configure_optimizers
        runs before the fit loop loads the data (and when max_steps sets the run's length, Lightning's
        step estimate does not load it either)."""
        if self.trainer.train_dataloader is None:
            self.trainer.fit_loop.setup_data()
        return self.trainer.train_dataloader

    def global_batch_size(self) -> int:
        """Images per optimizer step over all processes: per-device batch × world size × accumulation."""
        per_device = per_device_batch_size(self.loaded_train_dataloader())
        return per_device * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameter_groups())
        global_batch = None if self.lr_reference_batch_size is None else self.global_batch_size()
        batch_scale = 1.0 if global_batch is None else global_batch / self.lr_reference_batch_size
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0) * batch_scale
        self.report_learning_rates(optimizer, global_batch, batch_scale)
        scheduler = LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def report_learning_rates(self, optimizer, global_batch: int | None, batch_scale: float) -> None:
        """One line (rank 0) with the global batch (``None``: no scaling rule) and every group's peak
        learning rate; also sent to the logger as ``optim/global_batch_size`` and ``optim/lr_group<i>``
        when one is attached."""
        rates = [group["lr"] for group in optimizer.param_groups]
        distinct = ", ".join(f"{rate:.4g}" for rate in dict.fromkeys(rates))
        if global_batch is None:
            rank_zero_info(f"{type(self).__name__}: peak learning rates {distinct} (lr_reference_batch_size=None).")
        else:
            rank_zero_info(
                f"{type(self).__name__}: global batch {global_batch} = lr_reference_batch_size "
                f"{self.lr_reference_batch_size} × {batch_scale:.4g}; peak learning rates {distinct}."
            )
            if self.logger is not None:
                metrics = {"optim/global_batch_size": float(global_batch)}
                metrics.update({f"optim/lr_group{i}": rate for i, rate in enumerate(rates)})
                self.logger.log_metrics(metrics, step=0)

    def check_batch_size(self, dataloader, world_size: int) -> None:
        """Refuse, before the first step, a training batch too small for the method
        (:func:`check_batch_fits_batchnorm`, unless a method needs otherwise)."""
        check_batch_fits_batchnorm(self, dataloader, world_size)

    def on_fit_start(self) -> None:
        self.check_batch_size(self.loaded_train_dataloader(), self.trainer.world_size)
        if self.run_seed is None:
            self.run_seed = draw_seed(self.trainer.strategy)

    def on_train_start(self) -> None:
        """When resuming, have the fit loop build the training loader again at the start of the epoch,
        so that it continues from the checkpoint's position: the loader was built before the checkpoint's
        loop state was read (``configure_optimizers`` needs its length), and Lightning applies a saved
        loader position only when it builds the loader. Subclasses that override this hook call
        ``super().on_train_start()``."""
        fit_loop = self.trainer.fit_loop
        if fit_loop.restarting and fit_loop._combined_loader_states_to_load:
            fit_loop._combined_loader = None
        self._skip_on_device = bool(self.trainer.optimizers) and all(map(skips_on_device, self.trainer.optimizers))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Reseed torch's RNG (every device) from ``(run_seed, rank, epoch, batch_idx)``, so that the
        batch's masks and noise depend on nothing but where the run is; and copy the buffers before the
        forward pass changes them, for :meth:`on_before_backward` to put back (measured on 2 CPU cores:
        0.1 ms a batch for a narrow ResNet-18 VICReg, 0.6% of its 17 ms step; 0.25 ms for ResNet-50).
        Subclasses that override this hook call ``super().on_train_batch_start(batch, batch_idx)``."""
        self.raise_if_diverged(self._divergence.poll())
        if self.run_seed is not None:
            torch.manual_seed(derive_seed(self.run_seed, self.global_rank, self.current_epoch, batch_idx))
        self._buffers_before_batch.take(self)

    def on_before_backward(self, loss: Tensor) -> None:
        """Stop at a non-finite loss before its optimizer step can reach the weights, and undo what its
        forward pass did to the buffers (BatchNorm running statistics), so that the model, and a
        checkpoint written on the way out (``OnExceptionCheckpoint``), are as they were before this batch.

        With an optimizer that can skip a step on the device (torch's ``fused=True`` Adam, AdamW and
        SGD), nothing here waits for the device: the failure is recorded on the device, the optimizer
        skips this and every later update, the buffers are put back after the backward pass (which
        reads them) in :meth:`on_train_batch_end`, and the error is raised once the record reaches the
        host (:mod:`ssl_lightning.methods.divergence`). Otherwise the loss is read on the host, and the error
        is raised before the backward pass."""
        if self._skip_on_device:
            self._divergence.record(loss, self.global_step)
        elif not torch.isfinite(loss).all():
            self._buffers_before_batch.restore()
            self.raise_if_diverged((self.global_step, loss.item()))

    def on_before_optimizer_step(self, optimizer) -> None:
        """Hand the device's failure flag to a fused optimizer, which then skips the update (see
        :meth:`on_before_backward`). Subclasses that override this hook call ``super()``'s."""
        if self._skip_on_device:
            optimizer.found_inf = self._divergence.found_inf()

    def on_train_batch_end(self, outputs, batch: Any, batch_idx: int) -> None:
        """With a fused optimizer (see :meth:`on_before_backward`): put the buffers back if a step has
        failed, start the copy of the failure record to the host, and raise if it shows a failure (at
        once on a CPU; on a GPU usually at the next batch). Subclasses that override this hook call
        ``super()``'s."""
        if self._skip_on_device:
            self._buffers_before_batch.restore_where(self._divergence.failed())
            self._divergence.start_copy()
            self.raise_if_diverged(self._divergence.poll())

    def on_train_end(self) -> None:
        """A failure recorded in the last steps still stops the fit (waiting for the record)."""
        self.raise_if_diverged(self._divergence.poll(wait=True))

    def ema_momentum_held(self, momentum: float) -> float | Tensor:
        """``momentum`` for an EMA teacher's update, held at 1 on the device once a step has failed
        (:meth:`on_before_backward`), so the teacher stays where it was, as the weights do."""
        return self._divergence.hold(momentum)

    def raise_if_diverged(self, failure: tuple[int, float] | None) -> None:
        """Raise :class:`~ssl_lightning.errors.TrainingDivergedError` for ``(step, loss)``, if given."""
        if failure is None:
            return
        step, loss = failure
        raise TrainingDivergedError(
            f"{type(self).__name__}: the loss is {loss} at global step {step} and training stopped there, with the "
            "weights and the normalisation statistics (BatchNorm running means and variances) as they were before "
            "this batch. Lower the learning rate or lengthen the warmup, clip gradients "
            "(--trainer.gradient_clip_val=1.0), check the data for NaN or infinite pixels, or train in float32 "
            "(--trainer.precision=32)."
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.run_seed = checkpoint.get(RUN_SEED_KEY, self.run_seed)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record :attr:`run_seed`; refuse to write a checkpoint whose weights or buffers hold NaN or inf:
        resuming from it, or evaluating it, cannot give anything but NaN, and it could overwrite the
        last good one."""
        checkpoint[RUN_SEED_KEY] = self.run_seed
        self.raise_if_diverged(self._divergence.poll(wait=True))
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise TrainingDivergedError(
                f"{type(self).__name__}: not writing a checkpoint at global step {self.global_step}: NaN or inf in "
                f"{len(bad)} of its tensors ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}). "
                "Training has diverged (e.g. an infinite gradient at a finite loss): resume from an earlier "
                "checkpoint with a lower learning rate or gradient clipping (--trainer.gradient_clip_val=1.0)."
            )

    @staticmethod
    def check_views(views: list[Tensor], needed: int, method: str) -> None:
        """Raise a clear error when a batch has fewer views than the method needs."""
        if not isinstance(views, (list, tuple)) or len(views) < needed:
            got = len(views) if isinstance(views, (list, tuple)) else "a single tensor"
            raise ConfigurationError(
                f"{method} needs {needed} augmented views per image but the batch has {got}. "
                "Use a DataModule whose view recipe makes them, e.g. views=JointEmbeddingViews(num_views=2)."
            )


BASE_PARAMETERS = tuple(inspect.signature(SSLMethod.__init__).parameters)[1:]
"""The names of :class:`SSLMethod`'s ``__init__`` arguments, which every method also takes."""
