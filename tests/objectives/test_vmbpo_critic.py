"""VMBPOCriticLoss (eqs. 22-24): targets and losses equal hand-computed values on a hand-made batch."""

import math
import warnings

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ValueOperator
from torchrl.objectives import SoftUpdate

from torchrl_vmbpo.models.log_ratio import make_log_ratio_network
from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss

ETA, GAMMA = 2.0, 0.9
pytestmark = pytest.mark.filterwarnings("ignore:No target network updater:UserWarning")


class ConcatLinear(nn.Module):
    """``w . [x, a, ...] + b`` over its concatenated inputs."""

    def __init__(self, in_features):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, in_features))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, *inputs):
        return torch.cat(inputs, -1) @ self.weight.T + self.bias


class TenthOfNextState(nn.Module):
    """A hand-checkable nu: ``nu(x, a, x') = 0.1 x'``."""

    def forward(self, obs, action, next_obs):
        return 0.1 * next_obs


def hand_made_critic(log_ratio=True, bootstrap="value"):
    spec = Bounded(-1.0, 1.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(1, spec, hidden=(4,)), make_tanh_gaussian_actor(1, spec, hidden=(4,))
    nu = TensorDictModule(
        TenthOfNextState(), ["observation", "action", ("next", "observation")], [("model", "log_ratio")]
    )
    critic = VMBPOCriticLoss(
        ValueOperator(ConcatLinear(2), in_keys=["observation", "action"]),
        ValueOperator(ConcatLinear(1), in_keys=["observation"]),
        q_c,
        pi,
        nu if log_ratio else None,
        eta=ETA,
        gamma=GAMMA,
        num_qvalue_nets=2,
        bootstrap=bootstrap,
    )
    with torch.no_grad():
        # Q_1 = x + 2 a + 0.5, Q_2 = 0.5 x - a + 1; V = 3 x - 1; target V' = 2 x + 0.5.
        critic.qvalue_network_params["module", "weight"].copy_(torch.tensor([[[1.0, 2.0]], [[0.5, -1.0]]]))
        critic.qvalue_network_params["module", "bias"].copy_(torch.tensor([[0.5], [1.0]]))
        critic.value_network_params["module", "weight"].copy_(torch.tensor([[3.0]]))
        critic.value_network_params["module", "bias"].copy_(torch.tensor([-1.0]))
        with warnings.catch_warnings():  # reading targets before an updater exists warns
            warnings.simplefilter("ignore", UserWarning)
            critic.target_value_network_params["module", "weight"].copy_(torch.tensor([[2.0]]))
            critic.target_value_network_params["module", "bias"].copy_(torch.tensor([0.5]))
            # target Q'_1 = 2 x + a, Q'_2 = x - a + 0.5 (read only by bootstrap="action_value")
            critic.target_qvalue_network_params["module", "weight"].copy_(torch.tensor([[[2.0, 1.0]], [[1.0, -1.0]]]))
            critic.target_qvalue_network_params["module", "bias"].copy_(torch.tensor([[0.0], [0.5]]))
    return critic


def policy_log_ratio(critic, obs, action):
    """``log q_c(a|x) - log pi(a|x)`` by hand, in float64: the pre-tanh Gaussians at ``atanh(a)`` (the
    tanh Jacobians cancel)."""
    u = torch.atanh(action.double())
    log_ratio = 0.0
    for policy, sign in ((critic.variational_policy, 1.0), (critic.baseline_policy, -1.0)):
        dist = policy.get_dist(TensorDict({"observation": obs}, [obs.shape[0]]))
        normal = torch.distributions.Normal(dist.loc.double(), dist.scale.double())
        log_ratio = log_ratio + sign * normal.log_prob(u).sum(-1)
    return log_ratio


def hand_made_batch():
    # rows: a plain step; a time-limit truncation (done, not terminated: still bootstraps); a termination.
    return TensorDict(
        {
            "observation": torch.tensor([[1.0], [-1.0], [0.0]]),
            "action": torch.tensor([[0.5], [-0.5], [0.2]]),
            ("next", "observation"): torch.tensor([[2.0], [0.0], [3.0]]),
            ("next", "reward"): torch.tensor([[1.0], [0.5], [-1.0]]),
            ("next", "done"): torch.tensor([[False], [True], [True]]),
            ("next", "terminated"): torch.tensor([[False], [False], [True]]),
        },
        [3],
    )


def test_q_target_is_eta_r_plus_discounted_target_value_minus_nu():
    y, nu = hand_made_critic().q_target(hand_made_batch())
    # 2*1 + 0.9*(2*2 + 0.5) - 0.1*2 ;  2*0.5 + 0.9*(2*0 + 0.5) - 0 ;  2*(-1) + 0 - 0.1*3
    torch.testing.assert_close(y, torch.tensor([5.85, 1.45, -2.3]))
    torch.testing.assert_close(nu, torch.tensor([0.2, 0.0, 0.3]))


class ConstantNu(nn.Module):
    """``nu(x, a, x') = 0.7`` everywhere."""

    def forward(self, obs, action, next_obs):
        return torch.full_like(next_obs[..., :1], 0.7)


def test_real_rows_get_no_nu_in_the_q_target():
    # eqs. 22-23 hold for x' ~ q_d; on x' ~ p, -nu would average +KL(p || q_d): real rows take nu = 0.
    critic = hand_made_critic()
    critic.__dict__["log_ratio_network"] = TensorDictModule(
        ConstantNu(), ["observation", "action", ("next", "observation")], [("model", "log_ratio")]
    )
    td = hand_made_batch()
    td["model", "is_real"] = torch.tensor([True, False, True])
    y, nu = critic.q_target(td)
    # eta r + gamma (1 - terminated) V'(x'), minus 0.7 on the model row only
    torch.testing.assert_close(y, torch.tensor([2.0 + 0.9 * 4.5, 1.0 + 0.9 * 0.5 - 0.7, -2.0]))
    torch.testing.assert_close(nu, torch.tensor([0.0, 0.7, 0.0]))
    # without the flag every row is a model row
    del td["model", "is_real"]
    torch.testing.assert_close(critic.q_target(td)[1], torch.full((3,), 0.7))


def test_a_recorded_nu_replaces_the_network_and_real_rows_still_get_none():
    # nu recorded as the row was imagined (the nu of the q_d that drew x'): the target subtracts it, not
    # the critic's network (0.1 x' = 0.2, 0.0, 0.3 here); real rows still take 0; [*B] and [*B, 1] both read.
    td = hand_made_batch()
    td["model", "log_ratio"] = torch.tensor([[0.4], [-0.25], [0.1]])
    td["model", "is_real"] = torch.tensor([False, False, True])
    y, nu = hand_made_critic().q_target(td)
    torch.testing.assert_close(nu, torch.tensor([0.4, -0.25, 0.0]))
    torch.testing.assert_close(y, torch.tensor([2.0 + 0.9 * 4.5 - 0.4, 1.0 + 0.9 * 0.5 + 0.25, -2.0]))
    td["model", "log_ratio"] = torch.tensor([0.4, -0.25, 0.1])
    torch.testing.assert_close(hand_made_critic().q_target(td)[1], nu)
    # a critic without a ratio network treats q_d as the true dynamics: nu = 0, recorded or not
    torch.testing.assert_close(hand_made_critic(log_ratio=False).q_target(td)[1], torch.zeros(3))


def test_without_a_ratio_network_nu_is_zero():
    y, _ = hand_made_critic(log_ratio=False).q_target(hand_made_batch())
    torch.testing.assert_close(y, torch.tensor([5.85 + 0.2, 1.45, -2.3 + 0.3]))


def test_action_value_bootstrap_uses_the_target_twin_minimum_at_a_fresh_next_action():
    critic = hand_made_critic(bootstrap="action_value")
    td = hand_made_batch()
    torch.manual_seed(3)
    y, nu = critic.q_target(td)
    torch.manual_seed(3)  # the same a' ~ q_c(.|x'), drawn the library's way
    next_obs = td["next", "observation"]
    dist_c = critic.variational_policy.get_dist(TensorDict({"observation": next_obs}, [3]))
    _, a_next, _ = fv.rsample_with_preimage(dist_c)
    log_ratio = policy_log_ratio(critic, next_obs, a_next)
    x1, a1 = next_obs.double().squeeze(-1), a_next.double().squeeze(-1)
    soft = torch.minimum(2 * x1 + a1, x1 - a1 + 0.5) - log_ratio  # min_k Q'_k(x', a') - log q_c/pi
    reward, not_terminated = torch.tensor([1.0, 0.5, -1.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = ETA * reward + GAMMA * not_terminated * soft - 0.1 * x1
    torch.testing.assert_close(y.double(), expected.double(), atol=1e-4, rtol=0.0)
    torch.testing.assert_close(nu, torch.tensor([0.2, 0.0, 0.3]))
    # V no longer enters y_Q: the default bootstrap (V'(x') = 2 x' + 0.5) gives other targets
    assert not torch.allclose(y, torch.tensor([5.85, 1.45, -2.3]))
    assert y[2].item() == pytest.approx(-2.3)  # a termination bootstraps from neither


def test_q_loss_sums_each_copy_squared_error_over_the_whole_batch():
    critic = hand_made_critic()
    loss, info = critic.qvalue_loss(hand_made_batch())
    # Q_1 = [2.5, -1.5, 0.9], Q_2 = [1.0, 1.0, 0.8] against y = [5.85, 1.45, -2.3]
    q1 = (3.35**2 + 2.95**2 + 3.2**2) / 3
    q2 = (4.85**2 + 0.45**2 + 3.1**2) / 3
    assert loss.item() == pytest.approx(q1 + q2, rel=1e-5)
    assert info["q_target"].item() == pytest.approx((5.85 + 1.45 - 2.3) / 3, rel=1e-5)


def test_value_target_uses_a_fresh_q_c_action_the_twin_minimum_and_the_policy_log_ratio():
    critic = hand_made_critic()
    td = hand_made_batch()
    y, action, _ = critic.value_target(td)
    obs = td["observation"]
    assert not torch.allclose(action, td["action"])  # a~ is drawn afresh, not the batch's action
    log_ratio = policy_log_ratio(critic, obs, action)
    q_min = torch.minimum(obs + 2 * action + 0.5, 0.5 * obs - action + 1.0).squeeze(-1)
    torch.testing.assert_close(y.double(), q_min.double() - log_ratio, atol=1e-4, rtol=0.0)

    # forward draws the same a~ under the same seed: loss_value = mean (V(x) - y_V)^2, V = 3x - 1
    torch.manual_seed(7)
    out = critic(td)
    torch.manual_seed(7)
    y, _, _ = critic.value_target(td)
    v = 3 * obs.squeeze(-1) - 1
    assert out["loss_value"].item() == pytest.approx(((v - y) ** 2).mean().item(), rel=1e-5)


def test_value_target_with_a_saturated_q_c_stays_finite():
    critic = hand_made_critic()
    with torch.no_grad():  # push q_c's pre-tanh mean to ~25: tanh saturates in float32
        last = [m for m in critic.variational_policy.modules() if isinstance(m, nn.Linear)][-1]
        last.bias[0] = 25.0
    y, action, log_ratio = critic.value_target(hand_made_batch())
    assert torch.isfinite(y).all() and torch.isfinite(log_ratio).all()
    # Scored at u ~ 25: log q_c ~ -1 and log pi(u) ~ -u^2/2, a ratio in the hundreds. Inverting the
    # clamped action instead would put u near atanh(1 - eps) ~ 8 and give a large negative ratio.
    assert (log_ratio > 100).all()


def test_soft_update_moves_both_targets_once_per_step():
    critic = hand_made_critic()
    updater = SoftUpdate(critic, tau=0.25)
    before_v = critic.target_value_network_params["module", "weight"].clone()
    online_v = critic.value_network_params["module", "weight"].detach().clone()
    before_q = critic.target_qvalue_network_params["module", "weight"].clone()
    online_q = critic.qvalue_network_params["module", "weight"].detach().clone()
    updater.step()
    torch.testing.assert_close(
        critic.target_value_network_params["module", "weight"], 0.75 * before_v + 0.25 * online_v
    )
    torch.testing.assert_close(
        critic.target_qvalue_network_params["module", "weight"], 0.75 * before_q + 0.25 * online_q
    )


def test_losses_reach_only_their_own_network():
    critic = hand_made_critic()
    out = critic(hand_made_batch())
    q_params = list(critic.qvalue_network_params.values(True, True))
    v_params = list(critic.value_network_params.values(True, True))
    borrowed = [*critic.variational_policy.parameters(), *critic.baseline_policy.parameters()]
    grads_q = torch.autograd.grad(
        out["loss_qvalue"], q_params + v_params + borrowed, allow_unused=True, retain_graph=True
    )
    grads_v = torch.autograd.grad(out["loss_value"], q_params + v_params + borrowed, allow_unused=True)
    n_q, n_v = len(q_params), len(v_params)
    assert all(g is not None for g in grads_q[:n_q]) and all(g is None for g in grads_q[n_q:])
    assert all(g is None for g in grads_v[:n_q]) and all(g is not None for g in grads_v[n_q : n_q + n_v])
    assert all(g is None for g in grads_v[n_q + n_v :])
    owned = {id(p) for p in critic.parameters()}
    assert owned == {id(p) for p in q_params + v_params}  # borrowed policies are not parameters here


def test_actions_near_the_bounds_and_real_networks_run_end_to_end():
    spec = Bounded(-2.0, 2.0, shape=(2,))
    q_c, pi = make_tanh_gaussian_actor(3, spec, hidden=(8,)), make_tanh_gaussian_actor(3, spec, hidden=(8,))
    critic = VMBPOCriticLoss(
        make_q_value(3, 2, hidden=(8,)),
        make_state_value(3, hidden=(8,)),
        q_c,
        pi,
        make_log_ratio_network(3, 2, hidden=(8,)),
        eta=5.0,
        gamma=0.99,
    )
    td = TensorDict(
        {
            "observation": torch.randn(5, 3),
            "action": torch.tensor([[2.0, -2.0]]).expand(5, 2),
            ("next", "observation"): torch.randn(5, 3),
            ("next", "reward"): torch.randn(5, 1),
            ("next", "terminated"): torch.zeros(5, 1, dtype=torch.bool),
        },
        [5],
    )
    out = critic(td)
    assert all(math.isfinite(v.item()) for v in out.values())


def test_missing_keys_are_named_with_the_accepted_ones():
    critic = hand_made_critic()
    td = hand_made_batch().exclude(("next", "terminated"))
    with pytest.raises(KeyError, match="terminated"):
        critic(td)
    critic.set_keys(terminated="done")  # SACLoss's contract: named relative to "next"
    assert torch.isfinite(critic(td)["loss_qvalue"])


def test_non_finite_inputs_are_rejected():
    td = hand_made_batch()
    td["next", "reward"][0] = float("nan")
    with pytest.raises(ValueError, match="reward"):
        hand_made_critic()(td)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eta": 0.0}, "eta"),
        ({"gamma": 1.5}, "gamma"),
        ({"num_qvalue_nets": 0}, "num_qvalue_nets"),
        ({"loss_function": "huber"}, "loss_function"),
        ({"bootstrap": "v_prime"}, "bootstrap"),
    ],
)
def test_constructor_rejects_bad_hyper_parameters(kwargs, match):
    spec = Bounded(-1.0, 1.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(2, spec, hidden=(4,)), make_tanh_gaussian_actor(2, spec, hidden=(4,))
    args = dict(eta=1.0, gamma=0.9) | kwargs
    with pytest.raises(ValueError, match=match):
        VMBPOCriticLoss(make_q_value(2, 1, hidden=(4,)), make_state_value(2, hidden=(4,)), q_c, pi, **args)


def test_constructor_rejects_networks_with_the_wrong_inputs():
    spec = Bounded(-1.0, 1.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(2, spec, hidden=(4,)), make_tanh_gaussian_actor(2, spec, hidden=(4,))
    with pytest.raises(ValueError, match="qvalue_network"):
        VMBPOCriticLoss(make_state_value(2, hidden=(4,)), make_state_value(2, hidden=(4,)), q_c, pi, eta=1.0, gamma=0.9)
    with pytest.raises(ValueError, match="log_ratio_network"):
        VMBPOCriticLoss(
            make_q_value(2, 1, hidden=(4,)),
            make_state_value(2, hidden=(4,)),
            q_c,
            pi,
            make_state_value(2, hidden=(4,)),
            eta=1.0,
            gamma=0.9,
        )


def critic_without_v(constant=1.5, value_samples=8):
    """A critic with no V network, one Q copy: Q' = ``constant``, the online Q = ``constant - 1``; q_c != pi."""
    spec = Bounded(-1.0, 1.0, shape=(1,))
    torch.manual_seed(3)
    q_c, pi = make_tanh_gaussian_actor(1, spec, hidden=(4,)), make_tanh_gaussian_actor(1, spec, hidden=(4,))
    critic = VMBPOCriticLoss(
        ValueOperator(ConcatLinear(2), in_keys=["observation", "action"]),
        None,
        q_c,
        pi,
        eta=ETA,
        gamma=GAMMA,
        num_qvalue_nets=1,
        bootstrap="action_value",
        value_samples=value_samples,
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        critic.target_qvalue_network_params["module", "bias"].fill_(constant)
        critic.qvalue_network_params["module", "bias"].fill_(constant - 1.0)
    return critic


def gaussian_kl(critic, obs):
    """KL(q_c || pi) of the pre-tanh Gaussians at ``obs``, in closed form (float64)."""
    td = TensorDict({"observation": obs}, [obs.shape[0]])
    c, p = critic.variational_policy.get_dist(td), critic.baseline_policy.get_dist(td)
    normal = torch.distributions.Normal
    kl = torch.distributions.kl_divergence(
        normal(c.loc.double(), c.scale.double()), normal(p.loc.double(), p.scale.double())
    )
    return kl.sum(-1)


def test_without_v_the_state_value_is_eq24s_expectation_by_monte_carlo():
    # Q' = 1.5 everywhere: eq. 24's soft value is 1.5 - KL(q_c || pi), in closed form.
    obs = torch.tensor([[1.0], [-2.0], [0.5]])
    critic = critic_without_v(value_samples=40_000)
    torch.manual_seed(0)
    value = critic.state_value(obs, target=True)
    expected = 1.5 - gaussian_kl(critic, obs)
    assert value.shape == (3,)
    torch.testing.assert_close(value.double(), expected, atol=0.02, rtol=0)
    online = critic.state_value(obs)  # the online Q (constant 0.5)
    torch.testing.assert_close(online.double(), expected - 1.0, atol=0.02, rtol=0)
    # Monte Carlo: the estimate's spread over repeats falls as 1 / sqrt(value_samples)
    repeats = obs.expand(2000, 3, 1)
    spread_4 = critic_without_v(value_samples=4).monte_carlo_value(repeats).std(0)
    spread_16 = critic_without_v(value_samples=16).monte_carlo_value(repeats).std(0)
    ratio = spread_4 / spread_16
    assert (spread_16 > 0).all() and ((ratio > 1.7) & (ratio < 2.3)).all(), ratio


def test_monte_carlo_value_chunks_and_keeps_the_batch_shape():
    critic = critic_without_v(value_samples=3)
    obs = torch.randn(5, 7, 1)
    torch.manual_seed(1)
    whole = critic.monte_carlo_value(obs)
    torch.manual_seed(1)
    chunked = critic.monte_carlo_value(obs, chunk=3 * 4)  # 4 states a pass: 9 passes, another draw order
    assert whole.shape == chunked.shape == (5, 7)
    # Q' constant: each row's value is 1.5 - its own log-ratio average, so chunks change only the draws
    torch.testing.assert_close(whole.mean(), chunked.mean(), atol=0.5, rtol=0)


def test_without_v_there_is_no_loss_value_and_no_gradient_reaches_q_through_the_estimate():
    critic = critic_without_v()
    out = critic(hand_made_batch())
    assert "loss_value" not in out.keys() and "value" not in out.keys()
    assert set(out.keys()) == set(critic.out_keys)
    assert not any("value_network" in name and "qvalue" not in name for name, _ in critic.named_parameters())
    value = critic.state_value(torch.randn(4, 1), target=False)
    assert not value.requires_grad
    with pytest.raises(ValueError, match="without a value network"):
        critic.value_loss(hand_made_batch())


def test_no_value_network_needs_the_action_value_bootstrap():
    spec = Bounded(-1.0, 1.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(1, spec, hidden=(4,)), make_tanh_gaussian_actor(1, spec, hidden=(4,))
    q = ValueOperator(ConcatLinear(2), in_keys=["observation", "action"])
    with pytest.raises(ValueError, match="value_network=None needs bootstrap='action_value'"):
        VMBPOCriticLoss(q, None, q_c, pi, eta=ETA, gamma=GAMMA, bootstrap="value")
    with pytest.raises(ValueError, match="value_samples must be an int >= 1"):
        VMBPOCriticLoss(q, None, q_c, pi, eta=ETA, gamma=GAMMA, bootstrap="action_value", value_samples=0)
