"""Sample-based VMBPO critic (eqs. 22-24) and actor (eq. 25) against the exact tabular E-step.

The deep losses act on continuous tanh-Gaussian policies; the tabular oracle on finite actions. The
test MDP is built so that the continuous problem reduces EXACTLY (closed-form integrals only) to a
finite one, which ``torchrl_vmbpo.tabular`` solves to 1e-12:

* states: X = 5 one-hot observations, the last one terminal (it exercises ``terminated``);
* action a = tanh(u) in (-1, 1), u the pre-tanh coordinate; the dynamics see the action only through
  its sign, the bin b = 1{u >= 0}: p(x' | x, b) is a random 2-action tabular kernel;
* reward r(x, a) = r0(x) - K (u - m(x))^2, quadratic in u;
* pi and q_c are per-state tanh-Gaussians, N(mu(x), sigma(x)^2) in u.

Then every expectation over a has a closed form: P(b = 1) = Phi(mu / sigma), E[(u - m)^2] =
(mu - m)^2 + sigma^2, KL(q_c || pi) is the Gaussian KL (tanh is a shared bijection). Discounting is
form (ii), the one the losses use (y_Q = eta r + gamma (1 - terminated) V'(x') - nu).

``test_critic_evaluates_q_c_under_the_exact_twisted_dynamics`` (the critic alone). q_c and pi are
FIXED; q_d is given exactly: q_d = q_d^V (eq. 14) for V = V_{q_c}, the fixed point of T_{q_c} (eq. 6),
and nu is a lookup of the exact log(q_d / p) at one-hot (x, b(a), x'). With q_d fixed, the critic's
targets define an affine gamma-contraction whose unique fixed point is V_{q_c} (q_d^V attains the
max over q_d in eq. 6). On the tabular side this is T_{q_c} of a 2-action MDP with the bin policies
q_c(b|x), pi(b|x), once the part of the continuous KL that the bins do not see,
KL(q_c || pi) - KL(q_c(b) || pi(b)) >= 0, and E_{q_c}[r] are folded into a per-state reward. V is a
table (one-hot -> linear) and Q is linear in one-hot features [1{u<0}, 1{u>=0}, u, u^2], which span
the exact Q(x, a) = eta r0 - eta K (u - m)^2 + log E_{p(.|x,b)}[exp(gamma V(x'))] (eq. 9): a least-
squares fixed point with no approximation error, so V and Q must match to sampling noise.

``test_critic_and_actor_reach_the_exact_e_step_solution`` (end to end). Here the two bins share one
kernel (dynamics independent of a), so pi exp(Q) is Gaussian in u and q_c* (eq. 15) lies in the
tanh-Gaussian family: precision 1/sigma_pi^2 + 2 eta K, mean (mu_pi/sigma_pi^2 + 2 eta K m)/precision.
q_c (the package's tanh-Gaussian actor on one-hot x, a table) is trained by eq. 25 jointly with the
critic. q_d and nu are not given the answer: at every step they are the exact solutions of eqs. 19
and 21 for the current target V' (the categorical weighted MLE of eq. 19 is p exp(gamma V') / Z, and
nu = log of its ratio to p), i.e. a model-based policy iteration whose sampled parts are the critic
and the actor. The exact V_pi, Q_pi and q_d* come from tabular value iteration on the 1-action MDP
with reward eta r0 + log E_{u~pi}[exp(-eta K (u - m)^2)] (closed form), Prop. 1 / eq. 11.

``test_oracle_is_exact_and_tells_the_variants_apart`` checks the reductions themselves against the
continuous formulas (eq. 10 in closed form; Prop. 1 and eq. 15 by quadrature over u) and that the
tolerances can fail: with nu dropped, nu discounted by gamma, or q_d = p, V moves by > 6 V_TOL, and
q_c* is > 4 tolerances away from pi (mutants of the losses with these errors fail the training tests).

What is not compared: with action-dependent dynamics q_c* = pi exp(Q)/Z leaves the tanh-Gaussian
family (Q jumps at u = 0), so the actor is compared only where its optimum is exact (second test).
"""

import math

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, TanhNormal
from torchrl.objectives import SoftUpdate

from torchrl_vmbpo.models.networks import make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.vmbpo_actor import VMBPOActorLoss
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss
from torchrl_vmbpo.tabular import (
    TabularMDP,
    bellman_qc,
    bellman_qc_qd,
    model_free_value_iteration,
    random_mdp,
    soft_next_value,
    twisted_dynamics,
)

