"""The tabular M-step (eqs. 26, 27) and EM: monotone, and converging towards the optimum V*."""

import pytest
import torch

from torchrl_vmbpo.tabular import (
    E_STEP_SOLVERS,
    elbo,
    expectation_maximization,
    gridworld,
    m_step,
    m_step_objective,
    model_free_value_iteration,
    optimal_value,
    q_from_v,
    random_mdp,
    random_policy,
    uniform_policy,
)


def _perturb_policy(policy, generator, scale=0.5):
    out = policy * (scale * torch.randn(policy.shape, dtype=torch.float64, generator=generator)).exp()
    return out / out.sum(-1, keepdim=True)


def _independent_optimum(mdp):
    """V*(x) = max_a [eta r + log E_p exp(gamma V*)] (form ii) or max_a [eta r + log((1-g) + g E_p exp V*)]
    (form i), by value iteration written from the raw tensors only (no package operator)."""
    p, r, terminal = mdp.transition, mdp.reward, mdp.terminal
    gamma, eta = mdp.gamma[..., None, None], mdp.eta[..., None, None]

    def log_mean_exp(w):  # log E_{x'~p}[exp w(x')], w: [*B, X] -> [*B, X, A], shifted for stability
        top = w.amax(-1)[..., None, None]
        return (p * torch.exp(w[..., None, None, :] - top[..., None])).sum(-1).log() + top

    value = torch.zeros(r.shape[:-1], dtype=torch.float64)
    for _ in range(5000):
        v = torch.where(terminal, 0.0, value)
        if mdp.discount == "discounted_elbo":
            backup = eta * r + log_mean_exp(mdp.gamma[..., None] * v)
        else:
            backup = eta * r + torch.log((1 - gamma) + gamma * log_mean_exp(v).exp())
        new = torch.where(terminal, 0.0, backup.amax(-1))
        if (new - value).abs().max() < 1e-12:
            return new
        value = new
    raise AssertionError("independent value iteration did not converge")


@pytest.mark.parametrize("kl_weight", [0.0, 0.5, 3.0])
def test_m_step_closed_form_maximises_eq27_objective(case, generator, kl_weight):
    mdp, pi, solution = case
    new = m_step(solution.q_c, pi, kl_weight)
    best = m_step_objective(mdp, solution.q_c, solution.q_d, new, pi, kl_weight)
    drops = []
    for scale in (1e-3, 0.3, 2.0):
        other = m_step_objective(mdp, solution.q_c, solution.q_d, _perturb_policy(new, generator, scale), pi, kl_weight)
        assert (other <= best + 1e-10).all()
        drops.append((best - other).max().item())
    assert max(drops) > 1e-2


def test_unconstrained_m_step_maximises_the_elbo_over_pi(case, generator):
    """Eq. (26): with q fixed, pi = q_c maximises J(q; pi) (pi enters J only through E_q log pi)."""
    mdp, pi, solution = case
    best = elbo(mdp, solution.q_c, solution.q_c, solution.q_d)
    for _ in range(3):
        other = elbo(mdp, _perturb_policy(solution.q_c, generator), solution.q_c, solution.q_d)
        assert (other <= best + 1e-10).all()
    # and the eq. 26 / 27 objective differs from J(q; .) by a constant in pi
    shift = elbo(mdp, pi, solution.q_c, solution.q_d) - m_step_objective(mdp, solution.q_c, solution.q_d, pi, pi)
    shift_new = best - m_step_objective(mdp, solution.q_c, solution.q_d, solution.q_c, pi)
    torch.testing.assert_close(shift, shift_new)


@pytest.mark.parametrize("kl_weight", [0.0, 1.0])
def test_em_objective_never_decreases(case, kl_weight):
    mdp, pi, _ = case
    run = expectation_maximization(mdp, pi, num_iterations=8, kl_weight=kl_weight)
    # J(q_k; pi_k) <= J(q_k; pi_{k+1}) (M-step) <= J(q_{k+1}; pi_{k+1}) (E-step)
    assert (run.objective_after_m_step >= run.objective[:-1] - 1e-9).all()
    assert (run.objective[1:] >= run.objective_after_m_step - 1e-9).all()
    assert (run.objective[-1] - run.objective[0] > 1e-3).all(), "EM did not improve at all"


@pytest.mark.parametrize("discount", ["termination", "discounted_elbo"])
def test_em_approaches_the_independently_computed_optimum(discount):
    g = torch.Generator().manual_seed(11)
    gamma = torch.tensor([0.5, 0.8], dtype=torch.float64)[:, None].expand(2, 4)
    mdp = random_mdp(
        5,
        3,
        (2, 4),
        gamma=gamma,
        eta=2.0,
        discount=discount,
        num_terminal=1,
        reward_range=(-1.0, 0.0) if discount == "termination" else (-1.0, 1.0),
        generator=g,
    )
    v_star = _independent_optimum(mdp)
    torch.testing.assert_close(optimal_value(mdp), v_star, atol=1e-9, rtol=0)
    optimum = (mdp.initial * v_star).sum(-1)
    run = expectation_maximization(mdp, random_policy(mdp, generator=g), num_iterations=60)
    gap = optimum - run.objective  # [61, 2, 4]
    assert (gap >= -1e-9).all(), "EM exceeded the optimum: V* is wrong"
    assert (gap[-1] <= 0.02 * gap[0]).all() and (gap[-1] < 0.01).all()


def test_optimum_is_attained_by_the_greedy_deterministic_policy(case, generator):
    """sup_pi V_pi = V*: any pi is below V*, and the greedy pi of Q* reaches it (then q_c = pi)."""
    mdp, pi, solution = case
    v_star = _independent_optimum(mdp)
    assert (solution.value <= v_star + 1e-9).all()
    greedy = torch.nn.functional.one_hot(q_from_v(mdp, v_star).argmax(-1), mdp.num_actions).to(torch.float64)
    torch.testing.assert_close(model_free_value_iteration(mdp, greedy).value, v_star, atol=1e-8, rtol=0)


def test_em_runs_with_every_e_step_solver():
    mdp = gridworld(("S.L", "..G"), gamma=0.8)
    runs = [
        expectation_maximization(mdp, uniform_policy(mdp), num_iterations=3, e_step=solver, tol=1e-9)
        for solver in E_STEP_SOLVERS.values()
    ]
    for run in runs[1:]:
        torch.testing.assert_close(run.objective, runs[0].objective, atol=1e-8, rtol=0)
    assert runs[0].objective.shape == (4,) and runs[0].objective_after_m_step.shape == (3,)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_iterations": -1}, ValueError, "num_iterations must be an int >= 0"),
        ({"num_iterations": 1, "kl_weight": -0.1}, ValueError, "kl_weight must be >= 0"),
        ({"num_iterations": 1, "e_step": "vi"}, TypeError, "e_step must be one of the E-step solvers"),
    ],
)
def test_invalid_em_arguments_raise(kwargs, error, match):
    mdp = gridworld()
    with pytest.raises(error, match=match):
        expectation_maximization(mdp, uniform_policy(mdp), **kwargs)
