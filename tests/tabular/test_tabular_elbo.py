"""The exact ELBO (eq. 4) and log p_pi(O=1): optimality of q* (eq. 16), tightness in form i, Monte Carlo."""

import pytest
import torch

from torchrl_vmbpo.tabular import (
    TabularMDP,
    elbo,
    elbo_values,
    log_likelihood,
    log_likelihood_values,
    random_mdp,
    random_policy,
    state_occupancy,
    uniform_policy,
)


def _perturb(probs, generator, scale):
    # random reweighting on the same support (keeps every KL finite)
    noise = scale * torch.randn(probs.shape, dtype=torch.float64, generator=generator)
    out = probs * noise.exp()
    return out / out.sum(-1, keepdim=True)


def test_q_star_maximises_the_elbo_against_random_perturbations(case, generator):
    """Eq. (16) is the argmax of eq. (5): perturbing q_c, q_d or both never increases J, from any start."""
    mdp, pi, solution = case
    best = elbo_values(mdp, pi, solution.q_c, solution.q_d)
    drops = []
    for scale in (1e-3, 0.1, 1.0):
        for q_c, q_d in (
            (_perturb(solution.q_c, generator, scale), solution.q_d),
            (solution.q_c, _perturb(solution.q_d, generator, scale)),
            (_perturb(solution.q_c, generator, scale), _perturb(solution.q_d, generator, scale)),
        ):
            other = elbo_values(mdp, pi, q_c, q_d)
            assert (other <= best + 1e-10).all()
            drops.append((best - other).max().item())
    assert max(drops) > 1e-2, "perturbations too small for the test to mean anything"


def test_form_i_elbo_is_tight_from_every_start_state(termination_case):
    """Form i: J(q*; pi | x_0 = x) = V_pi(x) = log p_pi(O = 1 | x_0 = x), the latter by a linear solve."""
    mdp, pi, solution = termination_case
    torch.testing.assert_close(log_likelihood_values(mdp, pi), solution.value, atol=1e-9, rtol=0)
    torch.testing.assert_close(elbo_values(mdp, pi, solution.q_c, solution.q_d), solution.value, atol=1e-9, rtol=0)


def test_form_i_elbo_with_random_start_has_exactly_the_jensen_gap(termination_case):
    """q shares p_0 with p_pi (Section 4), so with a random x_0 the bound is E log z <= log E z, not tight."""
    mdp, pi, solution = termination_case
    bound = elbo(mdp, pi, solution.q_c, solution.q_d)
    jensen_gap = torch.logsumexp(mdp.initial.log() + solution.value, -1) - (mdp.initial * solution.value).sum(-1)
    torch.testing.assert_close(log_likelihood(mdp, pi) - bound, jensen_gap, atol=1e-9, rtol=0)
    assert (jensen_gap > 1e-4).any()


def test_form_i_elbo_lower_bounds_the_log_likelihood_for_any_q(termination_case, generator):
    mdp, pi, solution = termination_case
    bound = log_likelihood_values(mdp, pi)
    q_c, q_d = random_policy(mdp, generator=generator), _perturb(solution.q_d, generator, 1.0)
    assert (elbo_values(mdp, pi, q_c, q_d) <= bound + 1e-10).all()
    assert (elbo(mdp, pi, q_c, q_d) <= log_likelihood(mdp, pi) + 1e-10).all()


def test_occupancy_and_value_forms_of_the_elbo_agree(case, generator):
    mdp, pi, solution = case
    q_c, q_d = random_policy(mdp, generator=generator), _perturb(solution.q_d, generator, 0.5)
    torch.testing.assert_close(elbo(mdp, pi, q_c, q_d), (mdp.initial * elbo_values(mdp, pi, q_c, q_d)).sum(-1))
    start = torch.zeros(mdp.num_states, dtype=torch.float64)
    start[0] = 1.0
    torch.testing.assert_close(elbo(mdp, pi, q_c, q_d, initial=start), elbo_values(mdp, pi, q_c, q_d)[..., 0])


