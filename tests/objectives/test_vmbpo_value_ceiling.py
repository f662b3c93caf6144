"""VMBPOCriticLoss's value ceiling: the bootstrap clipped at (eta r_high + b + c) / (1 - gamma), closed forms."""

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ValueOperator

from tests.objectives.test_vmbpo_critic import ETA, GAMMA, ConcatLinear, hand_made_batch, hand_made_critic
from torchrl_vmbpo.models.log_ratio import make_log_ratio_network
from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater:UserWarning")
BOUND = 0.5


class BoundedTenthOfNextState(nn.Module):
    """``nu(x, a, x') = 0.1 x'`` carrying a declared ``bound`` (read by ``log_ratio_bound``)."""

    bound = BOUND

    def forward(self, obs, action, next_obs):
        return 0.1 * next_obs


def ceiling_critic(**kwargs):
    """hand_made_critic's networks (target V' = 2 x + 0.5, nu = 0.1 x' with |nu| <= 0.5), ceiling on."""
    critic = hand_made_critic()
    nu = TensorDictModule(
        BoundedTenthOfNextState(), ["observation", "action", ("next", "observation")], [("model", "log_ratio")]
    )
    clipped = VMBPOCriticLoss(
        ValueOperator(ConcatLinear(2), in_keys=["observation", "action"]),
        ValueOperator(ConcatLinear(1), in_keys=["observation"]),
        critic.variational_policy,
        critic.baseline_policy,
        nu,
        eta=ETA,
        gamma=kwargs.pop("gamma", GAMMA),
        value_ceiling=True,
        **kwargs,
    )
    missing, unexpected = clipped.load_state_dict(critic.state_dict(), strict=False)  # hand_made_critic's weights
    assert not unexpected and all("reward_high" in k or "entropy" in k for k in missing)
    return clipped


def batch_with_rewards(rewards):
    td = hand_made_batch()
    td["next", "reward"] = torch.tensor(rewards).unsqueeze(-1)
    return td


def test_bootstrap_is_clipped_at_the_discounted_largest_step():
    critic = ceiling_critic()
    td = batch_with_rewards([-0.2, -0.5, -1.0])
    # ceiling (eta r_high + b) / (1 - gamma) = (2 * -0.2 + 0.5) / 0.1 = 1; V'(x') = 4.5, 0.5, 6.5
    y, nu = critic.q_target(td)
    # 2 (-0.2) + 0.9 min(4.5, 1) - 0.2 ; 2 (-0.5) + 0.9 * 0.5 - 0 ; terminated: 2 (-1) - 0.3
    torch.testing.assert_close(y, torch.tensor([0.3, -0.55, -2.3]))
    out = critic(td)
    torch.testing.assert_close(out["value_ceiling"], torch.tensor(1.0))
    torch.testing.assert_close(out["value_clip_fraction"], torch.tensor(2.0 / 3.0))


def test_a_high_enough_ceiling_leaves_the_target_unchanged():
    critic, plain = ceiling_critic(), hand_made_critic()
    td = hand_made_batch()  # r_high = 1: ceiling (2 + 0.5) / 0.1 = 25 above every V'(x')
    plain.__dict__["log_ratio_network"] = critic.log_ratio_network
    torch.testing.assert_close(critic.q_target(td)[0], plain.q_target(td)[0])


def test_r_high_is_the_running_max_of_training_batches_and_is_saved():
    critic = ceiling_critic()
    critic.q_target(batch_with_rewards([-0.2, -0.5, -1.0]))
    assert critic.reward_high.item() == -math.inf  # reading a target does not train the ceiling
    critic(batch_with_rewards([-0.2, -0.5, -1.0]))
    assert critic.reward_high.item() == pytest.approx(-0.2)
    low = batch_with_rewards([-5.0, -5.0, -5.0])  # alone: ceiling (2 * -5 + 0.5) / 0.1 = -95
    assert critic(low)["value_ceiling"].item() == pytest.approx(1.0)  # max(-0.2, -5) still rules
    assert critic.reward_high.item() == pytest.approx(-0.2)
    resumed = ceiling_critic()
    resumed.load_state_dict(critic.state_dict())
    assert resumed.reward_high.item() == pytest.approx(-0.2)


