"""Gaussian-ensemble negative log-likelihood: MBPO's model loss, and VMBPO's weighted fit (eq. 19)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase

from torchrl_vmbpo import keys
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.objectives.common import KeyedLoss
from torchrl_vmbpo.objectives.functional import assert_finite, check_feature_shape, gaussian_nll_per_dim


class GaussianEnsembleNLLLoss(KeyedLoss):
    """NLL of ``(x' - x, r)`` under every member of a :class:`DynamicsModel`, optionally weighted.

    Per member ``e`` and sample ``i`` the NLL is averaged over target dimensions (PETS/MBPO); the loss
    is the sum over members of the (weighted) batch mean, plus
    ``logvar_penalty * (sum max_logvar - sum min_logvar)``.

    Weights: if the batch holds ``tensor_keys.weight`` (default ``("model", "weight")``, shape
    ``[*B]`` or ``[*B, 1]``) the next-state NLL of sample ``i`` is multiplied by ``w_i`` — VMBPO's
    twisted dynamics fit (eq. 19). The reward dimension stays unweighted: r is a deterministic
    function of (x, a) and the twist acts on x' only (spec, objective 1). Without weights this is
    exactly MBPO's model loss.

    Batch layouts: ``[B]`` (every member sees the same rows) or ``[B, E]`` (member-specific
    bootstrapped rows, the ensemble dimension last as TorchRL's model-based envs expect).

    Optimizer: ``loss_dynamics`` steps the dynamics model's parameters (and nothing else).

    Example:
        >>> from tensordict import TensorDict
        >>> model = DynamicsModel(3, 1, hidden=(16,))
        >>> loss = GaussianEnsembleNLLLoss(model)
        >>> td = TensorDict({"observation": torch.randn(8, 3), "action": torch.randn(8, 1),
        ...     ("next", "observation"): torch.randn(8, 3), ("next", "reward"): torch.randn(8, 1)}, [8])
        >>> out = loss(td)
        >>> sorted(out.keys())
        ['loss_dynamics', 'model_mse', 'model_nll']
    """

    @dataclass
    class _AcceptedKeys:
        observation: str = keys.OBSERVATION
        action: str = keys.ACTION
        next_observation: tuple = keys.NEXT_OBSERVATION
        reward: tuple = keys.REWARD
        weight: tuple = keys.WEIGHT

    default_keys = _AcceptedKeys
    dynamics_model: DynamicsModel
    _out_keys_ = ("loss_dynamics", "model_nll", "model_mse")

    def __init__(self, dynamics_model: DynamicsModel, *, logvar_penalty: float = 0.01):
        super().__init__()
        if not isinstance(dynamics_model, DynamicsModel):
            raise TypeError(f"dynamics_model must be a DynamicsModel, got {type(dynamics_model).__name__}")
        if logvar_penalty < 0:
            raise ValueError(f"logvar_penalty must be >= 0, got {logvar_penalty}")
        self.dynamics_model = dynamics_model
        self.logvar_penalty = logvar_penalty

    def _read_keys(self) -> dict:
        k = self.tensor_keys
        return {
            "observation": k.observation,
            "action": k.action,
            "next_observation": k.next_observation,
            "reward": k.reward,
        }

    def _check_batch(self, td: TensorDictBase) -> None:
        k = self.tensor_keys
        assert_finite(td, [k.observation, k.action, k.next_observation, k.reward], type(self).__name__)
        needed = [k.observation, k.action, k.next_observation, k.reward]
        missing = [key for key in needed if td.get(key, None) is None]
        if missing:
            raise KeyError(
                f"{type(self).__name__} needs the keys {needed} (change them with set_keys); missing {missing}, "
                f"the batch has {list(td.keys(True, True))}"
            )
        for key in needed:
            check_feature_shape(td, key, type(self).__name__)

    def per_sample_nll(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (next-state NLL, reward NLL, squared error), each ``[*B, E]`` (mean over dims)."""
        k = self.tensor_keys
        if not torch.compiler.is_compiling():  # the checks branch on data; an eager call has made them
            self._check_batch(td)
        obs, action = td.get(k.observation), td.get(k.action)
        next_obs, reward = td.get(k.next_observation), td.get(k.reward)
        model = self.dynamics_model
        per_member = td.batch_dims >= 2 and td.shape[-1] == model.num_members
        if per_member:  # [B, E]: bootstrapped rows, one set per member
            mean, logvar = model.predict_per_member(obs, action)
            target = model.model_targets(obs, reward, next_obs)
        else:  # [B]: the same rows for every member
            mean, logvar = model.predict(obs, action)
            target = model.model_targets(obs, reward, next_obs).unsqueeze(-2)
        nll = gaussian_nll_per_dim(mean, logvar, target)
        sq_err = (mean - target).pow(2).mean(-1)
        return nll[..., :-1].mean(-1), nll[..., -1], sq_err

    def _weighted_nll(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weighted NLL, plain NLL, squared error), each ``[*B, E]`` and averaged over the D+1 target dims."""
        state_nll, reward_nll, sq_err = self.per_sample_nll(td)  # [*B, E]
        d = self.dynamics_model.obs_dim
        weight = td.get(self.tensor_keys.weight, None)
        weighted_state_nll = state_nll
        if weight is not None:
            weight = weight.detach()
            if weight.shape[-1:] == (1,) and weight.ndim == td.batch_dims + 1:
                weight = weight.squeeze(-1)
            if td.batch_dims >= 2 and td.shape[-1] == self.dynamics_model.num_members:
                weighted_state_nll = state_nll * weight
            else:
                weighted_state_nll = state_nll * weight.unsqueeze(-1)
        # Mean over all D+1 target dims, with the twist weight on the D next-state dims only.
        nll = (d * weighted_state_nll + reward_nll) / (d + 1)
        plain = (d * state_nll + reward_nll) / (d + 1)
        return nll, plain, sq_err

    def per_member_nll(self, td: TensorDictBase) -> torch.Tensor:
        """Each member's (weighted, if the batch holds weights) NLL averaged over rows: ``[E]``; the
        loss is their sum plus the log-variance penalty."""
        nll = self._weighted_nll(td)[0]
        return nll.mean(tuple(range(nll.ndim - 1)))

    @torch.no_grad()
    def holdout_loss(self, td: TensorDictBase) -> torch.Tensor:
        """Each member's mean squared error of the predicted mean on held-out transitions, ``[E]``:
        averaged over rows and the D+1 targets (x' - x and r), what MBPO's fit early-stops on and
        ranks elites by (``training.model_fit.holdout_mse`` on a ``[B]`` batch); weights are ignored."""
        sq_err = self.per_sample_nll(td)[2]
        return sq_err.mean(tuple(range(sq_err.ndim - 1)))

    def forward(self, td: TensorDictBase) -> TensorDict:
        nll, plain, sq_err = self._weighted_nll(td)
        batch_dims = tuple(range(nll.ndim - 1))
        loss = nll.mean(batch_dims).sum()
        loss = loss + self.logvar_penalty * self.dynamics_model.ensemble.logvar_bound_penalty()
        return TensorDict(
            {
                "loss_dynamics": loss,
                "model_nll": plain.mean().detach(),
                "model_mse": sq_err.mean().detach(),
            },
            batch_size=[],
        )
