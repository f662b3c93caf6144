"""The backward / clip / step helpers: nothing else in the package calls ``.backward()``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from tensordict import TensorDictBase


def total_loss(losses: TensorDictBase) -> torch.Tensor:
    """Sum of every ``loss_*`` entry (TorchRL convention: the rest are detached diagnostics)."""
    terms = [value for key, value in losses.items() if isinstance(key, str) and key.startswith("loss")]
    if not terms:
        raise ValueError(f"no 'loss_*' entry to optimise among {list(losses.keys())}")
    return torch.stack([t.reshape(()) for t in terms]).sum() if len(terms) > 1 else terms[0].reshape(())


def optimize(
    loss: torch.Tensor | TensorDictBase,
    optimizer: torch.optim.Optimizer,
    *,
    max_grad_norm: float | None = None,
    parameters: Iterable[torch.nn.Parameter] | None = None,
) -> torch.Tensor | None:
    """Zero grads, backpropagate ``loss`` (or the sum of a loss tensordict's ``loss_*``), clip, step.

    Returns the pre-clip gradient norm when clipping, else None.
    """
    if isinstance(loss, TensorDictBase):
        loss = total_loss(loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return _clip_and_step(optimizer, max_grad_norm, parameters)


def optimize_together(
    pairs: Sequence[tuple[torch.Tensor, torch.optim.Optimizer]], *, max_grad_norm: float | None = None
) -> None:
    """:func:`optimize` for several ``(loss, optimizer)`` pairs whose parameters are disjoint and whose
    losses reach only their own optimizer's parameters: one backward of the summed losses (equal to a
    backward of each), then each optimizer clips and steps its own parameters."""
    for _, optimizer in pairs:
        optimizer.zero_grad(set_to_none=True)
    torch.stack([loss.reshape(()) for loss, _ in pairs]).sum().backward()
    for _, optimizer in pairs:
        _clip_and_step(optimizer, max_grad_norm)


def _clip_and_step(
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float | None,
    parameters: Iterable[torch.nn.Parameter] | None = None,
) -> torch.Tensor | None:
    """Clip the gradients of ``parameters`` (default: the optimizer's) to ``max_grad_norm``, then step.
    Returns the pre-clip gradient norm when clipping, else None."""
    grad_norm = None
    if max_grad_norm is not None:
        params = parameters if parameters is not None else [p for g in optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(list(params), max_grad_norm)
    optimizer.step()
    return grad_norm
