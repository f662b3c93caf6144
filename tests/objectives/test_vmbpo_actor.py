"""VMBPOActorLoss (eq. 25): q_c is driven to pi exp(Q) / Z, a Gaussian in closed form for quadratic Q."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, TanhNormal

from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.vmbpo_actor import VMBPOActorLoss
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater:UserWarning")

SPEC = Bounded(-1.0, 1.0, shape=(1,))
MU_PI, SIGMA_PI, K = 0.3, 0.8, 0.5


class ConstantGaussian(nn.Module):
    """A state-independent pre-tanh Gaussian (loc, scale)."""

    def __init__(self, loc, scale):
        super().__init__()
        self.register_buffer("loc", torch.tensor([loc]))
        self.register_buffer("scale", torch.tensor([scale]))

    def forward(self, obs):
        shape = (*obs.shape[:-1], 1)
        return self.loc.expand(shape), self.scale.expand(shape)


class QuadraticInPreTanhAction(nn.Module):
    """``Q(x, a) = -K (atanh(a) - x)^2``: quadratic in the coordinates where tanh-Gaussians are Gaussian."""

    def forward(self, obs, action):
        u = torch.atanh(action.clamp(-1 + 1e-6, 1 - 1e-6))
        return -K * (u - obs).pow(2)


def fixed_tanh_gaussian(loc, scale):
    module = TensorDictModule(ConstantGaussian(loc, scale), in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0, "tanh_loc": False},
    )


def quadratic_critic(q_c, pi):
    qvalue = TensorDictModule(QuadraticInPreTanhAction(), ["observation", "action"], ["state_action_value"])
    return VMBPOCriticLoss(qvalue, make_state_value(1, hidden=(4,)), q_c, pi, eta=1.0, gamma=0.9, num_qvalue_nets=1)


def test_actor_converges_to_the_exponentially_twisted_baseline_policy():
    # In pre-tanh coordinates pi = N(MU_PI, SIGMA_PI^2) and exp Q(x, .) ∝ N(x, 1 / (2K)), so
    # q_c* = pi exp(Q) / Z = N(mu*, sigma*^2) with precision 1/SIGMA_PI^2 + 2K (eq. 15).
    precision = 1 / SIGMA_PI**2 + 2 * K
    sigma_star = precision**-0.5
    mu_star = lambda x: (MU_PI / SIGMA_PI**2 + 2 * K * x) / precision  # noqa: E731
    q_c, pi = make_tanh_gaussian_actor(1, SPEC, hidden=(32,)), fixed_tanh_gaussian(MU_PI, SIGMA_PI)
    loss = VMBPOActorLoss(q_c, quadratic_critic(q_c, pi), pi)
    optim = torch.optim.Adam(loss.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 600)
    for _ in range(600):
        out = loss(TensorDict({"observation": torch.rand(256, 1) * 2 - 1}, [256]))
        optim.zero_grad()
        out["loss_actor"].backward()
        optim.step()
        sched.step()
    xs = torch.tensor([[-0.8], [0.0], [0.8]])
    with torch.no_grad():
        dist = q_c.get_dist(TensorDict({"observation": xs}, [3]))
    torch.testing.assert_close(dist.loc, mu_star(xs), atol=0.04, rtol=0.0)
    torch.testing.assert_close(dist.scale, torch.full_like(xs, sigma_star), atol=0.015, rtol=0.0)


def test_loss_value_is_the_sample_mean_of_the_reverse_kl_integrand():
    q_c, pi = make_tanh_gaussian_actor(1, SPEC, hidden=(8,)), fixed_tanh_gaussian(MU_PI, SIGMA_PI)
    critic = quadratic_critic(q_c, pi)
    loss = VMBPOActorLoss(q_c, critic, pi)
    obs = torch.rand(64, 1)
    torch.manual_seed(11)
    out = loss(TensorDict({"observation": obs}, [64]))
    torch.manual_seed(11)
    dist_c = q_c.get_dist(TensorDict({"observation": obs}, [64]))
    u = dist_c.base_dist.rsample()  # the same noise as the loss drew
    log_ratio = (
        torch.distributions.Normal(dist_c.loc, dist_c.scale).log_prob(u)
        - torch.distributions.Normal(MU_PI, SIGMA_PI).log_prob(u)
    ).sum(-1)
    q = -K * (u - obs).pow(2).sum(-1)
    torch.testing.assert_close(out["loss_actor"], (log_ratio - q).mean(), atol=1e-4, rtol=1e-4)


def test_gradients_reach_q_c_only_and_flow_through_the_action():
    q_c, pi = make_tanh_gaussian_actor(2, SPEC, hidden=(8,)), make_tanh_gaussian_actor(2, SPEC, hidden=(8,))
    critic = VMBPOCriticLoss(
        make_q_value(2, 1, hidden=(8,)), make_state_value(2, hidden=(8,)), q_c, pi, eta=1.0, gamma=0.9
    )
    loss = VMBPOActorLoss(q_c, critic, pi)
    out = loss(TensorDict({"observation": torch.randn(16, 2)}, [16]))
    others = [*pi.parameters(), *critic.parameters()]
    grads = torch.autograd.grad(out["loss_actor"], [*q_c.parameters(), *others], allow_unused=True)
    n = len(list(q_c.parameters()))
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:n])
    assert all(g is None for g in grads[n:])
    assert {id(p) for p in loss.parameters()} == {id(p) for p in q_c.parameters()}


def test_constructor_rejects_bad_arguments():
    q_c, pi = make_tanh_gaussian_actor(2, SPEC, hidden=(8,)), make_tanh_gaussian_actor(2, SPEC, hidden=(8,))
    critic = VMBPOCriticLoss(
        make_q_value(2, 1, hidden=(8,)), make_state_value(2, hidden=(8,)), q_c, pi, eta=1.0, gamma=0.9
    )
    with pytest.raises(TypeError, match="critic"):
        VMBPOActorLoss(q_c, make_q_value(2, 1), pi)
    with pytest.raises(ValueError, match="distinct"):
        VMBPOActorLoss(q_c, critic, q_c)
    with pytest.raises(KeyError, match="observation"):
        VMBPOActorLoss(q_c, critic, pi)(TensorDict({"obs": torch.zeros(2, 2)}, [2]))


@pytest.mark.parametrize("target_entropy", [None, -1.0])
def test_the_actors_draw_is_eq_24s_value_target_and_the_critic_regresses_v_on_it(target_entropy):
    # Same RNG state -> the same a~ ~ q_c in both; the shared sample must equal the critic's own
    # eq.-24 target (online twin-min Q, prior with the entropy term), and V's loss on it must match.
    torch.manual_seed(0)
    q_c, pi = make_tanh_gaussian_actor(3, SPEC, hidden=(8,)), make_tanh_gaussian_actor(3, SPEC, hidden=(8,))
    critic = VMBPOCriticLoss(
        make_q_value(3, 1, hidden=(8,)),
        make_state_value(3, hidden=(8,)),
        q_c,
        pi,
        eta=2.0,
        gamma=0.9,
        uniform_prior_weight=0.3,
        target_entropy=target_entropy,
    )
    actor = VMBPOActorLoss(q_c, critic, pi)
    td = TensorDict(
        {
            "observation": torch.randn(7, 3),
            "action": torch.rand(7, 1) * 2 - 1,
            ("next", "observation"): torch.randn(7, 3),
            ("next", "reward"): torch.randn(7, 1),
            ("next", "terminated"): torch.zeros(7, 1, dtype=torch.bool),
        },
        [7],
    )
    torch.manual_seed(1)
    out, sample = actor.forward_with_value_sample(td)
    torch.manual_seed(1)
    y, _, policy_log_ratio, log_q_c = critic._soft_value(td["observation"], target=False)
    torch.testing.assert_close(sample.target, y)
    torch.testing.assert_close(sample.policy_log_ratio, policy_log_ratio)
    torch.testing.assert_close(sample.log_q_c, log_q_c)
    assert not any(t.requires_grad for t in sample) and out["loss_actor"].requires_grad
    torch.testing.assert_close(out["policy_log_ratio"], policy_log_ratio.mean())
    torch.manual_seed(2)  # the Q loss draws a' only under the action-value bootstrap; this critic's is V'
    shared = critic(td, value_sample=sample)
    v = critic._value(td["observation"], critic.value_network_params)
    torch.testing.assert_close(shared["loss_value"], (v - y).pow(2).mean())
    torch.testing.assert_close(shared["value_target"], y.mean())
    if target_entropy is not None:
        assert shared["loss_entropy_weight"].requires_grad
    with pytest.raises(ValueError, match="value_sample has"):
        critic(td[:3], value_sample=sample)