def test_entropy_bonus_raises_the_ceiling_only_while_the_entropy_is_positive():
    critic = ceiling_critic(target_entropy=-1.0, entropy_weight_init=3.0, bootstrap="action_value")
    b = critic._batch(batch_with_rewards([-0.2, -0.5, -1.0]))
    # log q_c at the x' draws -1 and -2: entropy estimate 1.5, bonus 3 * 1.5 a step
    ceiling = critic._value_ceiling(b, torch.tensor([-1.0, -2.0]))
    assert ceiling.item() == pytest.approx((2 * -0.2 + 0.5 + 3.0 * 1.5) / 0.1)
    # negative entropy (log q_c > 0): no bonus
    assert critic._value_ceiling(b, torch.tensor([1.0, 2.0])).item() == pytest.approx(1.0)


def test_the_entropy_bonus_reads_the_unit_box_entropy():
    critic = ceiling_critic(target_entropy=-1.0, entropy_weight_init=3.0, bootstrap="action_value", entropy_log_det=0.5)
    b = critic._batch(batch_with_rewards([-0.2, -0.5, -1.0]))
    # raw entropy estimate 1.5, on the unit box 1.5 - 0.5 = 1
    assert critic._value_ceiling(b, torch.tensor([-1.0, -2.0])).item() == pytest.approx((2 * -0.2 + 0.5 + 3.0) / 0.1)


def test_no_discount_means_no_ceiling():
    critic = ceiling_critic(gamma=1.0)
    assert critic(batch_with_rewards([-0.2, -0.5, -1.0]))["value_ceiling"].item() == math.inf


def test_an_unbounded_ratio_network_is_refused():
    critic = hand_made_critic()  # its nu declares no bound
    with pytest.raises(ValueError, match="value_ceiling needs a bounded log-ratio network"):
        VMBPOCriticLoss(
            ValueOperator(ConcatLinear(2), in_keys=["observation", "action"]),
            ValueOperator(ConcatLinear(1), in_keys=["observation"]),
            critic.variational_policy,
            critic.baseline_policy,
            critic.log_ratio_network,
            eta=ETA,
            gamma=GAMMA,
            value_ceiling=True,
        )


def test_real_networks_report_the_ceiling():
    spec = Bounded(-2.0, 2.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(3, spec, hidden=(8,)), make_tanh_gaussian_actor(3, spec, hidden=(8,))
    critic = VMBPOCriticLoss(
        make_q_value(3, 1, hidden=(8,)),
        make_state_value(3, hidden=(8,)),
        q_c,
        pi,
        make_log_ratio_network(3, 1, hidden=(8,), bound=BOUND),
        eta=ETA,
        gamma=GAMMA,
        value_ceiling=True,
        target_entropy=-1.0,
        bootstrap="action_value",
    )
    td = TensorDict(
        {
            "observation": torch.randn(5, 3),
            "action": torch.rand(5, 1) * 4 - 2,
            ("next", "observation"): torch.randn(5, 3),
            ("next", "reward"): -torch.rand(5, 1),
            ("next", "terminated"): torch.zeros(5, 1, dtype=torch.bool),
        },
        [5],
    )
    out = critic(td)
    assert {"value_ceiling", "value_clip_fraction"} <= set(out.keys()) and set(critic.out_keys) >= {"value_ceiling"}
    assert out["value_ceiling"].item() >= (ETA * td["next", "reward"].max().item() + BOUND) / (1 - GAMMA) - 1e-4


def test_only_real_rows_raise_the_ceiling():
    critic = ceiling_critic()
    td = batch_with_rewards([-0.2, 3.0, -1.0])
    td["model", "is_real"] = torch.tensor([True, False, True])  # the model row's +3 is not trusted
    out = critic(td)
    assert out["value_ceiling"].item() == pytest.approx(1.0)  # (2 * -0.2 + 0.5) / 0.1
    assert critic.reward_high.item() == pytest.approx(-0.2)


def test_no_real_reward_yet_means_no_ceiling():
    critic = ceiling_critic()
    td = batch_with_rewards([-0.2, -0.5, -1.0])
    td["model", "is_real"] = torch.zeros(3, dtype=torch.bool)
    out = critic(td)
    assert out["value_ceiling"].item() == math.inf and out["value_clip_fraction"].item() == 0.0
    assert critic.reward_high.item() == -math.inf
    plain = hand_made_critic()
    plain.__dict__["log_ratio_network"] = critic.log_ratio_network
    torch.testing.assert_close(critic.q_target(td)[0], plain.q_target(td)[0])
