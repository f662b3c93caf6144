"""VMBPO's log-likelihood-ratio fit: nu(x'|x, a) -> log q_d / p by f-divergence duality (eq. 21)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule

from torchrl_vmbpo import keys
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.log_ratio import log_ratio_bound, log_ratio_of
from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.objectives.common import KeyedLoss, next_key

# Default entry holding next states drawn from q_d for the batch's (x, a) (namespaced key).
MODEL_NEXT_OBSERVATION = ("model", "next_observation")


class LogRatioLoss(KeyedLoss):
    r"""Fit ``nu(x'|x, a)`` to ``log q_d(x'|x, a) / p(x'|x, a)`` (eqs. 20-21).

    For real transitions ``(x, a, x'_p)`` from D and ``x'_q ~ q_d(.|x, a)`` on the same ``(x, a)``:

    ``loss_log_ratio = -[mean nu(x, a, x'_q) - mean exp nu(x, a, x'_p)]``

    The objective is strictly concave in ``nu`` with pointwise maximiser ``nu = log(q_d / p)``
    (Nguyen et al., 2008) and maximum ``KL(q_d || p) - 1``, hence the diagnostic
    ``kl_estimate = mean nu(x'_q) - mean exp nu(x'_p) + 1``. The network's output is bounded (see
    :func:`~torchrl_vmbpo.models.log_ratio.make_log_ratio_network`) so ``exp nu`` stays finite; over
    networks with ``|nu| <= b`` the optimum is the truncation ``clip(log q_d/p, +-b)``, not the
    ratio itself, and ``kl_estimate`` is then a lower bound. ``nu_at_bound_fraction`` (when the
    network's bound is known) is the fraction of the ``nu`` values of the batch, at ``x'_q`` and
    ``x'_p`` together, within 1% of ``+-b``: how much of the fit the truncation decides.

    Where ``x'_q`` comes from: with ``dynamics_model`` given, it is drawn from it (a random elite per
    row, no gradient) at every call, as the paper does ("for all (x, a) that have been sampled, we
    generate x' from q_d"); with ``dynamics_model=None`` it is read from the batch entry
    ``model_next_observation``.

    Ownership: this loss owns ``nu`` (registered as ``log_ratio_network``); the dynamics model
    is borrowed (not registered; sampled without gradient).

    Args:
        log_ratio_network: ``nu``, a TensorDictModule with 3 in_keys (x, a, x', filled by position).
        dynamics_model: ``q_d`` to sample ``x'_q`` from, or ``None`` to read it from the batch.

    Keys read (``set_keys``, ``SACLoss``'s contract): ``observation`` (x, and the real ``x'_p`` under
    ``"next"``), ``action``, ``model_next_observation`` (``x'_q``, ``("model", "next_observation")``,
    only when ``dynamics_model`` is ``None``).

    Returns ``loss_log_ratio`` (steps ``nu``) and detached diagnostics ``kl_estimate``,
    ``log_ratio_model`` (mean ``nu(x'_q)``), ``log_ratio_real`` (mean ``nu(x'_p)``),
    ``exp_log_ratio_real`` (mean ``exp nu(x'_p)``, one at the optimum since ``E_p[q_d / p] = 1``)
    and, for a bounded network, ``nu_at_bound_fraction``.

    Example:
        >>> import torch
        >>> from torchrl_vmbpo.models.log_ratio import make_log_ratio_network
        >>> loss = LogRatioLoss(make_log_ratio_network(3, 1, hidden=(16,)), DynamicsModel(3, 1, hidden=(16,)))
        >>> td = TensorDict({"observation": torch.randn(8, 3), "action": torch.randn(8, 1),
        ...                  ("next", "observation"): torch.randn(8, 3)}, [8])
        >>> out = loss(td)
        >>> sorted(out.keys())
        ['exp_log_ratio_real', 'kl_estimate', 'log_ratio_model', 'log_ratio_real', 'loss_log_ratio', 'nu_at_bound_fraction']
    """

    @dataclass
    class _AcceptedKeys:
        """Batch entries read by the ratio loss."""

        observation: str = keys.OBSERVATION
        action: str = keys.ACTION
        model_next_observation: tuple = MODEL_NEXT_OBSERVATION

    default_keys = _AcceptedKeys
    _out_keys_ = ("loss_log_ratio", "kl_estimate", "log_ratio_model", "log_ratio_real", "exp_log_ratio_real")

    def __init__(self, log_ratio_network: TensorDictModule, dynamics_model: DynamicsModel | None = None):
        super().__init__()
        fv.check_in_keys(log_ratio_network, 3, "log_ratio_network")
        if dynamics_model is not None and not isinstance(dynamics_model, DynamicsModel):
            raise TypeError(f"dynamics_model must be a DynamicsModel or None, got {type(dynamics_model).__name__}")
        self.log_ratio_network = log_ratio_network
        self.__dict__["dynamics_model"] = dynamics_model  # borrowed: owned by the dynamics loss
        self.bound = log_ratio_bound(log_ratio_network)  # None: a network of unknown range

    @property
    def out_keys(self) -> list[str]:
        return [*self._out_keys_, *(["nu_at_bound_fraction"] if self.bound is not None else [])]

    def _read_keys(self) -> dict:
        k = self.tensor_keys
        read = {"observation": k.observation, "action": k.action, "next_observation": next_key(k.observation)}
        if self.dynamics_model is None:
            read["model_next_observation"] = k.model_next_observation
        return read

    def forward(self, td: TensorDictBase) -> TensorDict:
        b = fv.fetch(td, self._read_keys(), type(self).__name__)
        obs, action = b["observation"], b["action"]
        if self.dynamics_model is None:
            model_next_obs = b["model_next_observation"]
        else:
            flat_obs, flat_action = obs.reshape(-1, obs.shape[-1]), action.reshape(-1, action.shape[-1])
            model_next_obs = self.dynamics_model.sample(flat_obs, flat_action)[0].reshape(obs.shape)
        nu_q = log_ratio_of(self.log_ratio_network, obs, action, model_next_obs.detach())
        nu_p = log_ratio_of(self.log_ratio_network, obs, action, b["next_observation"])
        dual = fv.log_ratio_dual(nu_q, nu_p)  # eq. 21, maximised
        info = {
            "kl_estimate": dual + 1.0,
            "log_ratio_model": nu_q.mean(),
            "log_ratio_real": nu_p.mean(),
            "exp_log_ratio_real": nu_p.exp().mean(),
        }
        if self.bound is not None:
            info["nu_at_bound_fraction"] = fv.at_bound_fraction(torch.cat([nu_q, nu_p]), self.bound)
        return TensorDict({"loss_log_ratio": -dual, **{n: v.detach() for n, v in info.items()}}, batch_size=[])
