"""VMBPOLoss / VMBPOMFELoss: one LossModule owning every network, as SACLoss owns its actor and critics."""

import copy

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.objectives.utils import ValueEstimators

from torchrl_vmbpo.models import (
    DynamicsModel,
    make_log_ratio_network,
    make_q_value,
    make_state_value,
    make_tanh_gaussian_actor,
)
from torchrl_vmbpo.objectives import MStepLoss, VMBPOCriticLoss, VMBPOLoss, VMBPOMFELoss
from torchrl_vmbpo.objectives.vmbpo import LOSS_GROUPS

SPEC = Bounded(-1.0, 1.0, shape=(1,))


def _networks():
    pi, q_c = make_tanh_gaussian_actor(3, SPEC, hidden=(8,)), make_tanh_gaussian_actor(3, SPEC, hidden=(8,))
    return pi, q_c, make_q_value(3, 1, hidden=(8,)), make_state_value(3, hidden=(8,))


def vmbpo_loss(**kwargs):
    pi, q_c, q, v = _networks()
    return VMBPOLoss(
        pi,
        q_c,
        q,
        v,
        DynamicsModel(3, 1, hidden=(8,)),
        make_log_ratio_network(3, 1, hidden=(8,)),
        eta=1.0,
        gamma=0.99,
        mix=0.5,
        **kwargs,
    )


def mfe_loss(**kwargs):
    pi, q_c, q, v = _networks()
    return VMBPOMFELoss(pi, q_c, q, v, DynamicsModel(3, 1, hidden=(8,)), eta=1.0, gamma=0.99, mix=0.5, **kwargs)


def batch(n=6, dtype=torch.float32, obs="observation", reward="reward"):
    return TensorDict(
        {
            obs: torch.randn(n, 3, dtype=dtype),
            "action": torch.rand(n, 1, dtype=dtype) * 2 - 1,
            ("next", obs): torch.randn(n, 3, dtype=dtype),
            ("next", reward): torch.randn(n, 1, dtype=dtype),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        },
        [n],
    )


@pytest.mark.parametrize("make", [vmbpo_loss, mfe_loss])
def test_state_dict_holds_no_aliased_tensors_and_every_parameter(make):
    loss = make()
    state = loss.state_dict()
    pointers = [t.data_ptr() for t in state.values() if t.numel()]
    assert len(pointers) == len(set(pointers))
    assert {p.data_ptr() for p in loss.parameters()} <= set(pointers)


def test_forward_returns_the_out_keys_and_every_loss_has_a_group():
    loss = vmbpo_loss()
    out = loss(batch())
    assert sorted(out.keys()) == sorted(loss.out_keys)
    groups = loss.param_groups()
    assert all(LOSS_GROUPS[k] in groups for k in out.keys() if k.startswith("loss_"))


def test_each_loss_entry_reaches_only_its_own_group():
    loss = vmbpo_loss()
    out = loss(batch())
    groups = loss.param_groups()
    for key in [k for k in out.keys() if k.startswith("loss_")]:
        loss.zero_grad(set_to_none=True)
        out = loss(batch())
        out[key].backward()
        for name, params in groups.items():
            touched = any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
            assert touched == (name == LOSS_GROUPS[key]), (key, name)


def test_to_float64_covers_every_network():
    loss = vmbpo_loss().to(torch.float64)
    assert all(p.dtype == torch.float64 for p in loss.parameters())
    assert all(t.dtype == torch.float64 for t in loss.critic.target_value_network_params.values(True, True))
    out = loss(batch(dtype=torch.float64))
    assert all(v.dtype == torch.float64 for k, v in out.items() if k.startswith("loss_"))


def test_deepcopy_is_one_coherent_algorithm():
    loss = vmbpo_loss()
    twin = copy.deepcopy(loss)
    assert twin.actor.critic is twin.critic and twin.dynamics.critic is twin.critic
    assert twin.critic.variational_policy is twin.q_c and twin.m_step.variational_policy is twin.q_c
    assert twin.log_ratio.dynamics_model is twin.q_d
    with torch.no_grad():
        for p in twin.q_c.parameters():
            p.add_(1.0)
    assert not any(torch.equal(a, b) for a, b in zip(loss.q_c.parameters(), twin.q_c.parameters()))


def test_set_keys_reaches_every_objective():
    loss = vmbpo_loss()
    loss.set_keys(observation="obs", reward="rew")
    assert ("next", "rew") in loss.in_keys and ("next", "obs") in loss.in_keys and "observation" not in loss.in_keys
    assert loss.mle_dynamics.tensor_keys.reward == ("next", "rew")
    out = loss(batch(obs="obs", reward="rew"))
    assert all(torch.isfinite(v).all() for v in out.values())


def test_warm_up_and_m_step_schedule_are_arguments():
    loss = vmbpo_loss(weighted_fit_after=3, m_step_period=2, m_step_mode="copy")
    assert loss.dynamics_objective(2) is loss.mle_dynamics and loss.dynamics_objective(3) is loss.dynamics
    assert not loss.m_step_schedule(1)
    assert loss.m_step_schedule(2)
    assert all(torch.equal(a, b) for a, b in zip(loss.pi.parameters(), loss.q_c.parameters()))


def test_the_critic_accepts_td0_and_names_what_it_supports():
    critic = vmbpo_loss().critic
    assert critic.make_value_estimator(ValueEstimators.TD0, gamma=0.5) is critic and critic.gamma == 0.5
    with pytest.raises(ValueError, match="TD0"):
        critic.make_value_estimator(ValueEstimators.TDLambda)
    pi, q_c, _, _ = _networks()
    with pytest.raises(ValueError, match="no bootstrapped target"):
        MStepLoss(pi, q_c).make_value_estimator(ValueEstimators.TD0)
    assert isinstance(critic, VMBPOCriticLoss)
