"""L2-regularised multinomial logistic regression on fixed features, solved with L-BFGS: the classifier
of the low-shot protocol of I-JEPA (Assran et al., CVPR 2023, §5 and appendix) and StoP (Bar et al.,
ICML 2024), which fit it with cyanure on frozen features."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.errors import ConfigurationError


@dataclass(frozen=True)
class LogisticFit:
    """A fitted multinomial logistic regression.

    Attributes:
        weight: ``(C, D)`` class weights.
        bias: ``(C,)`` intercepts, or ``None`` when fitted without intercept.
        iterations: L-BFGS iterations run.
        max_gradient: largest absolute entry of the objective's gradient at the solution.
        converged: whether ``max_gradient`` reached the requested tolerance.
    """

    weight: Tensor
    bias: Tensor | None
    iterations: int
    max_gradient: float
    converged: bool

    def to(self, device: torch.device | str) -> LogisticFit:
        """The same fit with its weights on ``device``."""
        bias = None if self.bias is None else self.bias.to(device)
        return replace(self, weight=self.weight.to(device), bias=bias)

    def logits(self, features: Tensor) -> Tensor:
        """Class scores ``(B, C)`` of ``(B, D)`` features (computed in the weights' dtype and device)."""
        logits = features.to(self.weight) @ self.weight.T
        return logits if self.bias is None else logits + self.bias


def fit_logistic_regression(
    features: Tensor,
    labels: Tensor,
    num_classes: int | None = None,
    l2: float = 0.0,
    fit_intercept: bool = False,
    tolerance: float = 1e-7,
    max_iterations: int = 5000,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> LogisticFit:
    """Minimise the L2-regularised multinomial logistic loss with ``torch.optim.LBFGS``.

    The objective, over ``W`` of shape ``(C, D)`` and (with ``fit_intercept``) an unregularised
    ``b`` of shape ``(C,)``, is

    .. math::
        \\frac{1}{N} \\sum_{i=1}^N -\\log \\operatorname{softmax}(W x_i + b)_{y_i}
        + \\frac{\\lambda}{2} \\lVert W \\rVert_F^2 ,

    cyanure's ``MultiClassifier(loss="multiclass-logistic", penalty="l2")`` objective, the one the
    I-JEPA/StoP low-shot evaluation minimises with ``λ = 0.0025 / N``. It is scikit-learn's
    ``LogisticRegression(C=1 / (N λ))`` up to the factor ``N λ`` (same minimiser). For ``λ > 0`` it is
    strongly convex, so the minimiser is unique and any solver run to convergence gives the same
    predictions. L-BFGS (strong-Wolfe line search, from ``W = 0``) stops when every entry of the
    gradient is at most ``tolerance`` in absolute value, or after ``max_iterations`` iterations (with
    a warning, as when the line search can no longer decrease the objective at this precision: the
    gradient cannot go much below ``sqrt(eps · f · λ)``, so float32 suits loose tolerances only).
    With ``λ = 0`` on separable data there is no minimiser and the run ends on the iteration limit.

    Args:
        features: ``(N, D)`` training features.
        labels: ``(N,)`` class indices in ``[0, num_classes)``.
        num_classes: ``C``; ``None`` = ``labels.max() + 1``.
        l2: ``λ`` of the objective above (already divided by ``N`` if the protocol says so).
        fit_intercept: learn ``b`` too (the I-JEPA/StoP protocol does not).
        tolerance: gradient tolerance (max-norm) of the stopping rule.
        max_iterations: iteration limit of L-BFGS.
        dtype: precision of the solve (float64 by default, for a tight tolerance).
        device: where to solve; ``None`` = the features' device.

    Returns:
        The fitted weights in ``dtype`` on ``device``, and how the solve ended.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ConfigurationError(
            f"fit_logistic_regression needs (N, D) features and (N,) labels, got features of shape "
            f"{tuple(features.shape)} and labels of shape {tuple(labels.shape)}."
        )
    if not len(labels):
        raise ConfigurationError("fit_logistic_regression needs at least one training sample, got none.")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ConfigurationError(
            f"Labels must lie in [0, {num_classes}), got values from {int(labels.min())} to {int(labels.max())}; "
            "drop unlabelled samples (label -1) before fitting."
        )
    if l2 < 0 or tolerance <= 0 or max_iterations < 1:
        raise ConfigurationError(
            f"fit_logistic_regression needs l2 ≥ 0, tolerance > 0 and max_iterations ≥ 1, "
            f"got l2={l2}, tolerance={tolerance}, max_iterations={max_iterations}."
        )
    device = features.device if device is None else torch.device(device)
    # Autograd on, whatever the caller's mode (Lightning validates under inference mode): the clones
    # are ordinary tensors even when the features are inference tensors.
    with torch.inference_mode(False), torch.enable_grad():
        x = features.to(device=device, dtype=dtype).clone()
        y = labels.to(device=device, dtype=torch.long).clone()
        return minimise(x, y, num_classes, l2, fit_intercept, tolerance, max_iterations)


def minimise(
    x: Tensor, y: Tensor, num_classes: int, l2: float, fit_intercept: bool, tolerance: float, max_iterations: int
) -> LogisticFit:
    """The L-BFGS run of :func:`fit_logistic_regression` on checked inputs, with autograd enabled.

    L-BFGS minimises the objective divided by ``λ`` (same minimiser; the Hessian's eigenvalues are
    then at least 1): ``torch.optim.LBFGS`` only keeps curvature pairs with ``yᵀs > 1e-10``, which
    at the protocol's tiny ``λ`` (≈ 4e-6) drops them long before convergence and stalls the solve.
    """
    dtype, device = x.dtype, x.device
    scale = 1 / l2 if l2 > 0 else 1.0
    weight = torch.zeros(num_classes, x.shape[1], dtype=dtype, device=device, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=dtype, device=device, requires_grad=True) if fit_intercept else None
    parameters = [weight] if bias is None else [weight, bias]

    def objective() -> Tensor:
        logits = x @ weight.T
        if bias is not None:
            logits = logits + bias
        return scale * F.cross_entropy(logits, y) + 0.5 * scale * l2 * weight.square().sum()

    optimizer = torch.optim.LBFGS(
        parameters,
        lr=1.0,
        max_iter=max_iterations,
        max_eval=2 * max_iterations,
        tolerance_grad=tolerance * scale,
        tolerance_change=0.0,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)
    closure()
    max_gradient = max(float(parameter.grad.abs().max()) for parameter in parameters) / scale
    iterations = int(optimizer.state[weight]["n_iter"])
    converged = max_gradient <= tolerance
    if not converged:
        remedy = (
            "raise max_iterations or l2"
            if iterations >= max_iterations
            else f"the line search found no decrease at {dtype} precision: raise tolerance or solve in float64"
        )
        warnings.warn(
            f"fit_logistic_regression stopped after {iterations} L-BFGS iterations with a gradient of "
            f"{max_gradient:.3g} (> tolerance {tolerance:g}); {remedy}.",
            stacklevel=3,
        )
    return LogisticFit(weight.detach(), None if bias is None else bias.detach(), iterations, max_gradient, converged)
