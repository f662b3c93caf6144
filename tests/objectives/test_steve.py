"""STEVE: candidate targets and their inverse-variance blend against closed forms, and the estimator."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules.distributions.utils import rsample_and_log_prob
from torchrl.objectives import SACLoss, SoftUpdate
from torchrl.objectives.utils import distance_loss
from torchrl.objectives.value.functional import td0_return_estimate

from torchrl_vmbpo.envs.termination import never_done
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.networks import make_q_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.functional_steve import inverse_variance_blend, steve_candidates
from torchrl_vmbpo.objectives.steve import STEVEEstimator

GAMMA = 0.9


def _batch(n, obs_dim=1, next_obs=None, terminated=None, reward=None):
    return TensorDict(
        {
            "observation": torch.randn(n, obs_dim),
            "action": torch.rand(n, 1),
            ("next", "observation"): torch.randn(n, obs_dim) if next_obs is None else next_obs,
            ("next", "reward"): torch.randn(n, 1) if reward is None else reward,
            ("next", "done"): torch.zeros(n, 1, dtype=torch.bool) if terminated is None else terminated,
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool) if terminated is None else terminated,
        },
        [n],
    )


def _offset_model(offsets, num_elites):
    """A deterministic linear model: member e maps x -> x + a + offset[e]; its reward head is 0."""
    model = DynamicsModel(1, 1, num_members=len(offsets), num_elites=num_elites, hidden=())
    layer = model.ensemble.output_layer
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:, 1, 0] = 1.0  # the action moves x
        layer.bias.zero_()
        layer.bias[:, 0, 0] = torch.as_tensor(offsets, dtype=torch.float32)
        layer.bias[:, 0, 2:] = -100.0
        model.ensemble.min_logvar.fill_(-40.0)
    return model


class _ConstantActor(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, obs):
        return torch.full_like(obs[..., :1], self.value)


def _constant_actor(value):
    return TensorDictModule(_ConstantActor(value), in_keys=["observation"], out_keys=["action"])


def _stacked_q(n, obs_dim=1, act_dim=1, zero=False):
    nets = [make_q_value(obs_dim, act_dim, hidden=(16,)) for _ in range(n)]
    params = TensorDict.from_modules(*nets)
    if zero:
        params = params.detach().zero_()
    return nets[0], params


# --- pure maths ---------------------------------------------------------------------------------


def test_candidates_equal_the_soft_h_step_returns_written_out():
    torch.manual_seed(1)
    horizon, n, n_q, b = 3, 2, 2, 4
    r0 = torch.randn(b)
    rewards = torch.randn(horizon, n, b)
    cont = (torch.rand(horizon + 1, n, b) > 0.3).float().cummin(0).values  # alive, then dead for good
    boot = torch.randn(horizon + 1, n, n_q, b)
    out = steve_candidates(r0, rewards, cont, boot, GAMMA)
    assert out.shape == (horizon + 1, n, n_q, b)
    for i in range(horizon + 1):
        for k in range(n):
            for q in range(n_q):
                expected = r0.clone()
                for j in range(1, i + 1):
                    expected += GAMMA**j * cont[j - 1, k] * rewards[j - 1, k]
                expected += GAMMA ** (i + 1) * cont[i, k] * boot[i, k, q]
                torch.testing.assert_close(out[i, k, q], expected)


def test_candidates_ignore_values_and_rewards_past_a_terminal_state_even_if_not_finite():
    cont = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # s_2 is terminal
    rewards = torch.tensor([2.0, float("nan")]).view(2, 1, 1)
    boot = torch.tensor([5.0, float("inf"), float("nan")]).view(3, 1, 1, 1)
    out = steve_candidates(torch.tensor([1.0]), rewards, cont, boot, GAMMA).flatten()
    torch.testing.assert_close(out, torch.tensor([1 + GAMMA * 5.0, 1 + GAMMA * 2.0, 1 + GAMMA * 2.0]))


def test_blend_is_the_inverse_variance_weighted_mean_of_the_horizon_means():
    c = torch.tensor([[1.0, 3.0], [0.0, 8.0], [2.0, 2.5]]).unsqueeze(-1)  # [H+1=3, C=2, B=1]
    means = torch.tensor([2.0, 4.0, 2.25])
    variances = torch.tensor([1.0, 16.0, 0.0625])
    target, weights = inverse_variance_blend(c)
    expected = (means / variances).sum() / (1 / variances).sum()
    torch.testing.assert_close(target, expected.reshape(1))
    torch.testing.assert_close(weights.flatten(), (1 / variances) / (1 / variances).sum())


def test_blend_takes_the_zero_variance_horizon_and_the_mean_with_one_horizon():
    torch.manual_seed(2)
    c = torch.randn(4, 6, 5)
    c[2] = torch.randn(5)  # horizon 2: every candidate agrees
    target, weights = inverse_variance_blend(c)
    torch.testing.assert_close(target, c[2, 0])
    torch.testing.assert_close(weights[2], torch.ones(5), atol=1e-6, rtol=0)
    single, w1 = inverse_variance_blend(c[:1])
    torch.testing.assert_close(single, c[0].mean(0))
    torch.testing.assert_close(w1, torch.ones(1, 5))


# --- the estimator --------------------------------------------------------------------------------


def test_h0_target_is_the_td0_target_with_the_mean_of_the_q_functions():
    spec = Bounded(-2.0, 2.0, shape=(1,))
    actor = make_tanh_gaussian_actor(3, spec, hidden=(16,))
    qnet, qparams = _stacked_q(3, obs_dim=3)
    alpha = 0.3
    est = STEVEEstimator(
        gamma=GAMMA,
        horizon=0,
        dynamics=DynamicsModel(3, 1, hidden=(8,)),
        actor=actor,
        qvalue_network=qnet,
        qvalue_params=qparams,
        termination_fn=never_done,
        alpha=alpha,
    )
    td = _batch(6, obs_dim=3, terminated=torch.tensor([[False], [True]] * 3))
    torch.manual_seed(5)
    target = est.value_estimate(td)

    torch.manual_seed(5)  # the same single draw a' ~ pi(s')
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        next_td = TensorDict({"observation": td["next", "observation"]}, [6])
        action, log_prob = rsample_and_log_prob(actor.get_dist(next_td))
        q = []
        for params in qparams.unbind(0):
            with params.to_module(qnet):
                next_td["action"] = action
                q.append(qnet(next_td.clone())["state_action_value"])
        q = torch.stack(q)
    next_value = q.mean(0) - alpha * log_prob.unsqueeze(-1)
    expected = td0_return_estimate(GAMMA, next_value, td["next", "reward"], td["next", "terminated"])
    torch.testing.assert_close(target, expected)
    assert torch.equal(est.last_horizon_weights, torch.ones(1))


def test_candidates_follow_each_elite_through_the_whole_rollout():
    # Member e: x' = x + a + offset[e]; actor a = 0; reward x'; Q = 0. From s_1 = 0 the member-e
    # rollout is s_(j+1) = j offset[e], so T^i_e = r_0 + sum_{j<=i} gamma^j j offset[e].
    offsets = torch.tensor([0.5, 1.0, 2.0, 3.0, -1.0])
    model = _offset_model(offsets, num_elites=3)
    model.set_elites(torch.tensor([4, 0, 2]))
    qnet, qparams = _stacked_q(2, zero=True)
    est = STEVEEstimator(
        gamma=GAMMA,
        horizon=3,
        dynamics=model,
        actor=_constant_actor(0.0),
        qvalue_network=qnet,
        qvalue_params=qparams,
        termination_fn=never_done,
        reward_fn=lambda o, a, n: n,
        sample_model=False,
    )
    td = _batch(2, next_obs=torch.zeros(2, 1), reward=torch.tensor([[1.0], [-1.0]]))
    cands = est.candidates(td)
    assert cands.shape == (4, 3, 2, 2)  # [H+1, N, L, B]
    for i in range(4):
        partial = sum(GAMMA**j * j for j in range(1, i + 1))
        expected = td["next", "reward"].flatten() + partial * offsets[model.elites][:, None]  # [N, B]
        torch.testing.assert_close(cands[i], expected[:, None, :].expand(3, 2, 2))


def test_target_is_the_model_h_step_return_when_only_that_horizon_has_zero_variance():
    # Identical deterministic members x' = x + a, actor a = 1, reward x'; from s_1 = 0 the rollout
    # is s_(j+1) = j and s_(H+1) = H is terminal, so T^H = r_0 + sum_{j=1..H} gamma^j j for every
    # member and Q function (zero variance); shorter horizons bootstrap from two different Q
    # functions (non-zero variance). The blend must return the model's H-step return.
    horizon = 3
    model = _offset_model([0.0] * 7, num_elites=5)
    qnet, qparams = _stacked_q(2)
    est = STEVEEstimator(
        gamma=GAMMA,
        horizon=horizon,
        dynamics=model,
        actor=_constant_actor(1.0),
        qvalue_network=qnet,
        qvalue_params=qparams,
        termination_fn=lambda x: x >= horizon - 0.5,
        reward_fn=lambda o, a, n: n,
        sample_model=False,
        eps=1e-12,
    )
    td = _batch(4, next_obs=torch.zeros(4, 1))
    target = est.value_estimate(td)
    h_step = td["next", "reward"] + sum(GAMMA**j * j for j in range(1, horizon + 1))
    torch.testing.assert_close(target, h_step)
    assert est.last_horizon_weights[horizon] > 1 - 1e-5
    # With a live bootstrap at s_(H+1) (no terminal state) the target is no longer that return.
    est.termination_fn = never_done
    assert not torch.allclose(est.value_estimate(td), h_step)


def test_steve_is_sac_loss_critic_target_and_sends_no_gradient_to_the_model():
    spec = Bounded(-2.0, 2.0, shape=(1,))
    actor = make_tanh_gaussian_actor(3, spec, hidden=(16,))
    loss = SACLoss(actor, make_q_value(3, 1, hidden=(16,)), num_qvalue_nets=2, loss_function="l2", action_spec=spec)
    model = DynamicsModel(3, 1, hidden=(16,))
    SoftUpdate(loss, tau=0.005)  # associates an updater with the target params (else TorchRL warns)
    loss.make_value_estimator(
        STEVEEstimator.from_sac_loss(loss, gamma=GAMMA, horizon=2, dynamics=model, termination_fn=never_done)
    )
    assert isinstance(loss.value_estimator, STEVEEstimator)
    seen = []
    original = loss.value_estimator.value_estimate
    loss.value_estimator.value_estimate = lambda td, **kw: seen.append(original(td, **kw)) or seen[-1]
    td = _batch(8, obs_dim=3)
    out = loss(td)
    assert len(seen) == 1
    target = seen[0].squeeze(-1)
    preds = []
    for params in loss.qvalue_network_params.unbind(0):
        with params.to_module(loss.qvalue_network):
            pred = loss.qvalue_network(td.select("observation", "action").clone())["state_action_value"]
            preds.append(pred.squeeze(-1))
    expected = distance_loss(torch.stack(preds), target.expand(2, -1), loss_function="l2").sum(0).mean()
    torch.testing.assert_close(out["loss_qvalue"], expected)

    out["loss_qvalue"].backward()
    assert all(p.grad is None for p in model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.qvalue_network_params.values(True, True))


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(horizon=-1), "horizon must be"), (dict(alpha=0.1), "probabilistic actor"), (dict(eps=0.0), "eps must be")],
)
def test_estimator_rejects_bad_arguments(kwargs, message):
    qnet, qparams = _stacked_q(2)
    base = dict(
        gamma=GAMMA,
        horizon=1,
        dynamics=_offset_model([0.0] * 3, 2),
        actor=_constant_actor(0.0),
        qvalue_network=qnet,
        qvalue_params=qparams,
        termination_fn=never_done,
    )
    with pytest.raises(ValueError, match=message):
        STEVEEstimator(**{**base, **kwargs})


def test_steve_plugs_into_td3_loss_with_a_deterministic_actor():
    # Any TorchRL critic loss that asks value_estimate(td) for its target can use STEVE (here TD3,
    # the deterministic-actor setting of the STEVE paper: no entropy bonus).
    from tensordict.nn import TensorDictSequential
    from torchrl.modules import MLP, TanhModule
    from torchrl.objectives import TD3Loss

    spec = Bounded(-2.0, 2.0, shape=(1,))
    actor = TensorDictSequential(
        TensorDictModule(
            MLP(in_features=3, out_features=1, num_cells=[16]), in_keys=["observation"], out_keys=["param"]
        ),
        TanhModule(in_keys=["param"], out_keys=["action"], spec=spec),
    )
    loss = TD3Loss(actor, make_q_value(3, 1, hidden=(16,)), action_spec=spec, num_qvalue_nets=2)
    SoftUpdate(loss, tau=0.005)
    est = STEVEEstimator(
        gamma=GAMMA,
        horizon=2,
        dynamics=DynamicsModel(3, 1, hidden=(16,)),
        actor=loss.actor_network,
        qvalue_network=loss.qvalue_network,
        qvalue_params=loss.target_qvalue_network_params,
        termination_fn=never_done,
    )
    loss.make_value_estimator(est)
    calls = []
    original = est.value_estimate
    est.value_estimate = lambda td, **kw: calls.append(1) or original(td, **kw)
    out = loss(_batch(8, obs_dim=3))
    assert calls and torch.isfinite(out["loss_qvalue"])