NUM_STATES, ETA, GAMMA, K = 5, 1.5, 0.8, 0.5
LIVE = NUM_STATES - 1  # the last state is terminal
SPEC = Bounded(-1.0, 1.0, shape=(1,))
# Training: Adam on cosine-decaying lr, targets by SoftUpdate. Observed errors are listed in the tests.
LR, LR_FLOOR, TAU, BATCH = 0.1, 1e-3, 0.5, 512
V_TOL = 0.05  # sup-norm on V (|V| ~ 1-5); the nearest wrong variant is 0.34 away (first test)
Q_TOL = 0.1  # sup-norm on Q at u = mu +- {0, 0.75, 1.5} sigma of the policy that generated the actions
MU_TOL, SIGMA_TOL = 0.04, 0.03  # on q_c's pre-tanh (loc, scale) against q_c* (eq. 15)


# ---- the MDP and its exact solutions (float64) --------------------------------------------------
def problem(shared_dynamics: bool):
    """Kernel p [X, 2, X], terminal mask, r0, m, pi's and q_c's (mu, sigma) per state."""
    g = torch.Generator().manual_seed(7)
    base = random_mdp(
        NUM_STATES, 2, gamma=GAMMA, eta=ETA, discount="discounted_elbo", num_terminal=1, zero_prob=0.3, generator=g
    )
    p = base.transition[:, :1].expand(-1, 2, -1) if shared_dynamics else base.transition
    u01 = lambda lo, hi: lo + (hi - lo) * torch.rand(NUM_STATES, dtype=torch.float64, generator=g)  # noqa: E731
    prm = {
        "r0": u01(-1.5, 1.5),
        "m": u01(-1.0, 1.0),
        "mu_pi": u01(-0.5, 0.5),
        "sigma_pi": u01(0.5, 1.0),
        "sigma_c": u01(0.3, 0.7),
    }
    # q_c (first test) centred near the reward's peak m: a fixed, arbitrary policy, chosen so that the
    # per-sample variance of the targets (mostly K (u - m)^2) stays small enough for a short run
    prm["mu_c"] = prm["m"] + u01(-0.5, 0.5)
    return p.contiguous(), base.terminal, prm


def tabular_mdp(p, terminal, reward):
    initial = (~terminal).double() / (~terminal).sum()
    return TabularMDP.create(p, reward, terminal, initial, gamma=GAMMA, eta=ETA, discount="discounted_elbo")


def gaussian_kl(mu1, s1, mu2, s2):
    return torch.log(s2 / s1) + (s1**2 + (mu1 - mu2) ** 2) / (2 * s2**2) - 0.5


def bins(mu, sigma):
    """(P(u < 0), P(u >= 0)) under N(mu, sigma^2), [X, 2]."""
    above = torch.special.ndtr(mu / sigma)
    return torch.stack([1 - above, above], -1)


def fixed_point(operator, value, sweeps=400):
    for _ in range(sweeps):  # gamma^400 ~ 1e-39: exact to float64
        value = operator(value)
    assert (operator(value) - value).abs().max() < 1e-12
    return value


def exact_q_c_evaluation(p, terminal, prm):
    """V_{q_c}, q_d^{V_{q_c}} and the Q features' exact weights [X, 4] for fixed q_c (first test)."""
    q_bin, pi_bin = bins(prm["mu_c"], prm["sigma_c"]), bins(prm["mu_pi"], prm["sigma_pi"])
    kl_cont = gaussian_kl(prm["mu_c"], prm["sigma_c"], prm["mu_pi"], prm["sigma_pi"])
    kl_bin = (q_bin * (q_bin / pi_bin).log()).sum(-1)
    mean_reward = prm["r0"] - K * ((prm["mu_c"] - prm["m"]) ** 2 + prm["sigma_c"] ** 2)  # E_{q_c}[r]
    reward = (mean_reward - (kl_cont - kl_bin) / ETA)[:, None].expand(-1, 2)
    mdp = tabular_mdp(p, terminal, reward)
    value = fixed_point(lambda v: bellman_qc(mdp, pi_bin, v, q_bin), torch.zeros(NUM_STATES, dtype=torch.float64))
    soft_next = soft_next_value(mdp, value)  # [X, 2]: log E_{p(.|x,b)}[exp(gamma V(x'))]
    const = ETA * (prm["r0"] - K * prm["m"] ** 2)
    weights = torch.stack(
        [const + soft_next[:, 0], const + soft_next[:, 1], 2 * ETA * K * prm["m"], torch.full_like(const, -ETA * K)], -1
    )
    return mdp, q_bin, pi_bin, value, twisted_dynamics(mdp, value), weights


