"""ExponentialTDLoss (VMBPO-MFE, eq. 9): minimiser, limits, overflow guard and gradient routing."""

import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ValueOperator
from torchrl.objectives import SoftUpdate

from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives import functional_mfe as fm
from torchrl_vmbpo.objectives.exponential_td import ExponentialTDLoss
from torchrl_vmbpo.objectives.vmbpo_actor import VMBPOActorLoss

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater:UserWarning")
ETA, GAMMA = 2.0, 0.9


class ConstantQ(nn.Module):
    """``Q(x, a) = q``: one parameter, so the minimiser over it is the batch's fixed point."""

    def __init__(self):
        super().__init__()
        self.q = nn.Parameter(torch.zeros(1))

    def forward(self, obs, action):
        return self.q.expand(*obs.shape[:-1], 1)


class LinearV(nn.Module):
    """``V(x) = 0.5 x_0 - x_1 + 0.3``: a hand-checkable V'."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[0.5, -1.0]]))
        self.bias = nn.Parameter(torch.tensor([0.3]))

    def forward(self, obs):
        return obs @ self.weight.T + self.bias


def hand_made_loss(temperature, max_exponent=None, num_qvalue_nets=2):
    spec = Bounded(-1.0, 1.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(2, spec, hidden=(4,)), make_tanh_gaussian_actor(2, spec, hidden=(4,))
    return ExponentialTDLoss(
        ValueOperator(ConstantQ(), in_keys=["observation", "action"]),
        ValueOperator(LinearV(), in_keys=["observation"]),
        q_c,
        pi,
        eta=ETA,
        gamma=GAMMA,
        temperature=temperature,
        max_exponent=max_exponent,
        num_qvalue_nets=num_qvalue_nets,
    )


def real_batch(n, next_obs=None, terminated=None):
    return TensorDict(
        {
            "observation": torch.randn(n, 2),
            "action": torch.rand(n, 1) * 2 - 1,
            ("next", "observation"): torch.randn(n, 2) if next_obs is None else next_obs,
            ("next", "reward"): torch.randn(n, 1),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool) if terminated is None else terminated,
        },
        [n],
    )


def minimise_q(loss, td, steps=50):
    params = list(loss.qvalue_network_params.values(True, True))
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        value = loss.qvalue_loss(td)[0]
        value.backward()
        return value

    opt.step(closure)
    return torch.cat([p.detach().reshape(-1) for p in params])


# --- pure maths -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [1.0, 0.5, 3.0])
def test_mean_loss_on_fixed_targets_is_minimised_at_tau_log_mean_exp(tau):
    y = torch.randn(64, dtype=torch.float64) * 1.5 + 0.7
    q_star = tau * (torch.logsumexp(y / tau, 0) - math.log(64))
    torch.testing.assert_close(fm.exponential_td_fixed_point(y, temperature=tau), q_star)
    assert abs(q_star - y.mean()) > 0.1  # the fixed point is not the mean TD target
    q = q_star.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fm.exponential_td_loss(q, y, temperature=tau).mean(), q)
    assert abs(grad) < 1e-10  # stationary, and convex: the global minimum

    def mean_loss(v):
        return fm.exponential_td_loss(torch.tensor(v, dtype=torch.float64), y, temperature=tau).mean()

    for delta in (-0.05, 0.05):
        assert mean_loss(float(q_star) + delta) > mean_loss(float(q_star))


def test_temperature_limits_are_the_mean_and_the_max_of_the_targets():
    y = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    assert abs(fm.exponential_td_fixed_point(y, temperature=1e4) - y.mean()) < 1e-3
    assert abs(fm.exponential_td_fixed_point(y, temperature=1e-3) - y.max()) < 1e-2
    # Large tau: the loss tends to half the squared TD error (gradient scale kept, not vanishing).
    q = torch.tensor([0.5, -0.3, 1.0], dtype=torch.float64)
    torch.testing.assert_close(fm.exponential_td_loss(q, y, temperature=1e4), 0.5 * (y - q) ** 2, rtol=1e-3, atol=0)


def test_loss_is_tau_times_the_spec_loss_up_to_a_q_free_term():
    y, q, tau = torch.tensor(1.3), torch.tensor([-0.4, 0.2, 2.5]), 0.7
    spec_loss = tau * torch.exp((y - q) / tau) + q  # the spec's l(Q)
    torch.testing.assert_close(fm.exponential_td_loss(q, y, temperature=tau), tau * spec_loss - tau * y - tau**2)


def test_linear_continuation_is_exact_below_max_exponent_and_bounded_above():
    u = torch.tensor([-3.0, 0.0, 1.9, 2.0])
    torch.testing.assert_close(fm.exp_linear(u, 2.0), u.exp())
    # C1 at the threshold, slope exp(c) above it.
    x = torch.tensor([2.0 - 1e-3, 2.0, 2.0 + 1e-3, 50.0, 500.0], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(fm.exp_linear(x, 2.0).sum(), x)
    torch.testing.assert_close(slope, torch.tensor([math.exp(2.0 - 1e-3), *[math.exp(2.0)] * 4], dtype=torch.float64))
    # An outlying target: exp overflows float32, the continued loss stays finite with a bounded gradient.
    q, y = torch.zeros(2, requires_grad=True), torch.tensor([0.0, 200.0])
    assert torch.isinf(fm.exponential_td_loss(q, y)).any()
    (grad,) = torch.autograd.grad(fm.exponential_td_loss(q, y, max_exponent=5.0).sum(), q)
    torch.testing.assert_close(grad, torch.tensor([0.0, 1.0 - math.exp(5.0)]))


# --- the LossModule -------------------------------------------------------------------------------------------


def test_q_target_is_eta_r_plus_discounted_target_value_stopped_at_termination():
    loss = hand_made_loss(1.0)
    terminated = torch.tensor([[False], [True], [False], [False]])
    td = real_batch(4, terminated=terminated)
    td["done"] = terminated  # a truncated row (done, not terminated) would still bootstrap: only terminated is read
    y, nu = loss.q_target(td)
    next_obs = td["next", "observation"]
    v_next = 0.5 * next_obs[:, 0] - next_obs[:, 1] + 0.3
    expected = ETA * td["next", "reward"].squeeze(-1) + GAMMA * (~terminated.squeeze(-1)).float() * v_next
    torch.testing.assert_close(y, expected)
    assert nu.abs().max() == 0  # model-free: no log-ratio term


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_minimiser_on_a_fixed_batch_is_eq9_log_mean_exp_of_the_targets(tau):
    # One (x, a) with many sampled next states: V'(x') = 0.5 x'_0 - x'_1 + 0.3, x' ~ N(0, s^2 I).
    n, s = 4096, 0.8
    loss = hand_made_loss(tau, max_exponent=None)
    td = real_batch(n, next_obs=torch.randn(n, 2) * s)
    td["next", "reward"] = torch.full((n, 1), -0.25)
    y, _ = loss.q_target(td)
    q = minimise_q(loss, td)
    sample_fixed_point = fm.exponential_td_fixed_point(y, temperature=tau)
    torch.testing.assert_close(q, sample_fixed_point.expand(2), atol=1e-4, rtol=0)  # both twin copies
    # Population closed form of eq. 9 with temperature: eta r + gamma E V' + (gamma sd V')^2 / (2 tau).
    sd_v = s * math.sqrt(0.5**2 + 1.0)
    eq9 = ETA * -0.25 + GAMMA * 0.3 + (GAMMA * sd_v) ** 2 / (2 * tau)
    assert abs(float(sample_fixed_point) - eq9) < 0.03
    assert abs(float(y.mean()) - eq9) > 0.1  # mean TD (a squared loss) would miss it
    out = loss(td)
    assert abs(float(out["exp_td"]) - 1.0) < 1e-3  # E[exp((y - Q) / tau)] = 1 at the fixed point
    assert float(out["linearised_fraction"]) == 0.0
    # The logged spread: y's standard deviation is gamma sd(V'), and u = (y - Q) / tau has sd(y) / tau.
    assert abs(float(out["q_target_std"]) - GAMMA * sd_v) < 0.03
    torch.testing.assert_close(out["td_exponent_std"], out["q_target_std"] / tau, rtol=1e-4, atol=0)


def test_each_loss_reaches_only_its_own_network():
    spec = Bounded(-1.0, 1.0, shape=(2,))
    q_c, pi = make_tanh_gaussian_actor(3, spec, hidden=(8,)), make_tanh_gaussian_actor(3, spec, hidden=(8,))
    loss = ExponentialTDLoss(
        make_q_value(3, 2, hidden=(8,)),
        make_state_value(3, hidden=(8,)),
        q_c,
        pi,
        eta=ETA,
        gamma=GAMMA,
        temperature=0.5,
    )
    actor = VMBPOActorLoss(q_c, loss, pi)  # the VMBPO actor reads Q from this critic unchanged
    SoftUpdate(loss, tau=0.01)
    networks = {
        "qvalue": list(loss.qvalue_network_params.values(True, True)),
        "value": list(loss.value_network_params.values(True, True)),
        "q_c": list(q_c.parameters()),
        "pi": list(pi.parameters()),
    }
    owner = {"loss_qvalue": "qvalue", "loss_value": "value", "loss_actor": "q_c"}
    td = TensorDict(
        {
            "observation": torch.randn(16, 3),
            "action": torch.rand(16, 2) * 2 - 1,
            ("next", "observation"): torch.randn(16, 3),
            ("next", "reward"): torch.randn(16, 1) * 3,
            ("next", "terminated"): torch.zeros(16, 1, dtype=torch.bool),
        },
        [16],
    )
    outputs = {**loss(td).to_dict(), **actor(td).to_dict()}
    for name, network in owner.items():
        for other, params in networks.items():
            grads = torch.autograd.grad(outputs[name], params, retain_graph=True, allow_unused=True)
            reached = any(g is not None and g.abs().sum() > 0 for g in grads)
            assert reached == (other == network), f"{name} {'reaches' if reached else 'misses'} {other}"
    targets = [
        *loss.target_qvalue_network_params.values(True, True),
        *loss.target_value_network_params.values(True, True),
    ]
    assert targets and not any(t.requires_grad for t in targets)
    assert not any(v.requires_grad for k, v in loss(td).items() if not k.startswith("loss_"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"max_exponent": 0.0}, "max_exponent"),
        ({"eta": 0.0}, "eta"),
    ],
)
def test_constructor_rejects_bad_arguments_by_name(kwargs, match):
    spec = Bounded(-1.0, 1.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(2, spec, hidden=(4,)), make_tanh_gaussian_actor(2, spec, hidden=(4,))
    args = {"eta": 1.0, "gamma": 0.9, **kwargs}
    with pytest.raises(ValueError, match=match):
        ExponentialTDLoss(make_q_value(2, 1, hidden=(4,)), make_state_value(2, hidden=(4,)), q_c, pi, **args)
