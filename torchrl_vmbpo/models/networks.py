"""Factories for the actor, critic and ratio networks every algorithm shares.

All actors are TorchRL ``ProbabilisticActor``s over a tanh-squashed Gaussian: the MLP writes the
pre-tanh ``loc`` and ``scale`` (keys :data:`torchrl_vmbpo.keys.LOC`, ``SCALE``), so losses that need
the Gaussian itself (MPO's decoupled KL, VMBPO's M-step KL) read those keys directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator

from torchrl_vmbpo import keys

# exp-scale bounds of the pre-tanh Gaussian (as SAC implementations do): keeps log-probs finite.
_SCALE_LB = 1e-4


class OutputLinear(nn.Linear):
    """A network's last layer, computed in its weights' dtype (float32) even inside a bfloat16 autocast region.

    Under ``TrainConfig.precision="bf16"`` (training/precision.py) the hidden layers' matmuls run in
    bfloat16, whose 8-bit mantissa would round a Q-value of 300 to a multiple of 2: the output layer
    (a small share of the FLOPs) keeps values, log-probs and targets in float32. Outside autocast it is
    ``nn.Linear``; same parameters and state-dict keys.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))  # bf16 features -> the weights' own dtype


def fp32_output(mlp: nn.Sequential) -> nn.Sequential:
    """``mlp`` (a TorchRL ``MLP``) with its last ``nn.Linear`` turned into an :class:`OutputLinear`.

    The layer object itself changes class (OutputLinear adds no state): building a new layer would draw
    its initial weights and so shift every later draw of a seeded run.
    """
    last = mlp[-1]
    if type(last) is not nn.Linear:
        raise TypeError(f"fp32_output expects an MLP ending in nn.Linear, got {type(last).__name__}")
    last.__class__ = OutputLinear
    return mlp


def make_tanh_gaussian_actor(
    obs_dim: int,
    action_spec: Bounded,
    *,
    hidden: Sequence[int] = (256, 256),
    activation: type[nn.Module] = nn.ReLU,
    observation_key: str = keys.OBSERVATION,
) -> ProbabilisticActor:
    """A tanh-Gaussian policy pi(a|x) bounded to ``action_spec``.

    Example:
        >>> from torchrl.data import Bounded
        >>> spec = Bounded(-2.0, 2.0, shape=(1,))
        >>> actor = make_tanh_gaussian_actor(3, spec, hidden=(32, 32))
        >>> from tensordict import TensorDict
        >>> td = actor(TensorDict({"observation": torch.zeros(5, 3)}, [5]))
        >>> td["action"].shape, td["loc"].shape
        (torch.Size([5, 1]), torch.Size([5, 1]))
    """
    if not isinstance(action_spec, Bounded):
        raise TypeError(
            f"make_tanh_gaussian_actor needs a bounded continuous action spec (torchrl Bounded), "
            f"got {type(action_spec).__name__}"
        )
    act_dim = action_spec.shape[-1]
    net = nn.Sequential(
        fp32_output(
            MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=list(hidden), activation_class=activation)
        ),
        NormalParamExtractor(scale_mapping="biased_softplus_1.0", scale_lb=_SCALE_LB),
    )
    module = TensorDictModule(net, in_keys=[observation_key], out_keys=[keys.LOC, keys.SCALE])
    return ProbabilisticActor(
        module,
        in_keys=[keys.LOC, keys.SCALE],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={
            "low": action_spec.space.low,
            "high": action_spec.space.high,
            "tanh_loc": False,
        },
        return_log_prob=True,
        log_prob_key=keys.SAMPLE_LOG_PROB,
    )


def action_box_log_det(action_spec: Bounded) -> float:
    """``sum_i log((high_i - low_i) / 2)``: the log-Jacobian of the affine map from ``[-1, 1]^d`` onto the
    action box. TorchRL's ``TanhNormal`` (bounded by ``low`` / ``high``) gives the log-density of the
    raw action, so its entropy exceeds that of the action rescaled to ``[-1, 1]^d`` by this much.

    Example:
        >>> round(action_box_log_det(Bounded(-2.0, 2.0, shape=(3,))), 4)  # 3 log 2
        2.0794
    """
    low, high = action_spec.space.low, action_spec.space.high
    return float(torch.log((high - low) / 2).sum())


class ScaledOutput(nn.Module):
    """``scale * net(*inputs)``: a value network whose weights learn in units of ``1 / scale``.

    Why: Adam moves each weight by about its learning rate per step whatever the loss's scale, so a
    value network needing outputs ``scale`` times larger learns about ``scale`` times slower. VMBPO's
    values are ``eta`` times SAC's (``Q = eta r + ...``): with ``scale = eta`` the critic's weights
    see SAC's scale at ``alpha = 1 / eta`` and, Adam being invariant to the loss's scale, take the
    same steps (tests/objectives/test_vmbpo_sac_equivalence.py).
    """

    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"output scale must be > 0, got {scale}")
        self.net, self.scale = net, float(scale)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(*inputs)


def _value_net(
    in_features: int,
    hidden: Sequence[int],
    activation: type[nn.Module],
    output_scale: float,
    layer_norm: bool = False,
) -> nn.Module:
    # layer_norm: Linear -> LayerNorm -> activation in each hidden layer (RLPD's critic, Ball et al.
    # 2023): a normalised last hidden layer bounds |Q| by the last layer's weight norm, so a value
    # cannot run away along features that grow without bound off the data.
    norm = dict(norm_class=nn.LayerNorm, norm_kwargs=[{"normalized_shape": h} for h in hidden]) if layer_norm else {}
    net = fp32_output(
        MLP(in_features=in_features, out_features=1, num_cells=list(hidden), activation_class=activation, **norm)
    )
    return net if output_scale == 1.0 else ScaledOutput(net, output_scale)


def make_q_value(
    obs_dim: int,
    act_dim: int,
    *,
    hidden: Sequence[int] = (256, 256),
    activation: type[nn.Module] = nn.ReLU,
    out_key: str = "state_action_value",
    output_scale: float = 1.0,
    layer_norm: bool = False,
) -> ValueOperator:
    """Q(x, a): an MLP on the concatenated observation and action (times ``output_scale``, see
    :class:`ScaledOutput`); ``layer_norm`` normalises each hidden layer (``_value_net``)."""
    net = _value_net(obs_dim + act_dim, hidden, activation, output_scale, layer_norm)
    return ValueOperator(net, in_keys=[keys.OBSERVATION, keys.ACTION], out_keys=[out_key])


def make_state_value(
    obs_dim: int,
    *,
    hidden: Sequence[int] = (256, 256),
    activation: type[nn.Module] = nn.ReLU,
    out_key: str = "state_value",
    output_scale: float = 1.0,
    layer_norm: bool = False,
) -> ValueOperator:
    """V(x): an MLP on the observation (times ``output_scale``, see :class:`ScaledOutput`)."""
    net = _value_net(obs_dim, hidden, activation, output_scale, layer_norm)
    return ValueOperator(net, in_keys=[keys.OBSERVATION], out_keys=[out_key])
