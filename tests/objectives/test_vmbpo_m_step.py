"""MStepLoss (eq. 27): weighted MAP of pi on q_c's actions with a KL trust region, and the copy mode."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, TanhNormal

from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.functional_vmbpo import diag_gaussian_kl
from torchrl_vmbpo.objectives.m_step import MStepLoss

SPEC = Bounded(-1.0, 1.0, shape=(1,))


class ConstantGaussian(nn.Module):
    def __init__(self, loc, scale):
        super().__init__()
        self.register_buffer("loc", torch.tensor([loc]))
        self.register_buffer("scale", torch.tensor([scale]))

    def forward(self, obs):
        shape = (*obs.shape[:-1], 1)
        return self.loc.expand(shape), self.scale.expand(shape)


def fixed_tanh_gaussian(loc, scale):
    module = TensorDictModule(ConstantGaussian(loc, scale), in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0, "tanh_loc": False},
    )


def gaussian(policy, obs):
    with torch.no_grad():
        dist = policy.get_dist(TensorDict({"observation": obs}, obs.shape[:-1]))
    return dist.loc, dist.scale


def train(loss, sample_obs, steps):
    optim = torch.optim.Adam(loss.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, steps)
    for _ in range(steps):
        out = loss(TensorDict({"observation": sample_obs()}, [256]))
        optim.zero_grad()
        out["loss_policy"].backward()
        optim.step()
        sched.step()
    return out


def test_with_no_trust_region_pi_is_fitted_to_q_c():
    q_c = make_tanh_gaussian_actor(1, SPEC, hidden=(16,))
    pi = make_tanh_gaussian_actor(1, SPEC, hidden=(32,))
    loss = MStepLoss(pi, q_c, kl_coef=0.0)
    train(loss, lambda: torch.rand(256, 1) * 2 - 1, 600)
    xs = torch.tensor([[-0.8], [-0.3], [0.3], [0.8]])
    (loc_c, scale_c), (loc_pi, scale_pi) = gaussian(q_c, xs), gaussian(pi, xs)
    torch.testing.assert_close(loc_pi, loc_c, atol=0.05, rtol=0.0)
    torch.testing.assert_close(scale_pi, scale_c, atol=0.05, rtol=0.0)
    assert diag_gaussian_kl(loc_c, scale_c, loc_pi, scale_pi).max().item() < 0.005


@pytest.mark.parametrize("kl_coef", [1.0, 3.0])
def test_trust_region_gives_the_closed_form_compromise_between_q_c_and_pi_old(kl_coef):
    # argmin_{mu, s} -E_{q_c} log N(u; mu, s) + lam KL(N_old || N(mu, s)):
    # mu = (mu_c + lam mu_old) / (1 + lam), s^2 = [s_c^2 + (mu_c - mu)^2 + lam (s_old^2 + (mu_old - mu)^2)] / (1 + lam)
    mu_c, s_c = 0.6, 0.3
    q_c = fixed_tanh_gaussian(mu_c, s_c)
    pi = make_tanh_gaussian_actor(1, SPEC, hidden=(16,))
    x = torch.zeros(1, 1)
    mu_old, s_old = (t.item() for t in gaussian(pi, x))
    loss = MStepLoss(pi, q_c, kl_coef=kl_coef)  # the snapshot pi_old is pi at construction
    train(loss, lambda: torch.zeros(256, 1), 300)
    mu = (mu_c + kl_coef * mu_old) / (1 + kl_coef)
    var = (s_c**2 + (mu_c - mu) ** 2 + kl_coef * (s_old**2 + (mu_old - mu) ** 2)) / (1 + kl_coef)
    loc_pi, scale_pi = gaussian(pi, x)
    assert loc_pi.item() == pytest.approx(mu, abs=0.01)
    assert scale_pi.item() == pytest.approx(var**0.5, abs=0.01)


def test_snapshot_resets_the_trust_region_centre():
    q_c, pi = make_tanh_gaussian_actor(1, SPEC, hidden=(8,)), make_tanh_gaussian_actor(1, SPEC, hidden=(8,))
    loss = MStepLoss(pi, q_c, kl_coef=0.5, period=7)
    assert loss.period == 7
    out = train(loss, lambda: torch.rand(256, 1), 20)
    assert out["kl_old_policy"].item() > 1e-4
    loss.snapshot_old_policy()
    assert loss(TensorDict({"observation": torch.rand(32, 1)}, [32]))["kl_old_policy"].item() == 0.0


def test_copy_mode_sets_pi_to_q_c_and_returns_nothing_to_step():
    q_c, pi = make_tanh_gaussian_actor(2, SPEC, hidden=(8,)), make_tanh_gaussian_actor(2, SPEC, hidden=(8,))
    loss = MStepLoss(pi, q_c, mode="copy")
    obs = torch.randn(10, 2)
    out = loss(TensorDict({"observation": obs}, [10]))
    assert not any(key.startswith("loss") for key in out.keys())
    assert out["kl_variational_baseline"].item() > 0
    loss.copy_q_c_into_pi()
    for a, b in zip(gaussian(pi, obs), gaussian(q_c, obs)):
        torch.testing.assert_close(a, b)
    assert loss(TensorDict({"observation": obs}, [10]))["kl_variational_baseline"].item() == 0.0
    assert all(p.requires_grad for p in pi.parameters())  # still trainable, same tensors
    with torch.no_grad():
        old = [v.clone() for v in loss.old_policy_params.values(True, True)]
    assert all(torch.equal(o, p) for o, p in zip(old, TensorDict.from_module(pi).values(True, True)))


def test_copy_mode_needs_the_same_architecture():
    with pytest.raises(ValueError, match="same architecture"):
        MStepLoss(
            make_tanh_gaussian_actor(2, SPEC, hidden=(8,)), make_tanh_gaussian_actor(2, SPEC, hidden=(16,)), mode="copy"
        )


def test_the_loss_owns_pi_only_and_sends_it_all_gradients():
    q_c, pi = make_tanh_gaussian_actor(2, SPEC, hidden=(8,)), make_tanh_gaussian_actor(2, SPEC, hidden=(8,))
    loss = MStepLoss(pi, q_c, kl_coef=1.0)
    with torch.no_grad():  # move pi away from pi_old so the KL term has a gradient too
        for p in pi.parameters():
            p.add_(0.1)
    out = loss(TensorDict({"observation": torch.randn(16, 2)}, [16]))
    grads = torch.autograd.grad(out["loss_policy"], [*pi.parameters(), *q_c.parameters()], allow_unused=True)
    n = len(list(pi.parameters()))
    assert all(g is not None for g in grads[:n]) and all(g is None for g in grads[n:])
    assert {id(p) for p in loss.parameters()} == {id(p) for p in pi.parameters()}
    assert any(name.startswith("old_policy_params") for name in loss.state_dict())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"mode": "mpo"}, ValueError, "mode"),
        ({"kl_coef": -1.0}, ValueError, "kl_coef"),
        ({"period": 0}, ValueError, "period"),
        ({"period": 2.5}, ValueError, "period"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, error, match):
    q_c, pi = make_tanh_gaussian_actor(2, SPEC, hidden=(8,)), make_tanh_gaussian_actor(2, SPEC, hidden=(8,))
    with pytest.raises(error, match=match):
        MStepLoss(pi, q_c, **kwargs)


def test_pi_and_q_c_must_be_distinct():
    pi = make_tanh_gaussian_actor(2, SPEC, hidden=(8,))
    with pytest.raises(ValueError, match="distinct"):
        MStepLoss(pi, pi)


@pytest.mark.parametrize("kl_coef, kl_coef_std", [(0.0, 4.0), (0.5, 9.0)])
def test_decoupled_trust_region_gives_its_closed_form_minimiser(kl_coef, kl_coef_std):
    # argmin -E_{q_c} log N(u; mu, s) + lam_m (mu_old - mu)^2 / (2 s_old^2) + lam_s KL(N(mu_old, s_old) || N(mu_old, s)):
    # s^2 = [s_c^2 + (mu_c - mu)^2 + lam_s s_old^2] / (1 + lam_s), mu = (mu_c s_old^2 + lam_m mu_old s^2) / (s_old^2 + lam_m s^2)
    mu_c, s_c = 0.6, 0.1
    q_c = fixed_tanh_gaussian(mu_c, s_c)
    pi = make_tanh_gaussian_actor(1, SPEC, hidden=(16,))
    x = torch.zeros(1, 1)
    mu_old, s_old = (t.item() for t in gaussian(pi, x))
    loss = MStepLoss(pi, q_c, kl_coef=kl_coef, kl_coef_std=kl_coef_std)
    out = train(loss, lambda: torch.zeros(256, 1), 400)
    mu, var = mu_c, s_c**2
    for _ in range(100):  # the two stationarity conditions, solved by fixed-point iteration
        var = (s_c**2 + (mu_c - mu) ** 2 + kl_coef_std * s_old**2) / (1 + kl_coef_std)
        mu = (mu_c * s_old**2 + kl_coef * mu_old * var) / (s_old**2 + kl_coef * var)
    loc_pi, scale_pi = gaussian(pi, x)
    assert loc_pi.item() == pytest.approx(mu, abs=0.01)
    assert scale_pi.item() == pytest.approx(var**0.5, abs=0.01)
    assert {"kl_old_mean", "kl_old_std"} <= set(out.keys())
    assert scale_pi.item() > s_c + 0.1  # the spread lags q_c's while the mean follows it


def test_kl_coef_std_is_checked():
    with pytest.raises(ValueError, match="kl_coef_std"):
        MStepLoss(
            make_tanh_gaussian_actor(1, SPEC, hidden=(4,)),
            make_tanh_gaussian_actor(1, SPEC, hidden=(4,)),
            kl_coef_std=-1.0,
        )
