"""critic_layer_norm: LayerNorm in the hidden layers of every agent's Q and V."""

import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded

from torchrl_vmbpo.algorithms.mpo import MPOAgent, MPOSettings
from torchrl_vmbpo.algorithms.sac import SACAgent
from torchrl_vmbpo.algorithms.vmbpo import VMBPOAgent, VMBPOSettings
from torchrl_vmbpo.algorithms.vmbpo_mfe import VMBPOMFEAgent, VMBPOMFESettings
from torchrl_vmbpo.envs.termination import never_done
from torchrl_vmbpo.models.networks import make_q_value, make_state_value
from torchrl_vmbpo.training.config import TrainConfig


def _batch(n=6, obs_dim=3, low=-20.0, high=20.0, act_dim=2):
    return TensorDict(
        {"observation": torch.randn(n, obs_dim), "action": torch.empty(n, act_dim).uniform_(low, high)}, [n]
    )


def test_layer_norm_sits_before_each_hidden_activation_and_is_off_by_default():
    for make in (
        lambda **k: make_q_value(3, 2, hidden=(8, 16), **k),
        lambda **k: make_state_value(3, hidden=(8, 16), **k),
    ):
        norms = [m for m in make(layer_norm=True).modules() if isinstance(m, nn.LayerNorm)]
        assert [n.normalized_shape for n in norms] == [(8,), (16,)]
        assert not any(isinstance(m, nn.LayerNorm) for m in make().modules())


def test_layer_norm_bounds_q_by_the_last_layer_whatever_the_input_scale():
    # With the last hidden layer normalised (then ReLU), |Q| <= ||w_last|| * sqrt(width) + |b|:
    # inputs a thousand times larger cannot take Q beyond it (a plain MLP's Q grows with them).
    torch.manual_seed(0)
    q = make_q_value(3, 2, hidden=(8, 16), layer_norm=True)
    last = q.module[-1]
    bound = last.weight.norm() * 16**0.5 + last.bias.abs().sum()
    td = _batch(n=64, low=-1e3, high=1e3)
    td["observation"] = td["observation"] * 1e3
    assert q(td.clone())["state_action_value"].abs().max() <= bound
    plain = make_q_value(3, 2, hidden=(8, 16))
    plain.module[-1].load_state_dict(last.state_dict())  # the same last layer, no normalisation
    assert plain(td.clone())["state_action_value"].abs().max() > bound


def _critics(agent):
    # TorchRL losses keep their networks outside nn.Module's tree (functional parameters); the EM
    # agents' losses hold theirs in a critic sub-loss.
    holder = getattr(agent.loss, "critic", agent.loss)
    return holder.qvalue_network, getattr(holder, "value_network", None)


def _has(module, cls):
    return module is not None and any(isinstance(m, cls) for m in module.modules())


def _agents(cfg, spec):
    return (
        SACAgent(cfg, 3, spec),
        MPOAgent(cfg, 3, spec, MPOSettings()),
        VMBPOAgent(cfg, 3, spec, termination_fn=never_done, settings=VMBPOSettings()),
        VMBPOMFEAgent(cfg, 3, spec, VMBPOMFESettings(), termination_fn=never_done),
    )


def test_every_agent_with_a_critic_builds_it_with_the_options():
    spec = Bounded(-20.0, 20.0, shape=(2,))
    cfg = TrainConfig(hidden=(8,), model_hidden=(8,), critic_layer_norm=True)
    for agent in _agents(cfg, spec):
        q, v = _critics(agent)
        assert _has(q, nn.LayerNorm), type(agent).__name__
        assert v is None or _has(v, nn.LayerNorm)
    for agent in _agents(TrainConfig(hidden=(8,), model_hidden=(8,)), spec):
        assert not any(_has(net, nn.LayerNorm) for net in _critics(agent)), type(agent).__name__
