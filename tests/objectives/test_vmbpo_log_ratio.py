"""LogRatioLoss (eq. 21) and the nu network: recovering a known Gaussian log-density ratio."""

import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.log_ratio import log_ratio_of, make_log_ratio_network
from torchrl_vmbpo.objectives.log_ratio import LogRatioLoss

# p(x'|x, a) = x + N(0, 1);  q_d(x'|x, a) = x + N(M_Q, S_Q^2).
M_Q, S_Q = 0.5, 0.7


def true_log_ratio(delta):
    """log N(delta; M_Q, S_Q^2) - log N(delta; 0, 1)."""
    return -math.log(S_Q) - 0.5 * ((delta - M_Q) / S_Q) ** 2 + 0.5 * delta**2


def batch(n):
    obs, action = torch.rand(n, 1) * 2 - 1, torch.rand(n, 1) * 2 - 1
    return TensorDict(
        {
            "observation": obs,
            "action": action,
            ("next", "observation"): obs + torch.randn(n, 1),
            ("model", "next_observation"): obs + M_Q + S_Q * torch.randn(n, 1),
        },
        [n],
    )


def test_nu_recovers_the_log_density_ratio_of_two_gaussians_and_the_kl():
    nu = make_log_ratio_network(1, 1, hidden=(64, 64), bound=10.0)
    loss = LogRatioLoss(nu)
    optim = torch.optim.Adam(nu.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 800)
    for _ in range(800):
        out = loss(batch(512))
        optim.zero_grad()
        out["loss_log_ratio"].backward()
        optim.step()
        sched.step()
    with torch.no_grad():
        # Where both densities have mass (within ~1.5 s.d. of q's mean): nu = log q/p.
        delta = torch.linspace(M_Q - 1.0, M_Q + 1.0, 21).unsqueeze(-1)
        for x in (-0.5, 0.0, 0.5):
            obs = torch.full_like(delta, x)
            got = log_ratio_of(nu, obs, torch.zeros_like(delta), obs + delta)
            torch.testing.assert_close(got, true_log_ratio(delta.squeeze(-1)), atol=0.1, rtol=0.0)
        diagnostics = loss(batch(20_000))
    kl = -math.log(S_Q) + (S_Q**2 + M_Q**2) / 2 - 0.5  # KL(q_d || p) in closed form
    assert diagnostics["kl_estimate"].item() == pytest.approx(kl, abs=0.03)
    assert diagnostics["exp_log_ratio_real"].item() == pytest.approx(1.0, abs=0.04)  # E_p[q/p] = 1


def test_next_states_are_sampled_from_the_dynamics_model_when_one_is_given():
    model = DynamicsModel(1, 1, num_members=3, num_elites=2, hidden=(8,))
    nu = make_log_ratio_network(1, 1, hidden=(8,))
    td = batch(16).exclude(("model", "next_observation"))
    torch.manual_seed(3)
    with_model = LogRatioLoss(nu, model)(td)
    torch.manual_seed(3)
    sampled = model.sample(td["observation"], td["action"])[0]
    from_batch = LogRatioLoss(nu)(td.set(("model", "next_observation"), sampled))
    torch.testing.assert_close(with_model["loss_log_ratio"], from_batch["loss_log_ratio"])


def test_loss_is_minus_the_dual_and_kl_estimate_is_dual_plus_one():
    nu = make_log_ratio_network(1, 1, hidden=(8,))
    td = batch(32)
    out = LogRatioLoss(nu)(td)
    with torch.no_grad():
        nu_q = log_ratio_of(nu, td["observation"], td["action"], td["model", "next_observation"])
        nu_p = log_ratio_of(nu, td["observation"], td["action"], td["next", "observation"])
    dual = nu_q.mean() - nu_p.exp().mean()
    torch.testing.assert_close(out["loss_log_ratio"].detach(), -dual)
    torch.testing.assert_close(out["kl_estimate"], dual + 1.0)


def test_nu_output_is_bounded_so_exp_cannot_overflow():
    nu = make_log_ratio_network(2, 1, hidden=(8,), bound=3.0)
    with torch.no_grad():
        for p in nu.parameters():
            p.mul_(1000.0)
    big = log_ratio_of(nu, torch.randn(64, 2) * 100, torch.randn(64, 1) * 100, torch.randn(64, 2) * 100)
    assert big.abs().max().item() <= 3.0
    assert big.abs().max().item() > 2.9  # saturated, not silently zero


def test_set_keys_renames_the_entries_read_and_missing_keys_are_named():
    nu = make_log_ratio_network(1, 1, hidden=(8,))
    loss = LogRatioLoss(nu)
    td = batch(8)
    td.rename_key_(("model", "next_observation"), "x_q")
    with pytest.raises(KeyError, match="model_next_observation"):
        loss(td)
    loss.set_keys(model_next_observation="x_q")
    assert torch.isfinite(loss(td)["loss_log_ratio"])


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="log_ratio_network"):
        LogRatioLoss(torch.nn.Linear(2, 1))
    with pytest.raises(TypeError, match="dynamics_model"):
        LogRatioLoss(make_log_ratio_network(1, 1, hidden=(8,)), torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match="bound"):
        make_log_ratio_network(1, 1, bound=0.0)


def test_the_fraction_of_nu_at_its_bound_is_logged():
    nu = make_log_ratio_network(1, 1, hidden=(8,), bound=0.5)
    loss = LogRatioLoss(nu)
    assert "nu_at_bound_fraction" in loss.out_keys
    last = nu.module.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(0.1)  # nu = 0.5 tanh(0.2) ~ 0.099: inside the bound
    assert float(loss(batch(16))["nu_at_bound_fraction"]) == 0.0
    with torch.no_grad():
        last.bias.fill_(-100.0)  # saturated: nu = -0.5 at every (x, a, x'), model or real
    assert float(loss(batch(16))["nu_at_bound_fraction"]) == 1.0


def test_the_critic_logs_the_model_rows_nu_at_its_bound():
    from torchrl.data import Bounded

    from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
    from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss

    nu = make_log_ratio_network(1, 1, hidden=(8,), bound=0.5)
    with torch.no_grad():
        nu.module.mlp[-1].weight.zero_()
        nu.module.mlp[-1].bias.fill_(100.0)  # nu = 0.5 everywhere
    spec = Bounded(-1.0, 1.0, shape=(1,))
    pi, q_c = make_tanh_gaussian_actor(1, spec, hidden=(4,)), make_tanh_gaussian_actor(1, spec, hidden=(4,))
    critic = VMBPOCriticLoss(
        make_q_value(1, 1, hidden=(4,)), make_state_value(1, hidden=(4,)), q_c, pi, nu, eta=1.0, gamma=0.9
    )
    td = batch(4)
    td["next", "reward"] = torch.zeros(4, 1)
    td["next", "terminated"] = torch.zeros(4, 1, dtype=torch.bool)
    td["model", "is_real"] = torch.tensor([True, True, False, False])
    out = critic(td)
    assert float(out["nu_at_bound_fraction"]) == 1.0  # over the two model rows; real rows have nu = 0
    assert float(out["log_ratio"]) == pytest.approx(0.25)
