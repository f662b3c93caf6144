"""The E-step's optional entropy constraint: H(q_c) >= target through a learned multiplier alpha_H.

Off (``target_entropy=None``) the critic is the paper's; on, eq. 24's prior and the actor's become
``prior - alpha_H log q_c`` and ``loss_entropy_weight`` is SAC's temperature loss on ``log alpha_H``.
"""

import math

import pytest
import torch
from tensordict import TensorDict
from test_vmbpo_critic import ConcatLinear, hand_made_batch
from torchrl.data import Bounded
from torchrl.modules import ValueOperator

from torchrl_vmbpo.algorithms import build_agent, default_config
from torchrl_vmbpo.algorithms.vmbpo import VMBPOSettings
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.vmbpo_actor import VMBPOActorLoss
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater:UserWarning")


def _critic(target_entropy=None, init=1.0, floor=None, log_det=0.0):
    spec = Bounded(-1.0, 1.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(1, spec, hidden=(4,)), make_tanh_gaussian_actor(1, spec, hidden=(4,))
    return VMBPOCriticLoss(
        ValueOperator(ConcatLinear(2), in_keys=["observation", "action"]),
        ValueOperator(ConcatLinear(1), in_keys=["observation"]),
        q_c,
        pi,
        eta=2.0,
        gamma=0.9,
        target_entropy=target_entropy,
        entropy_weight_init=init,
        entropy_weight_min=floor,
        entropy_log_det=log_det,
    )


def test_off_by_default_the_critic_has_no_multiplier_and_no_dual_loss():
    critic = _critic()
    assert critic.entropy_weight is None and not hasattr(critic, "log_entropy_weight")
    assert "loss_entropy_weight" not in critic(hand_made_batch()).keys()


def test_value_target_gains_minus_alpha_log_q_c():
    plain, constrained = _critic(), _critic(target_entropy=-1.0, init=0.7)
    constrained.load_state_dict(plain.state_dict(), strict=False)  # same Q, V
    constrained.__dict__["variational_policy"] = plain.variational_policy  # same q_c and pi
    constrained.__dict__["baseline_policy"] = plain.baseline_policy
    td = hand_made_batch()
    torch.manual_seed(3)
    y_plain, action, _, log_q_c = plain._value_target(td["observation"])
    torch.manual_seed(3)
    y, action_2, _, _ = constrained._value_target(td["observation"])
    torch.testing.assert_close(action_2, action)  # the same a~
    torch.testing.assert_close(y, y_plain - 0.7 * log_q_c, atol=1e-5, rtol=0.0)


@pytest.mark.parametrize("scale, grows", [(1e-3, True), (1.0, False)])
def test_the_multiplier_grows_below_the_target_entropy_and_shrinks_above(scale, grows):
    critic = _critic(target_entropy=-0.5, init=1.0)
    with torch.no_grad():  # q_c's log-std bias sets its spread: tiny (entropy << -0.5) or wide
        last = [m for m in critic.variational_policy.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.zero_()
        last.bias[1] = math.log(scale) if last.bias.numel() == 2 else last.bias[1]
    out = critic(hand_made_batch())
    out["loss_entropy_weight"].backward()
    grad = critic.log_entropy_weight.grad
    assert (grad < 0) if grows else (grad > 0)  # gradient descent: alpha_H up when the entropy is low
    others = [p for n, p in critic.named_parameters() if n != "log_entropy_weight"]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in others)  # the dual loss moves alpha_H only


def test_actor_loss_gains_alpha_log_q_c_and_sends_no_gradient_to_the_multiplier():
    critic = _critic(target_entropy=-1.0, init=0.5)
    actor = VMBPOActorLoss(critic.variational_policy, critic, critic.baseline_policy)
    td = hand_made_batch()
    torch.manual_seed(0)
    out = actor(td)
    out["loss_actor"].backward()
    assert critic.log_entropy_weight.grad is None
    critic.log_entropy_weight.data.fill_(math.log(1e-9))  # alpha_H ~ 0: the paper's actor loss
    torch.manual_seed(0)
    paper = actor(td)["loss_actor"]
    # E[log q_c - prior + alpha log q_c - Q] differs by alpha * E[log q_c] = -alpha * entropy
    assert out["loss_actor"].item() == pytest.approx(paper.item() - 0.5 * out["entropy"].item(), abs=1e-5)


def test_a_box_offset_moves_the_prior_by_a_constant_and_the_dual_as_a_shifted_target():
    raw, unit = _critic(target_entropy=-1.0, init=0.7), _critic(target_entropy=-1.0, init=0.7, log_det=2.0)
    log_pi, log_q_c = torch.tensor([-1.0, -3.0]), torch.tensor([0.5, -0.25])
    dist = raw.variational_policy.get_dist(TensorDict({"observation": torch.zeros(2, 1)}, [2]))
    mixed, prior = raw.e_step_prior(log_pi, log_q_c, dist)
    mixed_u, prior_u = unit.e_step_prior(log_pi, log_q_c, dist)
    torch.testing.assert_close(mixed_u, mixed)  # log pi and the KL estimate keep the raw density
    torch.testing.assert_close(prior_u, prior - 0.7 * 2.0)  # -alpha_H (log q_c + log_det)
    # the dual holds H_raw - log_det >= -1, i.e. H_raw >= 1: as a raw critic with target +1
    shifted = _critic(target_entropy=1.0, init=0.7)
    shifted.load_state_dict(unit.state_dict())
    shifted.__dict__.update(variational_policy=unit.variational_policy, baseline_policy=unit.baseline_policy)
    td = hand_made_batch()
    torch.manual_seed(5)
    dual_unit = unit(td)["loss_entropy_weight"]
    torch.manual_seed(5)
    torch.testing.assert_close(dual_unit, shifted(td)["loss_entropy_weight"])


@pytest.mark.parametrize("log_det", [math.inf, math.nan])
def test_a_non_finite_box_offset_is_refused(log_det):
    with pytest.raises(ValueError, match="entropy_log_det must be finite"):
        _critic(target_entropy=-1.0, log_det=log_det)


@pytest.mark.parametrize("units, expected", [("unit_box", math.log(2.0)), ("raw", 0.0)])
def test_the_vmbpo_setting_reads_the_entropy_on_the_unit_box_by_default(units, expected):
    assert VMBPOSettings().entropy_units == "unit_box"
    cfg = default_config(
        "vmbpo", "Pendulum-v1", hidden=(16, 16), model_hidden=(16,), batch_size=8, extra=dict(entropy_units=units)
    )
    agent = build_agent(cfg, make_env("Pendulum-v1"))  # torques in [-2, 2]: log 2 per dimension
    assert agent.critic.entropy_log_det == pytest.approx(expected)
    with pytest.raises(ValueError, match="extra.entropy_units"):
        VMBPOSettings(entropy_units="normalised")


def test_the_floor_clamps_alpha_h_after_a_step_and_is_a_no_op_above_it():
    critic = _critic(target_entropy=-1.0, init=0.5, floor=1e-3)
    critic.project_entropy_weight_()
    assert critic.entropy_weight.item() == pytest.approx(0.5)  # above the floor: untouched
    with torch.no_grad():
        critic.log_entropy_weight.fill_(math.log(1e-19))  # where the unfloored dual drifted on Reacher-v5
    critic.project_entropy_weight_()
    assert critic.entropy_weight.item() == pytest.approx(1e-3)
    unfloored = _critic(target_entropy=-1.0, init=0.5)
    with torch.no_grad():
        unfloored.log_entropy_weight.fill_(math.log(1e-19))
    unfloored.project_entropy_weight_()
    assert unfloored.entropy_weight.item() == pytest.approx(1e-19)
    _critic(floor=1e-3).project_entropy_weight_()  # no constraint: nothing to clamp


@pytest.mark.parametrize("floor", [0.0, -1e-3, 2.0])
def test_a_floor_outside_zero_to_the_initial_weight_is_refused(floor):
    with pytest.raises(ValueError, match=r"entropy_weight_min must be in \(0, entropy_weight_init=1.0\]"):
        _critic(target_entropy=-1.0, init=1.0, floor=floor)


def test_the_agent_update_keeps_alpha_h_at_its_floor():
    cfg = default_config("vmbpo", "Pendulum-v1", hidden=(16, 16), model_hidden=(16,), batch_size=8)
    agent = build_agent(cfg, make_env("Pendulum-v1"))
    floor = VMBPOSettings().eta * VMBPOSettings().entropy_weight_min
    with torch.no_grad():
        agent.critic.log_entropy_weight.fill_(math.log(floor) - 5.0)
    agent.update(_pendulum_batch())
    assert agent.critic.entropy_weight.item() == pytest.approx(floor)


def _pendulum_batch():
    return TensorDict(
        {
            "observation": torch.randn(8, 3),
            "action": torch.rand(8, 1) * 4 - 2,
            ("next", "observation"): torch.randn(8, 3),
            ("next", "reward"): -torch.rand(8, 1),
            ("next", "done"): torch.zeros(8, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(8, 1, dtype=torch.bool),
        },
        [8],
    )


def test_the_vmbpo_setting_builds_the_constraint_at_the_env_target_and_trains_it():
    cfg = default_config(
        "vmbpo", "Pendulum-v1", hidden=(16, 16), model_hidden=(16,), batch_size=8, extra=dict(entropy_constraint=True)
    )
    agent = build_agent(cfg, make_env("Pendulum-v1"))
    assert agent.critic.target_entropy == cfg.target_entropy == -1.0
    assert agent.critic.entropy_weight.item() == pytest.approx(VMBPOSettings().eta * cfg.alpha_init)
    assert "loss.critic.log_entropy_weight" in agent.state_dict()  # the agent's VMBPOLoss owns it
    before = agent.critic.log_entropy_weight.detach().clone()
    metrics = agent.update(_pendulum_batch())
    assert "entropy_weight" in metrics.keys() and not torch.equal(agent.critic.log_entropy_weight, before)
    with pytest.raises(ValueError, match="extra.entropy_constraint"):
        VMBPOSettings(entropy_constraint="yes")
