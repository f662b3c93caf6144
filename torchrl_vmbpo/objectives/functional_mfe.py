"""Pure maths of VMBPO-MFE's model-free E-step critic: the exponential-TD loss (eq. 9).

Shape legend: B batch dims (any number, ``[*B]``), K Q copies. Every function is stateless and
differentiable; :class:`~torchrl_vmbpo.objectives.exponential_td.ExponentialTDLoss` only fetches
tensors, calls these, and reduces.

Why an exponential TD: on real transitions the action-value of eq. 9 (discounted, form ii of the
spec) is ``Q(x, a) = eta r + log E_{x'~p}[exp(gamma V'(x'))]``, a log-mean-exp of the sampled
targets ``y = eta r + gamma (1 - terminated) V'(x')``, not their mean. The convex loss
``l(Q) = exp(y - Q) + Q`` has zero expected derivative ``1 - E[exp(y - Q)]`` exactly there. With a
temperature ``tau`` (Borkar 2002) the loss ``tau exp((y - Q) / tau) + Q`` has the fixed point
``Q = tau log E[exp(y / tau)]``: ``tau = 1`` is eq. 9, ``tau -> inf`` the plain mean TD,
``tau -> 0`` the maximum of the targets.
"""

from __future__ import annotations

import math

import torch


def exp_linear(u: torch.Tensor, max_exponent: float | None = None) -> torch.Tensor:
    """``exp(u)``, continued by its tangent line above ``max_exponent`` (``None``: plain ``exp``).

    Above ``c = max_exponent`` the value is ``exp(c) (1 + u - c)``: continuous with a continuous
    derivative, still convex and ``>= 1 + u``, but its slope stays ``exp(c)``, so one outlying target
    can neither overflow float32 (``exp`` does past 88) nor outweigh a batch without bound.

    Example:
        >>> exp_linear(torch.tensor([0.0, 1.0, 3.0]), max_exponent=1.0)
        tensor([1.0000, 2.7183, 8.1548])
    """
    if max_exponent is None:
        return u.exp()
    capped = u.clamp_max(max_exponent)
    return capped.exp() * (1.0 + (u - capped))


def exponential_td_loss(
    q_value: torch.Tensor,
    target: torch.Tensor,
    *,
    temperature: float = 1.0,
    max_exponent: float | None = None,
) -> torch.Tensor:
    """Per-sample exponential-TD loss ``tau^2 [phi(u) - u - 1]`` with ``u = (y - Q) / tau``, ``phi = exp``.

    This is ``tau`` times the spec's ``l(Q) = tau exp((y - Q) / tau) + Q`` minus a term free of
    ``Q`` (``tau y + tau^2``): same minimiser, same convexity, but non-negative (zero iff ``Q = y``)
    and with a gradient ``dl/dQ = tau (1 - exp(u))`` of order ``|y - Q|`` at every temperature, so
    ``tau -> inf`` tends to ``(y - Q)^2 / 2`` (half the squared TD error) instead of a vanishing
    gradient. ``phi`` is :func:`exp_linear` with ``max_exponent`` (in units of ``u``); where every
    ``u <= max_exponent`` the loss is exact.

    Minimiser: for a constant ``Q = q`` on targets ``y_1..y_n`` the mean loss has derivative
    ``tau (1 - mean_i exp((y_i - q) / tau))``, zero at ``q = tau log mean_i exp(y_i / tau)``
    (:func:`exponential_td_fixed_point`).

    Args:
        q_value: ``Q(x, a)``, any shape.
        target: ``y``, broadcastable to ``q_value`` (no gradient expected).
        temperature: ``tau > 0`` (1: eq. 9).
        max_exponent: where ``exp`` turns linear, or ``None`` for the exact loss everywhere.

    Returns:
        The per-sample loss, shaped like the broadcast of ``q_value`` and ``target``.

    Example:
        >>> exponential_td_loss(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))  # e - 2, 0
        tensor([0.7183, 0.0000])
    """
    u = (target - q_value) / temperature
    return temperature**2 * (exp_linear(u, max_exponent) - u - 1.0)


def exponential_td_fixed_point(target: torch.Tensor, *, temperature: float = 1.0, dim: int = -1) -> torch.Tensor:
    """The constant minimising the mean exponential-TD loss over ``dim``: ``tau log mean exp(y / tau)``.

    On one ``(x, a)`` with next states drawn from ``p`` this is the sample version of eq. 9's
    ``eta r + log E_p[exp(gamma V'(x'))]`` (``tau = 1``); it lies between ``mean y`` (``tau -> inf``)
    and ``max y`` (``tau -> 0``).

    Example:
        >>> y = torch.tensor([0.0, math.log(3.0)])
        >>> exponential_td_fixed_point(y)  # log((1 + 3) / 2)
        tensor(0.6931)
    """
    n = target.shape[dim]
    return temperature * (torch.logsumexp(target / temperature, dim=dim) - math.log(n))
