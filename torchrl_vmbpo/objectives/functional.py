"""Pure maths shared by the losses. Shape legend: B batch dims, E ensemble members, D target dims."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from torchrl_vmbpo.errors import BatchShapeError


def gaussian_nll_per_dim(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Diagonal-Gaussian NLL per dimension, without the constant ``log(2 pi) / 2`` and factor 1/2.

    ``(target - mean)^2 exp(-logvar) + logvar``, the form PETS/MBPO minimise. Shapes broadcast:
    ``[*B, E, D]`` predictions against ``[*B, 1, D]`` or ``[*B, E, D]`` targets.
    """
    return (target - mean).pow(2) * torch.exp(-logvar) + logvar


def effective_sample_size(weights: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` over the last dimension."""
    return weights.sum(-1).pow(2) / weights.pow(2).sum(-1).clamp_min(torch.finfo(weights.dtype).tiny)


def assert_finite(td: TensorDictBase, keys, where: str) -> None:
    """Raise a ValueError naming the first key of ``keys`` that holds NaN or inf."""
    for key in keys:
        value = td.get(key, None)
        if value is not None and value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{where}: the batch entry {key!r} contains NaN or inf values")


def check_feature_shape(td: TensorDictBase, key, where: str) -> None:
    """Every entry a loss reads is ``[*batch, features]`` (a reward is ``[*batch, 1]``): one without its
    trailing feature dimension would broadcast silently against ``[*batch, 1]`` into ``[*batch, batch]``.

    Raises:
        BatchShapeError: naming the entry, its shape and the batch shape.
    """
    value = td.get(key)
    if value.ndim <= td.batch_dims or value.shape[: td.batch_dims] != td.batch_size:
        raise BatchShapeError(
            f"{where}: batch entry {key!r} has shape {tuple(value.shape)}; expected [*batch, features] with batch "
            f"{tuple(td.batch_size)} (rewards, done and terminated as [*batch, 1])"
        )
