"""Input normalisation for the dynamics ensemble (MBPO's StandardScaler, as a module with buffers)."""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """Per-feature standardisation ``(x - mean) / std`` with statistics stored as buffers.

    The statistics are refit on the whole real buffer before each model fit (as MBPO does) and are
    saved in the state dict with the model, so a restored model normalises exactly as it trained.

    Example:
        >>> norm = Normalizer(2)
        >>> norm.fit(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
        >>> norm(torch.tensor([[1.0, 20.0]]))
        tensor([[0., 0.]])
    """

    def __init__(self, dim: int, *, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> None:
        if data.ndim != 2 or data.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"Normalizer.fit expects a [N, {self.mean.shape[0]}] tensor, got {tuple(data.shape)}")
        if not torch.isfinite(data).all():
            raise ValueError("Normalizer.fit got non-finite values (NaN or inf) in its data")
        self.mean.copy_(data.mean(0))
        # Constant features (std 0) are left unscaled rather than blown up.
        std = data.std(0) if data.shape[0] > 1 else torch.ones_like(self.std)
        self.std.copy_(torch.where(std < self.eps, torch.ones_like(std), std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
