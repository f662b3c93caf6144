"""A probabilistic ensemble of Gaussian MLPs (PETS/MBPO), all members in one batched pass.

Layout: members are the LEADING dimension inside the network (``[E, N, features]``), so each layer
is one ``torch.baddbmm``; the public :meth:`GaussianEnsemble.forward` takes and returns tensors with
the ensemble dimension AFTER the batch dimensions (``[*B, E, features]``), the layout TorchRL's
model-based envs and planners expect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied as one batched matmul: ``[E, N, in] -> [E, N, out]``."""

    def __init__(self, num_members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, out_features))
        # Truncated-normal init with std 1/(2 sqrt(in)), as in MBPO's BNN.
        nn.init.trunc_normal_(self.weight, std=1.0 / (2.0 * math.sqrt(in_features)))

    def member_params(self, members: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` of ``members`` (a gathered copy), or of all members if None."""
        if members is None:
            return self.weight, self.bias
        return self.weight[members], self.bias[members]

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = self.member_params(members)
        return torch.baddbmm(bias, x, weight)


class GaussianEnsemble(nn.Module):
    """``E`` Gaussian MLPs predicting a diagonal Gaussian over ``out_features`` targets.

    The log-variance is soft-bounded between learned ``max_logvar`` (init +0.5) and ``min_logvar``
    (init -10) as in PETS/MBPO; :meth:`logvar_bound_penalty` is the term that keeps the bounds tight.

    Args:
        in_features: input size (MBPO: observation + action, already normalised).
        out_features: target size (MBPO: Δobservation + reward).
        num_members: ensemble size ``E`` (MBPO: 7).
        hidden: hidden layer widths (MBPO: four layers of 200).
        activation: hidden activation (MBPO: SiLU, a.k.a. swish).

    Example:
        >>> ens = GaussianEnsemble(4, 3, num_members=7, hidden=(8, 8))
        >>> mean, logvar = ens(torch.zeros(5, 7, 4))
        >>> mean.shape, logvar.shape
        (torch.Size([5, 7, 3]), torch.Size([5, 7, 3]))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        num_members: int = 7,
        hidden: Sequence[int] = (200, 200, 200, 200),
        activation: type[nn.Module] = nn.SiLU,
    ):
        super().__init__()
        if num_members < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}")
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
        self.num_members = num_members
        self.in_features = in_features
        self.out_features = out_features
        sizes = [in_features, *hidden]
        self.hidden_layers = nn.ModuleList(EnsembleLinear(num_members, i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.output_layer = EnsembleLinear(num_members, sizes[-1], 2 * out_features)
        self.activation = activation()
        self.max_logvar = nn.Parameter(torch.full((out_features,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((out_features,), -10.0))

    def member_weights(self, members: torch.Tensor | None = None) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Each layer's ``(weight, bias)`` for ``members`` (all members if None), gathered once.

        Pass them as ``weights=`` to :meth:`forward_members_first` for every step of a rollout with a
        fixed member assignment (PETS's TS-inf): gathering per step cost 17% of a planned action on one
        CPU thread at population 200, horizon 15, 5 particles.
        """
        return tuple(layer.member_params(members) for layer in [*self.hidden_layers, self.output_layer])

    def forward_members_first(
        self,
        x: torch.Tensor,
        members: torch.Tensor | None = None,
        *,
        weights: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[M, N, in] -> (mean, logvar)`` each ``[M, N, out]``; ``members`` picks M of the E members
        (or ``weights``, their :meth:`member_weights` gathered beforehand)."""
        if weights is None:
            weights = self.member_weights(members)
        # Without autograd (planning, imagination) the activation runs in place on the fresh layer
        # output: one 6 MB buffer less per layer at PETS's sizes, 20% of a pass on one CPU thread.
        inplace = not torch.is_grad_enabled() and isinstance(self.activation, nn.SiLU)
        for weight, bias in weights[:-1]:
            x = torch.baddbmm(bias, x, weight)
            x = F.silu(x, inplace=True) if inplace else self.activation(x)
        # The output layer in float32 even under a bfloat16 autocast (TrainConfig.precision="bf16"):
        # means and log-variances enter the NLL, and bf16 would round a predicted state to ~3 digits.
        with torch.autocast(x.device.type, enabled=False):
            out = torch.baddbmm(weights[-1][1], x.to(weights[-1][0].dtype), weights[-1][0])
        mean, raw_logvar = out.chunk(2, dim=-1)
        # Soft bounds (PETS, appendix A.1): smooth, so gradients reach the bounds themselves.
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw_logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[*B, E, in] -> (mean, logvar)`` each ``[*B, E, out]`` (member-specific inputs)."""
        if x.shape[-2:] != (self.num_members, self.in_features):
            raise ValueError(
                f"GaussianEnsemble expects inputs of shape [*batch, {self.num_members}, {self.in_features}], "
                f"got {tuple(x.shape)}"
            )
        batch = x.shape[:-2]
        flat = x.reshape(-1, self.num_members, self.in_features).transpose(0, 1)
        mean, logvar = self.forward_members_first(flat)
        unflat = lambda t: t.transpose(0, 1).reshape(*batch, self.num_members, self.out_features)  # noqa: E731
        return unflat(mean), unflat(logvar)

    def logvar_bound_penalty(self) -> torch.Tensor:
        """``sum(max_logvar) - sum(min_logvar)``: MBPO adds 0.01 times this to the model loss."""
        return self.max_logvar.sum() - self.min_logvar.sum()
