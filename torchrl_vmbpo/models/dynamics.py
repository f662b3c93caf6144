"""q_d: the learned dynamics model, an ensemble of Gaussians over (Δobservation, reward).

:class:`DynamicsModel` is the ensemble plus what turns it into a transition model: input
normalisation, the delta parameterisation of the next observation, and the elite members chosen by
holdout loss (mbrl-lib's "wrapper" layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchrl_vmbpo.models.ensemble import GaussianEnsemble
from torchrl_vmbpo.models.normalizer import Normalizer


class DynamicsModel(nn.Module):
    """Gaussian-ensemble dynamics ``q_d(x', r | x, a)`` predicting ``[x' - x, r]``.

    Args:
        obs_dim: observation size.
        action_dim: action size.
        num_members: ensemble size (MBPO: 7).
        num_elites: members used for rollouts, chosen by holdout loss (MBPO: 5).
        hidden: hidden widths (MBPO: 4 x 200).

    Example:
        >>> model = DynamicsModel(3, 1, hidden=(16, 16))
        >>> mean, logvar = model.predict(torch.zeros(10, 3), torch.zeros(10, 1))
        >>> mean.shape  # [batch, members, obs_dim + 1]
        torch.Size([10, 7, 4])
        >>> next_obs, reward = model.sample(torch.zeros(10, 3), torch.zeros(10, 1))
        >>> next_obs.shape, reward.shape
        (torch.Size([10, 3]), torch.Size([10, 1]))
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        num_members: int = 7,
        num_elites: int = 5,
        hidden: Sequence[int] = (200, 200, 200, 200),
    ):
        super().__init__()
        if not 1 <= num_elites <= num_members:
            raise ValueError(f"num_elites must be in [1, num_members={num_members}], got {num_elites}")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.num_members, self.num_elites = num_members, num_elites
        self.input_normalizer = Normalizer(obs_dim + action_dim)
        self.ensemble = GaussianEnsemble(obs_dim + action_dim, obs_dim + 1, num_members=num_members, hidden=hidden)
        self.register_buffer("elites", torch.arange(num_elites))

    def model_inputs(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs, action], dim=-1)

    @staticmethod
    def model_targets(obs: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """Regression targets ``[x' - x, r]`` (the delta makes small steps easy to learn)."""
        return torch.cat([next_obs - obs, reward], dim=-1)

    def predict(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member on the same inputs: ``[*B, D], [*B, A] -> (mean, logvar)`` each ``[*B, E, D+1]``."""
        x = self.input_normalizer(self.model_inputs(obs, action))
        x = x.unsqueeze(-2).expand(*x.shape[:-1], self.num_members, x.shape[-1])
        return self.ensemble(x)

    def predict_per_member(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Member-specific inputs (bootstrapped batches): ``[*B, E, D], [*B, E, A] -> [*B, E, D+1]``."""
        return self.ensemble(self.input_normalizer(self.model_inputs(obs, action)))

    def set_elites(self, elites: torch.Tensor) -> None:
        elites = torch.as_tensor(elites, dtype=torch.long).flatten()
        if elites.numel() != self.num_elites or elites.min() < 0 or elites.max() >= self.num_members:
            raise ValueError(
                f"elites must be {self.num_elites} indices in [0, {self.num_members}), got {elites.tolist()}"
            )
        self.elites.copy_(elites)

    @torch.no_grad()
    def sample(
        self, obs: torch.Tensor, action: torch.Tensor, *, deterministic: bool = False, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(x', r)`` from a uniformly random elite per row: ``[*B, D], [*B, A] -> [*B, D], [*B, 1]``.

        Rows are shuffled and split evenly over the elites, so each row's member is uniform over the
        elites (as MBPO) while every member runs once on its share: the cost is one member's, not E.
        """
        batch = obs.shape[:-1]
        obs, action = obs.reshape(-1, obs.shape[-1]), action.reshape(-1, action.shape[-1])
        n = obs.shape[0]
        k = self.num_elites
        per = -(-n // k)  # ceil(n / k)
        slots = torch.randperm(per * k, generator=generator).to(obs.device)  # slot s holds row slots[s] (pad: >= n)
        rows = slots % max(n, 1)
        x = self.input_normalizer(self.model_inputs(obs, action))[rows].reshape(k, per, -1)
        mean, logvar = self.ensemble.forward_members_first(x, members=self.elites)
        if not deterministic:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            mean = mean + noise * (0.5 * logvar).exp()
        # Scatter every slot back to its row and drop the padding (no boolean mask: compiles without breaks).
        out = torch.empty(per * k, mean.shape[-1], dtype=mean.dtype, device=mean.device)
        out[slots] = mean.reshape(per * k, -1)
        out = out[:n]
        return (obs + out[:, :-1]).reshape(*batch, -1), out[:, -1:].reshape(*batch, 1)
