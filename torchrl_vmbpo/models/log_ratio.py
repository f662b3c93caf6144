"""nu(x'|x, a): the log-likelihood-ratio network, an estimate of ``log q_d(x'|x,a) / p(x'|x,a)``.

VMBPO's critic subtracts ``nu`` from the Q target (eq. 22) and fits it by the dual objective of
eq. 21, whose loss contains ``exp(nu)``: the output is therefore bounded, ``bound * tanh(raw / bound)``
(identity near zero, never beyond ``+-bound``), so ``exp`` cannot overflow. The bound is a
truncation, not only a safeguard: eq. 21's optimum over such networks is ``clip(log q_d/p, +-bound)``
(for a deterministic p, ``log q_d/p`` is unbounded), so the KL estimate becomes a lower bound and
the Q target's ``-nu`` at most ``bound`` nats a step; the losses log how often nu sits at its bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.modules import MLP

from torchrl_vmbpo import keys
from torchrl_vmbpo.models.networks import fp32_output

# Where nu writes its output by default (namespaced: not a TorchRL standard key).
LOG_RATIO = keys.LOG_RATIO


class BoundedLogRatioMLP(nn.Module):
    """``(x, a, x') -> bound * tanh(MLP([x, a, x' - x]) / bound)``, shape ``[*B, 1]``.

    ``x'`` enters as the change ``x' - x`` (the quantity the dynamics model predicts): the same
    information, on a scale that does not grow with ``x``.
    """

    def __init__(self, obs_dim: int, act_dim: int, *, hidden: Sequence[int], bound: float, activation: type[nn.Module]):
        super().__init__()
        self.bound = float(bound)
        self.mlp = fp32_output(
            MLP(in_features=2 * obs_dim + act_dim, out_features=1, num_cells=list(hidden), activation_class=activation)
        )

    def forward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        raw = self.mlp(torch.cat([obs, action, next_obs - obs], dim=-1))
        return self.bound * torch.tanh(raw / self.bound)


def make_log_ratio_network(
    obs_dim: int,
    act_dim: int,
    *,
    hidden: Sequence[int] = (256, 256),
    bound: float = 10.0,
    activation: type[nn.Module] = nn.ReLU,
    observation_key=keys.OBSERVATION,
    action_key=keys.ACTION,
    next_observation_key=keys.NEXT_OBSERVATION,
    out_key=LOG_RATIO,
) -> TensorDictModule:
    """The ratio network ``nu(x'|x, a)`` as a TensorDictModule reading ``(x, a, x')``.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden widths of the MLP.
        bound: ``|nu| <= bound``; ``exp(bound)`` must stay finite in the loss (default 10).
        activation: hidden activation.
        observation_key, action_key, next_observation_key: the three in_keys, in this order (the
            losses fill them by position, so any names work).
        out_key: where ``nu`` is written, shape ``[*B, 1]``.

    Example:
        >>> nu = make_log_ratio_network(3, 1, hidden=(16,), bound=5.0)
        >>> td = TensorDict({"observation": torch.zeros(4, 3), "action": torch.zeros(4, 1),
        ...                  ("next", "observation"): torch.ones(4, 3)}, [4])
        >>> nu(td)["model", "log_ratio"].shape
        torch.Size([4, 1])
        >>> log_ratio_of(nu, torch.zeros(4, 3), torch.zeros(4, 1), torch.ones(4, 3)).abs().max() <= 5.0
        tensor(True)
    """
    if obs_dim < 1 or act_dim < 1:
        raise ValueError(f"obs_dim and act_dim must be >= 1, got obs_dim={obs_dim}, act_dim={act_dim}")
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    net = BoundedLogRatioMLP(obs_dim, act_dim, hidden=hidden, bound=bound, activation=activation)
    return TensorDictModule(net, in_keys=[observation_key, action_key, next_observation_key], out_keys=[out_key])


def log_ratio_of(
    network: TensorDictModule, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor
) -> torch.Tensor:
    """Evaluate ``nu(x'|x, a)`` on tensors: ``[*B, D], [*B, A], [*B, D] -> [*B]``.

    The network's three in_keys are filled by position (observation, action, next observation), so
    the losses can evaluate it at next states that are not in the batch (e.g. samples from q_d).
    """
    in_keys = list(network.in_keys)
    if len(in_keys) != 3:
        raise ValueError(f"a log-ratio network reads exactly 3 in_keys (x, a, x'), got {in_keys}")
    td = TensorDict(dict(zip(in_keys, (obs, action, next_obs))), batch_size=obs.shape[:-1])
    return network(td).get(network.out_keys[0]).squeeze(-1)


def log_ratio_bound(network) -> float | None:
    """The ``bound`` of a network made by :func:`make_log_ratio_network` (``|nu| <= bound``), else None."""
    return getattr(getattr(network, "module", None), "bound", None)