def exact_e_step(p, terminal, prm):
    """V_pi, Q_pi's weights [X, 3] on (1, u, u^2), q_d* [X, X], q_c* (mu, sigma) (second test)."""
    mu, s2, c = prm["mu_pi"], prm["sigma_pi"] ** 2, ETA * K
    # log E_{u ~ N(mu, s2)}[exp(-c (u - m)^2)]: the action part of eq. 11, in closed form
    log_mgf = -0.5 * torch.log1p(2 * c * s2) - c * (mu - prm["m"]) ** 2 / (1 + 2 * c * s2)
    mdp = tabular_mdp(p[:, :1], terminal, (prm["r0"] + log_mgf / ETA)[:, None])
    sol = model_free_value_iteration(mdp, torch.ones(NUM_STATES, 1, dtype=torch.float64), tol=1e-13)
    soft_next = soft_next_value(mdp, sol.value)[:, 0]
    weights = torch.stack(
        [ETA * (prm["r0"] - K * prm["m"] ** 2) + soft_next, 2 * c * prm["m"], torch.full_like(mu, -c)], -1
    )
    precision = 1 / s2 + 2 * c
    return sol.value, weights, sol.q_d[:, 0], (mu / s2 + 2 * c * prm["m"]) / precision, precision**-0.5


# ---- modules: tables on one-hot inputs ------------------------------------------------------------
class TableGaussian(nn.Module):
    """A fixed per-state pre-tanh Gaussian: one-hot x -> (mu(x), sigma(x))."""

    def __init__(self, mu, sigma):
        super().__init__()
        self.register_buffer("table", torch.stack([mu, sigma], -1).float())

    def forward(self, obs):
        out = obs @ self.table
        return out[..., :1], out[..., 1:]


def fixed_actor(mu, sigma):
    module = TensorDictModule(TableGaussian(mu, sigma), in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0, "tanh_loc": False},
    )


def pre_tanh(action):
    return torch.atanh(action.clamp(-1 + 1e-7, 1 - 1e-7))


class FeatureQ(nn.Module):
    """``Q(x, a) = w(x) . phi(u)``, phi = [1{u<0}, 1{u>=0}, u, u^2] (``with_bins``) or [1, u, u^2]."""

    def __init__(self, with_bins: bool):
        super().__init__()
        self.with_bins = with_bins
        self.weight = nn.Parameter(torch.zeros(NUM_STATES, 4 if with_bins else 3))

    def forward(self, obs, action):
        u = pre_tanh(action)
        first = [(u < 0).float(), (u >= 0).float()] if self.with_bins else [torch.ones_like(u)]
        return ((obs @ self.weight) * torch.cat([*first, u, u**2], -1)).sum(-1, keepdim=True)