@pytest.mark.parametrize("discount", ["termination", "discounted_elbo"])
def test_occupancy_mass_is_the_expected_discounted_horizon(discount):
    """Without terminal states and with q = p~, sum_x d(x) = 1 / (1 - gamma) in both forms."""
    mdp = random_mdp(5, 3, (2,), gamma=0.8, discount=discount, generator=torch.Generator().manual_seed(0))
    d = state_occupancy(mdp, uniform_policy(mdp), mdp.log_next_kernel().exp())
    torch.testing.assert_close(d.sum(-1), torch.full((2,), 5.0, dtype=torch.float64))
    assert (d >= 0).all()


def _monte_carlo(mdp, pi, q_c, q_d, num, generator):
    """Sample trajectories of q from raw tensors; returns per-trajectory ELBO terms and exp(eta sum r) under pi.

    Independent of the package's representation: form i kills with probability 1 - gamma via an
    explicit extra outcome whose log-ratio uses p~ = (gamma p, 1 - gamma) built here.
    """
    p, r, gamma, eta = mdp.transition, mdp.reward, mdp.gamma.item(), mdp.eta.item()
    num_states = mdp.num_states
    kill = mdp.discount == "termination"
    p_tilde = torch.cat([gamma * p, torch.full((*p.shape[:-1], 1), 1 - gamma, dtype=torch.float64)], -1) if kill else p
    x = torch.multinomial(mdp.initial, num, replacement=True, generator=generator)
    x_pi = x.clone()
    total = torch.zeros(num, dtype=torch.float64)
    reward_sum = torch.zeros(num, dtype=torch.float64)
    alive = ~mdp.terminal[x]
    alive_pi = alive.clone()
    for t in range(50):
        a = torch.multinomial(q_c[x], 1, generator=generator)[:, 0]
        nxt = torch.multinomial(q_d[x, a], 1, generator=generator)[:, 0]
        term = eta * r[x, a] - (q_c[x, a] / pi[x, a]).log() - (q_d[x, a, nxt] / p_tilde[x, a, nxt]).log()
        total += torch.where(alive, (1.0 if kill else gamma**t) * term, torch.zeros(()))
        killed = nxt == num_states
        x = torch.where(killed, 0, nxt)
        alive &= ~killed & ~mdp.terminal[x]
        # a separate run of p_pi (with the kill) for the likelihood E[exp(eta sum r)]
        a_pi = torch.multinomial(pi[x_pi], 1, generator=generator)[:, 0]
        reward_sum += torch.where(alive_pi, r[x_pi, a_pi], torch.zeros(()))
        nxt_pi = torch.multinomial(p_tilde[x_pi, a_pi] if kill else p[x_pi, a_pi], 1, generator=generator)[:, 0]
        killed_pi = nxt_pi == num_states
        x_pi = torch.where(killed_pi, 0, nxt_pi)
        alive_pi &= ~killed_pi & ~mdp.terminal[x_pi]
    assert not alive.any() or not kill
    return total, (eta * reward_sum).exp()


@pytest.mark.parametrize("discount", ["termination", "discounted_elbo"])
def test_exact_elbo_and_likelihood_match_monte_carlo(discount):
    g = torch.Generator().manual_seed(7)
    mdp = random_mdp(4, 2, gamma=0.6, eta=1.5, discount=discount, num_terminal=1, generator=g)
    pi, q_c = random_policy(mdp, generator=g), random_policy(mdp, generator=g)
    q_d = _perturb(mdp.log_next_kernel().exp(), g, 2.0)
    num = 20_000
    total, likelihood = _monte_carlo(mdp, pi, q_c, q_d, num, g)
    exact = elbo(mdp, pi, q_c, q_d).item()
    assert abs(total.mean().item() - exact) < 4 * total.std().item() / num**0.5
    if discount == "termination":
        exact_likelihood = log_likelihood(mdp, pi).exp().item()
        assert abs(likelihood.mean().item() - exact_likelihood) < 4 * likelihood.std().item() / num**0.5


def test_log_likelihood_refuses_a_divergent_series():
    # one state, r = 1: E[exp(eta sum r)] = sum_t (1-g) g^t e^{(t+1)} diverges for g e > 1
    mdp = TabularMDP.create([[[1.0]]], [[1.0]], [False], [1.0], gamma=0.9, eta=1.0, discount="termination")
    with pytest.raises(ValueError, match="log p_pi\\(O=1\\) is infinite"):
        log_likelihood(mdp, torch.ones(1, 1, dtype=torch.float64))
