"""VMBPODynamicsLoss (eq. 19): the value-weighted fit recovers the exponentially twisted dynamics."""

import warnings

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ValueOperator
from torchrl.objectives import SoftUpdate

from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor
from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.objectives.ensemble_nll import GaussianEnsembleNLLLoss
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss
from torchrl_vmbpo.objectives.vmbpo_dynamics import VMBPODynamicsLoss


class ConcatLinear(nn.Module):
    """``w . [x, a, ...] + b`` over its concatenated inputs."""

    def __init__(self, in_features, weight, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([weight]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(self, *inputs):
        return torch.cat(inputs, -1) @ self.weight.T + self.bias


def make_critic(v_weight, v_bias, q_weight, q_bias, *, obs_dim=1, eta=1.0, gamma=1.0):
    """A critic with linear V(x) = v_weight . x + v_bias and Q(x, a) = q_weight . [x, a] + q_bias (targets equal)."""
    spec = Bounded(-1.0, 1.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(obs_dim, spec, hidden=(4,)), make_tanh_gaussian_actor(obs_dim, spec, hidden=(4,))
    value = ValueOperator(ConcatLinear(obs_dim, [v_weight], v_bias), in_keys=["observation"])
    qvalue = ValueOperator(ConcatLinear(obs_dim + 1, q_weight, 0.0), in_keys=["observation", "action"])
    critic = VMBPOCriticLoss(qvalue, value, q_c, pi, eta=eta, gamma=gamma, num_qvalue_nets=1)
    with warnings.catch_warnings():  # tau = 1 (targets copy the online nets at each step) is unusual, not wrong
        warnings.simplefilter("ignore", UserWarning)
        updater = SoftUpdate(critic, tau=1.0)
    with torch.no_grad():  # the Q copy is re-initialised by the critic (as SACLoss): set it
        critic.qvalue_network_params["module", "weight"].copy_(torch.tensor([[q_weight]]))
        critic.qvalue_network_params["module", "bias"].fill_(q_bias)
    updater.step()
    return critic, updater


def real_batch(next_obs, *, obs=None, reward=None, terminated=None):
    n = next_obs.shape[0]
    return TensorDict(
        {
            "observation": torch.zeros(n, 1) if obs is None else obs,
            "action": torch.zeros(n, 1),
            ("next", "observation"): next_obs,
            ("next", "reward"): torch.zeros(n, 1) if reward is None else reward,
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool) if terminated is None else terminated,
        },
        [n],
    )


def fit(loss, td, steps=300):
    optim = torch.optim.Adam(loss.parameters(), lr=2e-2)
    for _ in range(steps):
        out = loss(td)
        optim.zero_grad()
        out["loss_dynamics"].backward()
        optim.step()
    with torch.no_grad():
        mean, logvar = loss.dynamics_model.predict(torch.zeros(1, 1), torch.zeros(1, 1))
    return mean[0, :, 0], (0.5 * logvar[0, :, 0]).exp(), out  # per member: next-state mean and std


@pytest.mark.parametrize("c", [0.5, -0.8])
def test_weighted_fit_with_linear_value_recovers_the_twisted_gaussian(c):
    # p = N(m, s^2), V'(x') = c x', Q' constant: q_d* ∝ p exp(c x') = N(m + c s^2, s^2).
    m, s = 0.5, 1.0
    # x' at the 2000 quantiles of p (a deterministic sample: no Monte Carlo error in the check)
    next_obs = m + s * torch.special.ndtri((torch.arange(2000.0) + 0.5) / 2000).unsqueeze(-1)
    critic, _ = make_critic(c, 0.0, [0.0, 0.0], 0.0)
    loss = VMBPODynamicsLoss(DynamicsModel(1, 1, num_members=2, num_elites=1, hidden=(8,)), critic)
    mean, std, out = fit(loss, real_batch(next_obs))
    torch.testing.assert_close(mean, torch.full((2,), m + c * s**2), atol=0.03, rtol=0.0)
    torch.testing.assert_close(std, torch.full((2,), s), atol=0.03, rtol=0.0)
    # The fit is the self-normalised weighted MLE of the sample, to optimisation accuracy.
    w = torch.softmax(c * next_obs.squeeze(-1), 0)
    sample_mean = (w * next_obs.squeeze(-1)).sum()
    torch.testing.assert_close(mean, sample_mean.expand(2), atol=0.02, rtol=0.0)
    expected_ess = torch.exp(torch.tensor(-(c**2) * s**2))  # ESS/B of log-normal weights: exp(-c^2 s^2)
    assert out["weight_ess"].item() == pytest.approx(expected_ess.item(), abs=0.02)


def test_mix_one_equals_the_unweighted_ensemble_nll_and_needs_no_critic():
    model = DynamicsModel(2, 1, hidden=(8,))
    td = TensorDict(
        {
            "observation": torch.randn(16, 2),
            "action": torch.randn(16, 1),
            ("next", "observation"): torch.randn(16, 2),
            ("next", "reward"): torch.randn(16, 1),
            ("next", "terminated"): torch.zeros(16, 1, dtype=torch.bool),
        },
        [16],
    )
    plain = GaussianEnsembleNLLLoss(model)(td)["loss_dynamics"]
    torch.testing.assert_close(VMBPODynamicsLoss(model, None, mix=1.0)(td)["loss_dynamics"], plain)


def test_weights_are_hand_computed_self_normalised_twists_with_target_networks():
    eta, gamma = 2.0, 0.9
    critic, updater = make_critic(1.5, -0.5, [0.5, -1.0], 0.25, eta=eta, gamma=gamma)
    obs = torch.tensor([[0.0], [1.0], [-1.0]])
    action = torch.tensor([[0.5], [0.0], [1.0]])
    next_obs = torch.tensor([[1.0], [0.0], [2.0]])
    reward = torch.tensor([[1.0], [-1.0], [0.5]])
    terminated = torch.tensor([[False], [False], [True]])
    td = real_batch(next_obs, obs=obs, reward=reward, terminated=terminated).set("action", action)
    # log w = eta r + gamma (1 - terminated) V'(x') - Q'(x, a), V'(x) = 1.5 x - 0.5, Q' = 0.5 x - a + 0.25
    expected = torch.tensor(
        [
            2.0 + 0.9 * 1.0 - (0.0 - 0.5 + 0.25),
            -2.0 + 0.9 * -0.5 - (0.5 - 0.0 + 0.25),
            1.0 + 0.0 - (-0.5 - 1.0 + 0.25),
        ]
    )
    loss = VMBPODynamicsLoss(DynamicsModel(1, 1, hidden=(8,)), critic, max_weight=2.0, mix=0.25)
    torch.testing.assert_close(loss.log_weight(td), expected)
    # The loss is the NLL loss fed the clipped, mixed, self-normalised weights.
    weight = 0.75 * (3 * torch.softmax(expected, 0)).clamp_max(2.0) + 0.25
    reference = GaussianEnsembleNLLLoss(loss.dynamics_model)(td.clone().set(("model", "weight"), weight))
    out = loss(td)
    torch.testing.assert_close(out["loss_dynamics"], reference["loss_dynamics"])
    torch.testing.assert_close(out["weight_max"], weight.max())
    torch.testing.assert_close(out["log_mean_weight"], torch.logsumexp(expected, 0) - torch.log(torch.tensor(3.0)))
    assert ("model", "weight") not in td.keys(True)  # the caller's batch is left as it was

    # V' and Q' are the critic's targets: moving the online V changes nothing until the target update.
    with torch.no_grad():
        critic.value_network_params["module", "weight"].add_(1.0)
    torch.testing.assert_close(loss.log_weight(td), expected)
    updater.step()
    moved = expected + gamma * torch.tensor([1.0, 0.0, 0.0]) * next_obs.squeeze(-1)
    torch.testing.assert_close(loss.log_weight(td), moved)


def test_bootstrapped_batch_normalises_weights_within_each_member():
    critic, _ = make_critic(0.7, 0.0, [0.2, 0.1], 0.0)
    model = DynamicsModel(1, 1, num_members=3, num_elites=2, hidden=(8,))
    n = 10
    td = real_batch(
        torch.randn(n, 3, 1),
        obs=torch.randn(n, 3, 1),
        reward=torch.randn(n, 3, 1),
        terminated=torch.zeros(n, 3, 1, dtype=torch.bool),
    )
    td.set("action", torch.randn(n, 3, 1))
    td.batch_size = [n, 3]
    loss = VMBPODynamicsLoss(model, critic)
    log_w = loss.log_weight(td)
    assert log_w.shape == (n, 3)
    weight = torch.stack([n * torch.softmax(log_w[:, e], 0) for e in range(3)], -1)
    reference = GaussianEnsembleNLLLoss(model)(td.clone().set(("model", "weight"), weight))
    torch.testing.assert_close(loss(td)["loss_dynamics"], reference["loss_dynamics"])


def test_the_loss_owns_only_the_dynamics_model():
    critic, _ = make_critic(1.0, 0.0, [0.0, 0.0], 0.0)
    model = DynamicsModel(1, 1, hidden=(8,))
    loss = VMBPODynamicsLoss(model, critic)
    assert {id(p) for p in loss.parameters()} == {id(p) for p in model.parameters()}
    assert not any("value" in name for name in loss.state_dict())


def test_set_keys_reaches_the_inner_nll_loss():
    critic, _ = make_critic(1.0, 0.0, [0.0, 0.0], 0.0)
    loss = VMBPODynamicsLoss(DynamicsModel(1, 1, hidden=(8,)), critic, mix=0.5)
    td = real_batch(torch.randn(8, 1))
    td.rename_key_("observation", "x").rename_key_(("next", "observation"), ("next", "x"))
    with pytest.raises(KeyError, match="observation"):
        loss(td)
    loss.set_keys(observation="x", weight="w")  # SACLoss's contract: x' is read at ("next", "x")
    critic.set_keys(observation="x")
    assert loss.nll_loss.tensor_keys.next_observation == ("next", "x")
    assert ("next", "x") in loss.in_keys
    assert torch.isfinite(loss(td)["loss_dynamics"])


def test_constructor_rejects_bad_arguments():
    critic, _ = make_critic(1.0, 0.0, [0.0, 0.0], 0.0)
    model = DynamicsModel(1, 1, hidden=(8,))
    with pytest.raises(ValueError, match="mix"):
        VMBPODynamicsLoss(model, critic, mix=1.5)
    with pytest.raises(ValueError, match="critic=None"):
        VMBPODynamicsLoss(model, None, mix=0.5)
    with pytest.raises(ValueError, match="max_weight"):
        VMBPODynamicsLoss(model, critic, max_weight=0.5)
    with pytest.raises(TypeError, match="critic"):
        VMBPODynamicsLoss(model, TensorDictModule(nn.Linear(1, 1), ["observation"], ["v"]))
    with pytest.raises(ValueError, match="batch"):
        VMBPODynamicsLoss(model, critic)(TensorDict({}, [2, 2, 2]))


class ExactDeterministicModel(DynamicsModel):
    """x' = x + a exactly, with a vanishing predicted variance (a perfectly fitted deterministic env)."""

    def predict(self, obs, action):
        mean = (
            torch.cat([action, torch.zeros_like(action)], -1).unsqueeze(-2).expand(*obs.shape[:-1], self.num_members, 2)
        )
        return mean, torch.full_like(mean, -30.0)

    def predict_per_member(self, obs, action):
        mean = torch.cat([action, torch.zeros_like(action)], -1)
        return mean, torch.full_like(mean, -30.0)


def test_model_normaliser_gives_unit_weights_where_the_model_is_exact_whatever_q_prime():
    # Q' is badly wrong (its TD errors span 10 nats): eq. 19 verbatim puts the whole batch on one row,
    # while the model normaliser sees that each real x' is exactly the model's prediction (w = 1).
    critic, _ = make_critic(2.0, 0.0, [5.0, -5.0], 0.0)
    obs, action = torch.linspace(-1, 1, 16).unsqueeze(-1), torch.linspace(1, -1, 16).unsqueeze(-1)
    td = real_batch(obs + action, obs=obs).set("action", action)
    model = ExactDeterministicModel(1, 1, num_members=2, num_elites=1, hidden=(4,))
    verbatim = VMBPODynamicsLoss(model, critic)(td)
    assert verbatim["weight_ess"] < 0.2
    by_model = VMBPODynamicsLoss(model, critic, normaliser="model")
    torch.testing.assert_close(by_model.log_weight(td), torch.zeros(16), atol=1e-4, rtol=0.0)
    assert by_model(td)["weight_ess"] == pytest.approx(1.0, abs=1e-4)
    bootstrapped = TensorDict({k: v.unsqueeze(1).expand(16, 2, *v.shape[1:]) for k, v in td.items(True, True)}, [16, 2])
    torch.testing.assert_close(by_model.log_weight(bootstrapped), torch.zeros(16, 2), atol=1e-4, rtol=0.0)


@pytest.mark.parametrize("bootstrapped", [False, True])
def test_model_normaliser_is_the_log_mean_exp_of_v_prime_over_model_samples(bootstrapped):
    eta, gamma = 2.0, 0.9
    critic, _ = make_critic(1.5, -0.5, [0.5, -1.0], 0.25, eta=eta, gamma=gamma)
    model = DynamicsModel(1, 1, num_members=3, num_elites=2, hidden=(8,))
    n, k = 5, 6
    shape = (n, 3) if bootstrapped else (n,)
    td = real_batch(
        torch.randn(*shape, 1),
        obs=torch.randn(*shape, 1),
        reward=torch.randn(*shape, 1),
        terminated=torch.rand(*shape, 1) < 0.3,
    )
    td.set("action", torch.randn(*shape, 1))
    td.batch_size = shape
    loss = VMBPODynamicsLoss(model, critic, normaliser="model", normaliser_samples=k)
    torch.manual_seed(3)
    log_w = loss.log_weight(td)
    torch.manual_seed(3)
    obs, action = td["observation"], td["action"]
    with torch.no_grad():
        mean, logvar = model.predict_per_member(obs, action) if bootstrapped else model.predict(obs, action)
        base = obs if bootstrapped else obs.unsqueeze(-2)
        x = base + mean[..., :1] + (0.5 * logvar[..., :1]).exp() * torch.randn(k, *mean[..., :1].shape)
    alive = (~td["next", "terminated"]).float().squeeze(-1)
    v = 1.5 * x.squeeze(-1) - 0.5  # V'(x~): [K, n, E]
    if not bootstrapped:  # members pooled: n rows of K x E samples
        v = v.movedim(-1, 1).reshape(-1, n)
    log_norm = torch.logsumexp(gamma * alive * v, 0) - torch.log(torch.tensor(float(v.shape[0])))
    next_v = 1.5 * td["next", "observation"].squeeze(-1) - 0.5
    torch.testing.assert_close(log_w, gamma * alive * next_v - log_norm)  # eta r cancels
    assert log_w.shape == shape


def test_model_normaliser_keeps_the_twist_of_a_linear_value():
    # As the closed-form test above, with the normaliser estimated under the fitted model: the twist
    # within one (x, a) does not depend on the normaliser, so q_d still reaches N(m + c s^2, s^2).
    m, s, c = 0.5, 1.0, 0.5
    next_obs = m + s * torch.special.ndtri((torch.arange(2000.0) + 0.5) / 2000).unsqueeze(-1)
    critic, _ = make_critic(c, 0.0, [0.0, 0.0], 0.0)
    loss = VMBPODynamicsLoss(
        DynamicsModel(1, 1, num_members=2, num_elites=1, hidden=(8,)), critic, normaliser="model", normaliser_samples=16
    )
    mean, std, _ = fit(loss, real_batch(next_obs))
    torch.testing.assert_close(mean, torch.full((2,), m + c * s**2), atol=0.05, rtol=0.0)
    torch.testing.assert_close(std, torch.full((2,), s), atol=0.05, rtol=0.0)


def test_model_normaliser_arguments_are_checked():
    critic, _ = make_critic(1.0, 0.0, [0.0, 0.0], 0.0)
    model = DynamicsModel(1, 1, hidden=(8,))
    with pytest.raises(ValueError, match="normaliser must be one of"):
        VMBPODynamicsLoss(model, critic, normaliser="batch")
    with pytest.raises(ValueError, match="normaliser_samples"):
        VMBPODynamicsLoss(model, critic, normaliser="model", normaliser_samples=0)


def test_min_ess_tempers_the_weights_before_normalising_and_reports_beta():
    critic, _ = make_critic(2.0, 0.0, [5.0, -5.0], 0.0)
    obs, action = torch.linspace(-1, 1, 16).unsqueeze(-1), torch.linspace(1, -1, 16).unsqueeze(-1)
    td = real_batch(obs + action, obs=obs).set("action", action)
    model = DynamicsModel(1, 1, num_members=2, num_elites=1, hidden=(4,))
    loss = VMBPODynamicsLoss(model, critic, min_ess=0.5, max_weight=10.0)
    log_w = loss.log_weight(td)
    beta = fv.tempering_exponent(log_w, min_ess=0.5)
    assert 0.0 < beta.item() < 1.0
    weight = fv.normalise_weights(beta * log_w, max_weight=10.0)
    reference = GaussianEnsembleNLLLoss(model)(td.clone().set(("model", "weight"), weight))
    out = loss(td)
    torch.testing.assert_close(out["loss_dynamics"], reference["loss_dynamics"])
    assert out["weight_ess"].item() == pytest.approx(0.5, abs=1e-3)
    torch.testing.assert_close(out["weight_beta"], beta)
    with pytest.raises(ValueError, match="min_ess"):
        VMBPODynamicsLoss(model, critic, min_ess=1.5)


def _gaussian_nll_per_member(model, td, weight):
    """[E]: mean over rows of (D * w * next-state NLL + reward NLL) / (D + 1), by hand from the model's
    Gaussians, the NLL in the form PETS/MBPO minimise: (target - mean)^2 / var + log var."""
    mean, logvar = model.predict(td["observation"], td["action"])  # [B, E, D+1]
    target = model.model_targets(td["observation"], td["next", "reward"], td["next", "observation"]).unsqueeze(-2)
    nll = (target - mean) ** 2 / logvar.exp() + logvar
    d = model.obs_dim
    state = nll[..., :-1].mean(-1) * weight.unsqueeze(-1)
    return ((d * state + nll[..., -1]) / (d + 1)).mean(0)


def test_holdout_loss_is_each_members_eq19_weighted_nll():
    critic, _ = make_critic(1.5, -0.5, [0.5, -1.0], 0.25, eta=2.0, gamma=0.9)
    td = real_batch(
        torch.tensor([[1.0], [0.0], [2.0]]),
        obs=torch.tensor([[0.0], [1.0], [-1.0]]),
        reward=torch.tensor([[1.0], [-1.0], [0.5]]),
    )
    loss = VMBPODynamicsLoss(
        DynamicsModel(1, 1, hidden=(8,), num_members=3, num_elites=2), critic, max_weight=2.0, mix=0.25
    )
    log_w = loss.log_weight(td)
    weight = 0.75 * (3 * torch.softmax(log_w, 0)).clamp_max(2.0) + 0.25
    held_out = loss.holdout_loss(td)
    assert held_out.shape == (3,) and not held_out.requires_grad
    expected = _gaussian_nll_per_member(loss.dynamics_model, td, weight)
    torch.testing.assert_close(held_out, expected, atol=1e-5, rtol=1e-5)
    # the twist changes the ranking's scores: the plain NLL differs where the weights are not all one
    assert not torch.allclose(held_out, _gaussian_nll_per_member(loss.dynamics_model, td, torch.ones(3)))
    # its sum plus the log-variance penalty is the training loss
    penalty = loss.nll_loss.logvar_penalty * loss.dynamics_model.ensemble.logvar_bound_penalty()
    torch.testing.assert_close(held_out.sum() + penalty, loss(td)["loss_dynamics"].detach())


def test_holdout_loss_with_mix_one_is_the_plain_per_member_nll():
    model = DynamicsModel(1, 1, hidden=(8,), num_members=2, num_elites=2)
    td = real_batch(torch.randn(5, 1), obs=torch.randn(5, 1), reward=torch.randn(5, 1))
    expected = _gaussian_nll_per_member(model, td, torch.ones(5))
    torch.testing.assert_close(VMBPODynamicsLoss(model, None, mix=1.0).holdout_loss(td), expected, atol=1e-5, rtol=1e-5)


def test_the_plain_losss_holdout_loss_is_the_per_member_mse_the_fit_uses():
    from torchrl_vmbpo.training.model_fit import holdout_mse

    model = DynamicsModel(2, 1, hidden=(8,), num_members=4, num_elites=2)
    td = TensorDict(
        {
            "observation": torch.randn(6, 2),
            "action": torch.randn(6, 1),
            ("next", "observation"): torch.randn(6, 2),
            ("next", "reward"): torch.randn(6, 1),
        },
        [6],
    )
    held_out = GaussianEnsembleNLLLoss(model).holdout_loss(td)
    assert held_out.shape == (4,)
    torch.testing.assert_close(held_out, holdout_mse(model, td))
    # a [B, E] bootstrapped batch: each member on its own rows
    per_member = TensorDict({k: v.unsqueeze(1).expand(6, 4, *v.shape[1:]) for k, v in td.items(True, True)}, [6, 4])
    torch.testing.assert_close(GaussianEnsembleNLLLoss(model).holdout_loss(per_member), held_out)


def _random_real_batch(n, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    return real_batch(
        torch.randn(n, 1, generator=g),
        obs=torch.randn(n, 1, generator=g),
        reward=torch.randn(n, 1, generator=g),
        terminated=torch.rand(n, 1, generator=g) < 0.2,
    ).set("action", torch.randn(n, 1, generator=g))


def test_log_weights_once_per_fit_give_the_same_loss_and_holdout_as_per_batch_ones():
    # Critic normaliser: log w reads only V', Q' and the row, so computing it once for the fit (in
    # chunks) and reading it back at each step is exactly the per-step computation.
    critic, _ = make_critic(1.5, -0.5, [0.5, -1.0], 0.25, eta=2.0, gamma=0.9)
    model = DynamicsModel(1, 1, num_members=3, num_elites=2, hidden=(8,))
    loss = VMBPODynamicsLoss(model, critic, min_ess=0.5, max_weight=5.0)
    data = _random_real_batch(11)
    annotated = loss.with_log_weights(data, chunk=4)
    assert ("model", "log_weight") not in data.keys(True)  # the caller's batch is not modified
    torch.testing.assert_close(annotated["model", "log_weight"], loss.log_weight(data))
    torch.testing.assert_close(loss(annotated)["loss_dynamics"], loss(data)["loss_dynamics"])
    torch.testing.assert_close(loss.holdout_loss(annotated), loss.holdout_loss(data))
    rows = torch.randint(11, (6, 3))  # a bootstrapped [b, E] batch gathered from the annotated rows
    torch.testing.assert_close(loss(annotated[rows])["loss_dynamics"], loss(data[rows])["loss_dynamics"])


def test_a_batch_with_log_weights_does_not_call_the_critic_or_the_model_normaliser():
    critic, _ = make_critic(1.0, 0.0, [0.2, 0.1], 0.0)
    model = DynamicsModel(1, 1, num_members=2, num_elites=1, hidden=(8,))
    loss = VMBPODynamicsLoss(model, critic, normaliser="model")
    annotated = loss.with_log_weights(_random_real_batch(8))
    calls = []
    critic.state_value = lambda *a, **k: calls.append(1)  # instance attribute shadows the method
    out = loss(annotated)
    assert calls == [] and out["loss_dynamics"].requires_grad


def test_with_log_weights_pools_the_members_normaliser_and_checks_its_input():
    critic, _ = make_critic(1.5, -0.5, [0.5, -1.0], 0.25)
    model = DynamicsModel(1, 1, num_members=3, num_elites=2, hidden=(8,))
    loss = VMBPODynamicsLoss(model, critic, normaliser="model", normaliser_samples=5)
    data = _random_real_batch(7)
    torch.manual_seed(4)
    expected = loss.log_weight(data)  # the [N] path: all members' samples pooled per row
    torch.manual_seed(4)
    torch.testing.assert_close(loss.with_log_weights(data)["model", "log_weight"], expected)
    with pytest.raises(ValueError, match=r"with_log_weights takes a \[N\] batch"):
        loss.with_log_weights(data[torch.randint(7, (4, 3))])
    plain = VMBPODynamicsLoss(model, None, mix=1.0)
    assert plain.with_log_weights(data) is data  # MLE: no weights to compute
