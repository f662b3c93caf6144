"""MPO: the pure maths against closed forms, then the LossModule's wiring and gradient routing."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import distributions as D
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import TanhNormal, ValueOperator
from torchrl.objectives import HardUpdate, SoftUpdate

from torchrl_vmbpo.models.networks import make_q_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives import functional_mpo as fm
from torchrl_vmbpo.objectives.mpo import MPOLoss

OBS, ACT, B = 3, 2, 16

# ----------------------------------------------------------------------------- pure maths


def test_weights_are_softmax_of_q_over_temperature():
    q = (torch.randn(20, 5, dtype=torch.float64) * 7).requires_grad_()
    tau = torch.tensor([2.5], dtype=torch.float64)
    weights, _ = fm.weights_and_temperature_loss(q, 0.1, tau)
    expected = torch.exp(q.detach() / 2.5) / torch.exp(q.detach() / 2.5).sum(0, keepdim=True)
    torch.testing.assert_close(weights, expected)
    assert not weights.requires_grad  # the E-step weights are targets, never differentiated
    # Temperature limits: tau -> 0 gives the argmax, tau -> inf the uniform distribution.
    cold, _ = fm.weights_and_temperature_loss(q, 0.1, torch.tensor([1e-4], dtype=torch.float64))
    torch.testing.assert_close(cold.argmax(0), q.detach().argmax(0))
    hot, _ = fm.weights_and_temperature_loss(q, 0.1, torch.tensor([1e6], dtype=torch.float64))
    torch.testing.assert_close(hot, torch.full_like(hot, 1 / 20), atol=1e-4, rtol=0)


def test_temperature_dual_value_and_derivative_are_the_closed_forms():
    q = torch.randn(20, 8, dtype=torch.float64) * 3
    tau = torch.tensor([1.7], dtype=torch.float64, requires_grad=True)
    eps = 0.1
    weights, dual = fm.weights_and_temperature_loss(q, eps, tau)
    expected = 1.7 * (eps + (torch.logsumexp(q / 1.7, 0) - math.log(20)).mean())
    torch.testing.assert_close(dual, expected.reshape(()))
    # d/dtau [tau eps + tau mean log mean exp(Q/tau)] = eps - mean_B KL(q || pi_old).
    (grad,) = torch.autograd.grad(dual, tau)
    torch.testing.assert_close(grad.reshape(()), eps - fm.nonparametric_kl(weights).mean())


@pytest.mark.parametrize("eps", [0.1, 0.5])
def test_minimising_temperature_dual_on_fixed_q_meets_kl_bound(eps):
    q = torch.randn(20, 32, dtype=torch.float64) * 5  # fixed critic values
    log_tau = torch.tensor([fm.log_dual_from_value(10.0)], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_tau], lr=1.0, max_iter=200, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        _, dual = fm.weights_and_temperature_loss(q, eps, fm.dual_from_log(log_tau))
        dual.backward()
        return dual

    for _ in range(5):
        opt.step(closure)
    weights, _ = fm.weights_and_temperature_loss(q, eps, fm.dual_from_log(log_tau).detach())
    kl = fm.nonparametric_kl(weights).mean().item()
    assert kl == pytest.approx(eps, rel=1e-4)


def test_nonparametric_kl_is_kl_to_uniform_over_samples():
    weights = torch.softmax(torch.randn(20, 6, dtype=torch.float64), 0)
    expected = D.kl_divergence(D.Categorical(probs=weights.T), D.Categorical(probs=torch.full((6, 20), 0.05)))
    torch.testing.assert_close(fm.nonparametric_kl(weights), expected.to(torch.float64))
    one_hot = torch.zeros(20, 1, dtype=torch.float64)
    one_hot[3] = 1.0  # a degenerate q: KL = log N, and no NaN from 0 log 0
    assert fm.nonparametric_kl(one_hot).item() == pytest.approx(math.log(20))


def test_effective_sample_size_ranges_from_one_to_n():
    one_hot = torch.eye(5)[:, :1]
    assert fm.weights_effective_sample_size(one_hot).item() == pytest.approx(1.0)
    assert fm.weights_effective_sample_size(torch.full((5, 1), 0.2)).item() == pytest.approx(5.0)
    w = torch.tensor([[0.5], [0.5], [0.0]])
    assert fm.weights_effective_sample_size(w).item() == pytest.approx(2.0)


def test_gaussian_log_prob_matches_torch_diagonal_normal():
    loc, scale = torch.randn(4, 3), torch.rand(4, 3) + 0.1
    x = torch.randn(7, 4, 3)
    expected = D.Independent(D.Normal(loc, scale), 1).log_prob(x)
    torch.testing.assert_close(fm.gaussian_log_prob(x, loc, scale), expected)


def test_gaussian_kl_per_dim_matches_torch_and_decoupled_kls_match_analytic_forms():
    mu_t, mu_o = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    sd_t, sd_o = torch.rand(6, 3, dtype=torch.float64) + 0.2, torch.rand(6, 3, dtype=torch.float64) + 0.2
    torch.testing.assert_close(
        fm.gaussian_kl_per_dim(mu_t, sd_t, mu_o, sd_o), D.kl_divergence(D.Normal(mu_t, sd_t), D.Normal(mu_o, sd_o))
    )
    kl_mean, kl_std = fm.decoupled_kls(mu_t, sd_t, mu_o, sd_o)
    torch.testing.assert_close(kl_mean, (mu_t - mu_o) ** 2 / (2 * sd_t**2))
    torch.testing.assert_close(kl_std, torch.log(sd_o / sd_t) + sd_t**2 / (2 * sd_o**2) - 0.5)
    # Decoupling: the mean's KL ignores the online std, the std's KL ignores the online mean.
    mu_o.requires_grad_(), sd_o.requires_grad_()
    kl_mean, kl_std = fm.decoupled_kls(mu_t, sd_t, mu_o, sd_o)
    assert torch.autograd.grad(kl_mean.sum(), sd_o, allow_unused=True)[0] is None
    assert torch.autograd.grad(kl_std.sum(), mu_o, allow_unused=True)[0] is None


def test_weighted_fit_minimisers_are_the_weighted_moments():
    u = torch.randn(20, 5, 2, dtype=torch.float64)
    w = torch.softmax(torch.randn(20, 5, dtype=torch.float64), 0)
    sd_t, mu_t = torch.rand(5, 2, dtype=torch.float64) + 0.5, torch.randn(5, 2, dtype=torch.float64)
    mu_star = (w[..., None] * u).sum(0).requires_grad_()
    sd_star = (w[..., None] * (u - mu_t) ** 2).sum(0).sqrt().requires_grad_()
    g_mu = torch.autograd.grad(fm.weighted_cross_entropy(fm.gaussian_log_prob(u, mu_star, sd_t), w), mu_star)[0]
    g_sd = torch.autograd.grad(fm.weighted_cross_entropy(fm.gaussian_log_prob(u, mu_t, sd_star), w), sd_star)[0]
    torch.testing.assert_close(g_mu, torch.zeros_like(g_mu))
    torch.testing.assert_close(g_sd, torch.zeros_like(g_sd))


def test_pre_tanh_fit_has_the_gradients_of_the_tanh_normal_log_prob():
    # The tanh log-Jacobian does not depend on the policy parameters, so fitting on u is exact.
    u = torch.randn(10, 4, 2).clamp(-2, 2)
    w = torch.softmax(torch.randn(10, 4), 0)
    loc = torch.randn(4, 2, requires_grad=True)
    scale = (torch.rand(4, 2) + 0.5).requires_grad_()
    low, high = torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 1.0])
    action = TanhNormal(torch.zeros(4, 2), torch.ones(4, 2), low=low, high=high).transforms[0](u)
    mine = torch.autograd.grad(fm.weighted_cross_entropy(fm.gaussian_log_prob(u, loc, scale), w), (loc, scale))
    dist = TanhNormal(loc, scale, low=low, high=high)
    ref = torch.autograd.grad(fm.weighted_cross_entropy(dist.log_prob(action), w), (loc, scale))
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def _mstep(online_loc, online_scale, per_dim=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(20, 5, 2, generator=gen, dtype=torch.float64)
    w = torch.softmax(torch.randn(20, 5, generator=gen, dtype=torch.float64), 0)
    mu_t = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    sd_t = torch.rand(5, 2, generator=gen, dtype=torch.float64) + 0.5
    alpha_mean = torch.tensor([3.0, 5.0] if per_dim else [4.0], dtype=torch.float64)
    alpha_std = alpha_mean * 10
    out = fm.decoupled_gaussian_mstep(
        u, w, mu_t, sd_t, online_loc, online_scale, alpha_mean, alpha_std, 1e-2, 1e-4, per_dim
    )
    return out, (u, w, mu_t, sd_t, alpha_mean)


@pytest.mark.parametrize("per_dim", [True, False])
def test_decoupled_mstep_mean_gradient_is_the_closed_form_and_ignores_the_online_std(per_dim):
    loc = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    grads = []
    for scale_value in (0.3, 2.0):  # the online std must not matter to the mean's update
        scale = torch.full((5, 2), scale_value, dtype=torch.float64, requires_grad=True)
        (loss, _, _, _), (u, w, mu_t, sd_t, alpha) = _mstep(loc, scale, per_dim)
        grads.append(torch.autograd.grad(loss, loc)[0])
    torch.testing.assert_close(grads[0], grads[1])
    # d/dmu [-mean_B sum_N w log N(u; mu, sd_t)] + alpha d/dmu mean_B (mu_t - mu)^2 / (2 sd_t^2)
    fit = -(w[..., None] * (u - loc.detach())).sum(0) / sd_t**2 / 5
    penalty = alpha * (loc.detach() - mu_t) / sd_t**2 / 5
    torch.testing.assert_close(grads[0], fit + penalty)


def test_decoupled_mstep_std_gradient_ignores_the_online_mean():
    scale = torch.rand(5, 2, dtype=torch.float64).add(0.5).requires_grad_()
    grads = []
    for loc_value in (-1.0, 1.5):
        loc = torch.full((5, 2), loc_value, dtype=torch.float64, requires_grad=True)
        (loss, _, _, _), _ = _mstep(loc, scale)
        grads.append(torch.autograd.grad(loss, scale)[0])
    torch.testing.assert_close(grads[0], grads[1])


def test_kl_penalty_and_dual_loss_split_gradients_between_policy_and_multiplier():
    source = torch.tensor([0.3, 0.1], requires_grad=True)
    kl = torch.stack([source, 2 * source])  # [B=2, C=2]: mean over B = 1.5 * source
    alpha = torch.tensor([2.0, 4.0], requires_grad=True)
    penalty, dual = fm.kl_penalty_and_dual_loss(kl, alpha, 0.2)
    assert penalty.item() == pytest.approx(2.0 * 0.45 + 4.0 * 0.15)
    assert dual.item() == pytest.approx(2.0 * (0.2 - 0.45) + 4.0 * (0.2 - 0.15))
    assert torch.autograd.grad(penalty, alpha, allow_unused=True, retain_graph=True)[0] is None
    assert torch.autograd.grad(dual, source, allow_unused=True)[0] is None
    # The dual's gradient pushes alpha up exactly when the constraint is violated (KL > eps).
    (g,) = torch.autograd.grad(fm.kl_penalty_and_dual_loss(kl, alpha, 0.2)[1], alpha)
    assert g[0] < 0 < g[1]


@pytest.mark.parametrize("value", [1e-6, 0.5, 10.0, 1000.0])
def test_log_dual_from_value_inverts_the_softplus_parameterisation(value):
    log = torch.tensor(fm.log_dual_from_value(value), dtype=torch.float64)
    assert fm.dual_from_log(log).item() == pytest.approx(value, rel=1e-6)


def test_log_dual_from_value_rejects_non_positive_values():
    with pytest.raises(ValueError, match="initial value"):
        fm.log_dual_from_value(0.0)


def test_action_penalty_cost_is_minus_the_distance_to_the_box():
    u = torch.tensor([[[0.0, 0.0], [4.0, -1.0], [5.0, -7.0]]])  # [N=1, B=3, D=2]
    torch.testing.assert_close(fm.action_penalty_cost(u, 3.0), torch.tensor([[0.0, -1.0, -math.sqrt(20.0)]]))


def test_expected_sarsa_target_bootstraps_unless_terminated():
    next_q = torch.tensor([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])  # mean over N = 2
    target = fm.expected_sarsa_target(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.0, 1.0, 0.0]), next_q, 0.9)
    torch.testing.assert_close(target, torch.tensor([0.5 + 1.8, 0.5, 0.5 + 1.8]))


# ----------------------------------------------------------------------------- the LossModule


class _Quadratic(nn.Module):
    # Q(x, a) = -10 ||a - 0.5||^2: the greedy action is 0.5 in every dimension.
    def forward(self, observation, action):
        return -10.0 * (action - 0.5).pow(2).sum(-1, keepdim=True) + 0.0 * observation.sum(-1, keepdim=True)


def _actor():
    return make_tanh_gaussian_actor(OBS, Bounded(-1.0, 1.0, shape=(ACT,)), hidden=(16,))


def _batch(batch=B, terminated=None, done=None):
    if terminated is None:
        terminated = torch.zeros(batch, 1, dtype=torch.bool)
    return TensorDict(
        {
            "observation": torch.randn(batch, OBS),
            "action": torch.rand(batch, ACT) * 2 - 1,
            "next": {
                "observation": torch.randn(batch, OBS),
                "reward": torch.randn(batch, 1),
                "terminated": terminated,
                "done": terminated.clone() if done is None else done,
            },
        },
        [batch],
    )


def _loss(qvalue=None, **kwargs):
    qvalue = make_q_value(OBS, ACT, hidden=(16,)) if qvalue is None else qvalue
    loss = MPOLoss(_actor(), qvalue, num_samples=8, **kwargs)
    SoftUpdate(loss, tau=0.005)  # registers an updater: no "target net" warning
    return loss


def test_forward_returns_scalar_losses_and_detached_diagnostics():
    loss = _loss(action_penalty=True)
    td = _batch()
    keys_before = set(td.keys(True, True))
    out = loss(td)
    assert set(td.keys(True, True)) == keys_before  # the caller's batch is left untouched
    assert set(out.keys()) == set(loss.out_keys)
    for key in ("loss_critic", "loss_policy", "loss_dual"):
        assert out[key].shape == () and out[key].requires_grad and torch.isfinite(out[key])
    for key in set(out.keys()) - {"loss_critic", "loss_policy", "loss_dual"}:
        assert out[key].shape == () and not out[key].requires_grad, key
        assert not key.startswith("loss"), key  # a trainer sums every "loss*" entry
    assert 1.0 <= out["ess"].item() <= 8.0
    assert out["temperature"].item() == pytest.approx(10.0, rel=1e-5)
    assert out["alpha_std"].item() == pytest.approx(1000.0, rel=1e-5)
    # At construction the online policy is its target: both trust-region KLs are zero.
    assert out["kl_mean"].item() == pytest.approx(0.0, abs=1e-10)
    assert out["kl_std"].item() == pytest.approx(0.0, abs=1e-10)


def _groups(loss):
    groups = loss.parameters_by_loss()
    return {name: [p for p in params if p.requires_grad] for name, params in groups.items()}


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"action_penalty": True, "per_dim_constraining": False}, {"twin": True}],
    ids=["default", "penalty-total-kl", "twin-critics"],
)
def test_each_loss_sends_gradients_only_to_its_own_parameters(kwargs):
    kwargs = dict(kwargs)
    qvalue = [make_q_value(OBS, ACT, hidden=(16,)) for _ in range(2)] if kwargs.pop("twin", False) else None
    loss = _loss(qvalue, **kwargs)
    out = loss(_batch())
    groups = _groups(loss)
    everything = [p for params in groups.values() for p in params]
    assert len({id(p) for p in everything}) == len(everything) == len(list(loss.parameters()))
    for name, own in groups.items():
        grads = torch.autograd.grad(out[name], everything, allow_unused=True, retain_graph=True)
        own_ids = {id(p) for p in own}
        for param, grad in zip(everything, grads):
            if id(param) in own_ids:
                assert grad is not None, name
            else:
                assert grad is None or not grad.any(), f"{name} leaks into a parameter of another loss"
        assert any(g is not None and g.any() for p, g in zip(everything, grads) if id(p) in own_ids), name
    # Target parameters are buffers: never trained, never in the graph.
    for target in (loss.target_actor_network_params, loss.target_qvalue_network_params):
        assert not any(t.requires_grad for t in target.values(True, True))


def test_samples_are_random_although_losses_run_in_deterministic_mode():
    # If the actor's mode were used, the N samples would coincide: uniform weights, ESS = N, KL = 0.
    loss = _loss(ValueOperator(_Quadratic(), in_keys=["observation", "action"]), temperature_init=1.0)
    out = loss(_batch())
    assert out["ess"].item() < 8.0 - 0.1
    assert out["kl_nonparametric"].item() > 1e-6


class _Constant(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([value]))

    def forward(self, observation, action):
        return self.bias.expand(*observation.shape[:-1], 1) + 0.0 * action.sum(-1, keepdim=True)


def test_critic_target_is_expected_sarsa_with_truncation_bootstrapping():
    loss = _loss(ValueOperator(_Constant(2.0), in_keys=["observation", "action"]), gamma=0.5)
    terminated = torch.tensor([[True], [False], [False], [False]])
    done = torch.tensor([[True], [True], [False], [False]])  # row 1 truncated: still bootstraps
    td = _batch(4, terminated=terminated, done=done)
    out = loss(td)
    reward = td["next", "reward"].reshape(-1)
    target = reward + 0.5 * 2.0 * (~terminated).reshape(-1).float()
    assert out["target_value"].item() == pytest.approx(target.mean().item(), abs=1e-6)
    assert out["loss_critic"].item() == pytest.approx((2.0 - target).pow(2).mean().item(), abs=1e-5)


def test_twin_critics_sum_their_regression_losses_and_bootstrap_from_their_minimum():
    loss = _loss([ValueOperator(_Constant(c), in_keys=["observation", "action"]) for c in (1.0, 3.0)], gamma=0.5)
    td = _batch(4)
    out = loss(td)
    target = td["next", "reward"].reshape(-1) + 0.5 * 1.0  # clipped double Q: the smaller critic
    assert out["target_value"].item() == pytest.approx(target.mean().item(), abs=1e-6)
    expected = (1.0 - target).pow(2).mean() + (3.0 - target).pow(2).mean()
    assert out["loss_critic"].item() == pytest.approx(expected.item(), abs=1e-5)


def test_twin_critics_e_step_weights_follow_the_smaller_critic():
    # min(quadratic, 100) = quadratic: non-uniform weights; a max would give uniform ones (ESS = N).
    class _Shaped(nn.Module):  # coef * quadratic + bias; both critics need the same parameter keys
        def __init__(self, coef, bias):
            super().__init__()
            self.coef, self.bias = nn.Parameter(torch.tensor(coef)), nn.Parameter(torch.tensor(bias))

        def forward(self, observation, action):
            return self.coef * _Quadratic()(observation, action) + self.bias

    critics = [ValueOperator(m, in_keys=["observation", "action"]) for m in (_Shaped(1.0, 0.0), _Shaped(0.0, 100.0))]
    out = _loss(critics, temperature_init=1.0)(_batch())
    assert out["ess"].item() < 8.0 - 0.1


def test_target_networks_follow_soft_and_hard_updates():
    loss = MPOLoss(_actor(), make_q_value(OBS, ACT, hidden=(16,)), num_samples=4)
    soft, hard = SoftUpdate(loss, tau=0.25), HardUpdate(loss, value_network_update_interval=0)
    online = loss.actor_network_params.values(True, True)
    first = next(iter(online))
    target_first = next(iter(loss.target_actor_network_params.values(True, True)))
    torch.testing.assert_close(first.data, target_first)
    old = target_first.clone()
    with torch.no_grad():
        first.add_(1.0)
    soft.step()
    torch.testing.assert_close(target_first, old + 0.25)
    hard.step()
    torch.testing.assert_close(target_first, first.data)


def test_duals_are_floored_before_use():
    loss = _loss()
    with torch.no_grad():
        loss.log_temperature.fill_(-100.0)
    out = loss(_batch())
    assert loss.log_temperature.item() == fm.MIN_LOG_DUAL
    assert out["temperature"].item() == pytest.approx(fm.dual_from_log(torch.tensor(-18.0)).item())


@pytest.mark.parametrize("per_dim, size", [(True, ACT), (False, 1)])
def test_per_dimension_option_sets_multiplier_shapes_and_splits_the_bound(per_dim, size):
    loss = _loss(per_dim_constraining=per_dim, epsilon_mean=1e-2, epsilon_std=1e-6)
    assert loss.log_alpha_mean.shape == loss.log_alpha_std.shape == (size,)
    assert loss.epsilon_mean == pytest.approx(1e-2 / size)
    assert loss.epsilon_std == pytest.approx(1e-6 / size)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 1}, "num_samples"),
        ({"gamma": 1.5}, "gamma"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon_mean": -1.0}, "epsilon_mean"),
        ({"alpha_std_init": 0.0}, "alpha_std_init"),
        ({"loss_function": "huber"}, "loss_function"),
        ({"action_dim": 0}, "action_dim"),
    ],
)
def test_constructor_rejects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MPOLoss(_actor(), make_q_value(OBS, ACT, hidden=(16,)), **kwargs)


def test_rejects_an_actor_without_a_gaussian():
    class _Uniform(nn.Module):
        def forward(self, observation):
            return torch.zeros(*observation.shape[:-1], ACT), torch.ones(*observation.shape[:-1], ACT)

    from torchrl.modules import ProbabilisticActor

    actor = ProbabilisticActor(
        TensorDictModule(_Uniform(), in_keys=["observation"], out_keys=["low", "high"]),
        in_keys=["low", "high"],
        distribution_class=D.Uniform,
    )
    loss = MPOLoss(actor, make_q_value(OBS, ACT, hidden=(16,)), action_dim=ACT)
    SoftUpdate(loss, tau=0.005)
    with pytest.raises(TypeError, match="diagonal Gaussian"):
        loss(_batch())


def test_policy_improves_towards_the_greedy_action_of_a_fixed_critic():
    loss = MPOLoss(
        _actor(), ValueOperator(_Quadratic(), in_keys=["observation", "action"]), num_samples=20, temperature_init=1.0
    )
    updater = HardUpdate(loss, value_network_update_interval=0)  # pi_old <- pi after every step
    groups = loss.parameters_by_loss()
    opt = torch.optim.Adam([{"params": groups["loss_policy"], "lr": 3e-3}, {"params": groups["loss_dual"], "lr": 1e-2}])
    td = _batch(32)

    def greedy_error():
        with torch.no_grad():
            return (loss.actor_network.get_dist(td.select("observation")).deterministic_sample - 0.5).abs().mean()

    before = greedy_error()
    for _ in range(150):
        out = loss(td)
        opt.zero_grad()
        (out["loss_policy"] + out["loss_dual"]).backward()
        opt.step()
        updater.step()
    assert before > 0.3
    assert greedy_error() < 0.1


def test_e_step_and_critic_target_read_the_target_networks_only():
    loss = _loss()
    td = _batch()
    torch.manual_seed(1)
    before = loss(td)
    with torch.no_grad():  # move the online networks; the targets stay where they were
        for param in loss.parameters_by_loss()["loss_critic"] + loss.parameters_by_loss()["loss_policy"]:
            param.add_(0.3)
    torch.manual_seed(1)
    after = loss(td)
    for key in ("target_value", "kl_nonparametric", "ess"):
        torch.testing.assert_close(after[key], before[key])
    assert after["kl_mean"] > 0 and after["q_value"] != before["q_value"]


def test_state_dict_round_trips_duals_and_targets():
    loss, other = _loss(action_penalty=True), _loss(action_penalty=True)
    with torch.no_grad():
        loss.log_alpha_mean.fill_(1.5)
    state = loss.state_dict()
    assert any(k.startswith("target_actor_network_params") for k in state) and "log_penalty_temperature" in state
    other.load_state_dict(state)
    td = _batch()
    torch.manual_seed(2)
    a = loss(td)
    torch.manual_seed(2)
    b = other(td)
    for key in a.keys():
        torch.testing.assert_close(a[key], b[key])