class TableLogRatio(nn.Module):
    """nu(x'|x, a) = table[x, b(a), x'] on one-hot x, x' (the exact log q_d / p)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.zeros(NUM_STATES, 2, NUM_STATES))

    def set(self, log_q_d, log_p):
        # 0 off p's support: never sampled (q_d << p), kept finite for the one-hot contraction
        self.table.copy_(torch.where(torch.isfinite(log_p), log_q_d - log_p, 0.0))

    def forward(self, obs, action, next_obs):
        rows = self.table[obs.argmax(-1), (action[..., 0] >= 0).long()]  # [*B, X]
        return (rows * next_obs).sum(-1, keepdim=True)


def make_critic(q_c, pi, nu, with_bins):
    qvalue = TensorDictModule(FeatureQ(with_bins), ["observation", "action"], ["state_action_value"])
    nu_module = TensorDictModule(nu, ["observation", "action", ("next", "observation")], [("model", "log_ratio")])
    # num_qvalue_nets=1: eqs. 22-24 verbatim (a twin minimum would bias the fixed point downwards)
    return VMBPOCriticLoss(
        qvalue, make_state_value(NUM_STATES, hidden=()), q_c, pi, nu_module, eta=ETA, gamma=GAMMA, num_qvalue_nets=1
    )


# ---- sampling model transitions -------------------------------------------------------------------
def model_batch(q_c, q_d, terminal, prm, size):
    """(x, a ~ q_c, r(x, a), x' ~ q_d(.|x, b(a)), terminated) with x uniform over live states."""
    x = torch.randint(LIVE, (size,))
    obs = nn.functional.one_hot(x, NUM_STATES).float()
    with torch.no_grad():
        u = q_c.get_dist(TensorDict({"observation": obs}, [size])).base_dist.sample()[:, 0].double()
    reward = prm["r0"][x] - K * (u - prm["m"][x]) ** 2
    next_x = torch.multinomial(q_d[x, (u >= 0).long()], 1)[:, 0]
    return TensorDict(
        {
            "observation": obs,
            "action": torch.tanh(u).float()[:, None],
            ("next", "observation"): nn.functional.one_hot(next_x, NUM_STATES).float(),
            ("next", "reward"): reward.float()[:, None],
            ("next", "terminated"): terminal[next_x][:, None],
        },
        [size],
    )


def train(critic, steps, make_batch, actor=None):
    """``steps`` Adam updates of eqs. 22-24 (and eq. 25 if ``actor``) on batches from ``make_batch()``."""
    params = [*critic.parameters(), *(actor.parameters() if actor is not None else [])]
    optim = torch.optim.Adam(params, lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, steps, eta_min=LR * LR_FLOOR)
    target = SoftUpdate(critic, tau=TAU)  # the one updater of V' and Q'
    for _ in range(steps):
        batch = make_batch()
        out = critic(batch)
        loss = out["loss_qvalue"] + out["loss_value"]
        if actor is not None:
            loss = loss + actor(batch)["loss_actor"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        target.step()


def features(u, with_bins):
    first = [(u < 0).to(u.dtype), (u >= 0).to(u.dtype)] if with_bins else [torch.ones_like(u)]
    return torch.stack([*first, u, u**2], -1)


def q_on_grid(critic, weights, mu, sigma, with_bins):
    """(learned, exact) Q at u = mu(x) + sigma(x) {0, +-0.75, +-1.5} (87% of the mass) on live states, [LIVE, 5]."""
    u = mu[:LIVE, None] + sigma[:LIVE, None] * torch.linspace(-1.5, 1.5, 5, dtype=torch.float64)
    obs = torch.eye(NUM_STATES)[:LIVE, None, :].expand(-1, 5, -1)
    with torch.no_grad():
        learned = critic.action_value(obs, torch.tanh(u).float()[..., None]).double()
    return learned, (features(u, with_bins) * weights[:LIVE, None, :]).sum(-1)


def learned_value(critic):
    with torch.no_grad():
        return critic.state_value(torch.eye(NUM_STATES)[:LIVE]).double()


# ---- tests ----------------------------------------------------------------------------------------
def test_oracle_is_exact_and_tells_the_variants_apart():
    # (1) the reductions to tabular MDPs agree with the continuous formulas
    p, terminal, prm = problem(shared_dynamics=False)
    mdp, q_bin, pi_bin, value, q_d, weights = exact_q_c_evaluation(p, terminal, prm)
    mu, sigma = prm["mu_c"], prm["sigma_c"]
    mean_features = torch.stack([q_bin[:, 0], q_bin[:, 1], mu, mu**2 + sigma**2], -1)  # E_{q_c}[phi(u)]
    kl = gaussian_kl(mu, sigma, prm["mu_pi"], prm["sigma_pi"])
    # eq. 10: V_{q_c} = E_{q_c}[Q] - KL(q_c || pi), with the continuous Q and KL
    torch.testing.assert_close((mean_features * weights).sum(-1)[:LIVE] - kl[:LIVE], value[:LIVE], atol=1e-10, rtol=0)
    shared = problem(shared_dynamics=True)
    v_pi, w_pi, _, mu_star, sigma_star = exact_e_step(*shared)
    u = torch.linspace(-12, 12, 48001, dtype=torch.float64)
    log_pi = torch.distributions.Normal(shared[2]["mu_pi"][:, None], shared[2]["sigma_pi"][:, None]).log_prob(u)
    log_twist = log_pi + (features(u, False) * w_pi[:, None, :]).sum(-1)  # log pi exp(Q_pi), [X, U]
    log_z = torch.logsumexp(log_twist, -1) + math.log(u[1] - u[0])
    torch.testing.assert_close(log_z[:LIVE], v_pi[:LIVE], atol=1e-8, rtol=0)  # Prop. 1 by quadrature
    q_c_star = (log_twist - log_z[:, None]).exp() * (u[1] - u[0])  # eq. 15 on the grid
    torch.testing.assert_close((q_c_star * u).sum(-1), mu_star, atol=1e-8, rtol=0)
    torch.testing.assert_close(((q_c_star * u**2).sum(-1) - mu_star**2).sqrt(), sigma_star, atol=1e-8, rtol=0)
    # the actor has to move: q_c* is far from pi in the tolerances of the second training test
    pi_params = torch.stack([shared[2]["mu_pi"], shared[2]["sigma_pi"]])[:, :LIVE]
    gap = (pi_params - torch.stack([mu_star, sigma_star])[:, :LIVE]).abs().amax(-1)
    assert gap[0] > 4 * MU_TOL and gap[1] > 4 * SIGMA_TOL, gap

    # (2) the tolerances can fail: plausible wrong critics have fixed points far outside them
    zero = torch.zeros_like(value)
    kl_d = (q_d * (q_d / p).log().nan_to_num(0.0)).sum(-1)  # E_{q_d}[nu], [X, 2]
    for name, nu_scale in (("nu dropped", 0.0), ("nu discounted", GAMMA)):
        # same q_d, nu replaced by nu_scale * nu: add back (1 - nu_scale) E_{q_d}[nu] per (x, b)
        wrong_mdp = tabular_mdp(p, terminal, mdp.reward + (1 - nu_scale) * kl_d / ETA)
        wrong = fixed_point(lambda v: bellman_qc_qd(wrong_mdp, pi_bin, v, q_bin, q_d), zero)  # noqa: B023
        assert (wrong - value)[:LIVE].abs().min() > 6 * V_TOL, name
    plain = fixed_point(lambda v: bellman_qc_qd(mdp, pi_bin, v, q_bin, p), zero)  # q_d = p, nu = 0
    assert (plain - value)[:LIVE].abs().min() > 6 * V_TOL, "q_d = p"


def test_critic_evaluates_q_c_under_the_exact_twisted_dynamics():
    # Observed, seed 0 (the test's): max |V - V_qc| 0.007, max |Q - Q_qc| 0.005 (6 seeds: <= 0.020, 0.014).
    p, terminal, prm = problem(shared_dynamics=False)
    _, _, _, v_exact, q_d, w_exact = exact_q_c_evaluation(p, terminal, prm)
    q_c, pi = fixed_actor(prm["mu_c"], prm["sigma_c"]), fixed_actor(prm["mu_pi"], prm["sigma_pi"])
    nu = TableLogRatio()
    nu.set(q_d.log(), p.log())
    critic = make_critic(q_c, pi, nu, with_bins=True)
    train(critic, 600, lambda: model_batch(q_c, q_d, terminal, prm, BATCH))
    torch.testing.assert_close(learned_value(critic), v_exact[:LIVE], atol=V_TOL, rtol=0)
    learned, exact = q_on_grid(critic, w_exact, prm["mu_c"], prm["sigma_c"], with_bins=True)
    torch.testing.assert_close(learned, exact, atol=Q_TOL, rtol=0)


def test_critic_and_actor_reach_the_exact_e_step_solution():
    # Observed, seed 0: max errors V 0.009, Q 0.036, mu 0.010, sigma 0.009, q_d 4e-4
    # (6 seeds: <= 0.009, 0.036, 0.016, 0.010, 4e-4).
    p, terminal, prm = problem(shared_dynamics=True)
    v_exact, w_exact, q_d_exact, mu_star, sigma_star = exact_e_step(p, terminal, prm)
    pi = fixed_actor(prm["mu_pi"], prm["sigma_pi"])
    q_c = make_tanh_gaussian_actor(NUM_STATES, SPEC, hidden=())  # one-hot -> linear: a table
    nu = TableLogRatio()
    critic = make_critic(q_c, pi, nu, with_bins=False)
    actor = VMBPOActorLoss(q_c, critic, pi)
    one_action = tabular_mdp(p[:, :1], terminal, torch.zeros(NUM_STATES, 1, dtype=torch.float64))
    model = {}

    def make_batch():
        with torch.no_grad():  # eqs. 19 and 21 solved exactly for the current V'
            target_value = critic.state_value(torch.eye(NUM_STATES), target=True).double()
        model["q_d"] = twisted_dynamics(one_action, target_value).expand(-1, 2, -1)
        nu.set(model["q_d"].log(), p.log())
        return model_batch(q_c, model["q_d"], terminal, prm, BATCH)

    train(critic, 400, make_batch, actor)
    with torch.no_grad():
        dist = q_c.get_dist(TensorDict({"observation": torch.eye(NUM_STATES)[:LIVE]}, [LIVE]))
    torch.testing.assert_close(learned_value(critic), v_exact[:LIVE], atol=V_TOL, rtol=0)
    learned, exact = q_on_grid(critic, w_exact, mu_star, sigma_star, with_bins=False)
    torch.testing.assert_close(learned, exact, atol=Q_TOL, rtol=0)
    torch.testing.assert_close(dist.loc[:, 0].double(), mu_star[:LIVE], atol=MU_TOL, rtol=0)
    torch.testing.assert_close(dist.scale[:, 0].double(), sigma_star[:LIVE], atol=SIGMA_TOL, rtol=0)
    torch.testing.assert_close(model["q_d"][:LIVE, 0], q_d_exact[:LIVE], atol=0.005, rtol=0)
