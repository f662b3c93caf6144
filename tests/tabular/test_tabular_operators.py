"""Lemma 1, Lemma 2 and Lemma 3 (eqs. 6-15) on random MDPs, both discount forms."""

import pytest
import torch

from torchrl_vmbpo.tabular import (
    TabularMDP,
    bellman_optimal,
    bellman_optimal_rewritten,
    bellman_qc,
    bellman_qc_qd,
    bellman_qc_rewritten,
    model_free_value_iteration,
    q_from_v,
    random_policy,
    twisted_dynamics,
    twisted_policy,
    value_from_q,
)

ATOL = 1e-10


def _random_values(mdp, generator, scale=3.0):
    # arbitrary V of both signs (Lemma 1 holds for any V, not only V <= 0)
    return scale * torch.randn(*mdp.batch_shape, mdp.num_states, dtype=torch.float64, generator=generator)


def _random_dynamics_like(q_d, generator):
    # a random distribution with the same support as q_d (so its KL to p stays finite)
    noise = torch.rand(q_d.shape, dtype=torch.float64, generator=generator) * 3
    other = q_d * noise.exp()
    return other / other.sum(-1, keepdim=True)


def _modulus(mdp, v1, v2):
    """Sup-norm contraction modulus of T and T_qc on values bounded above by M (Lemma 2).

    Form ii: gamma. Form i: d/dV log((1-g) + g E_p e^V) sums to g E e^V / ((1-g) + g E e^V)
    <= g e^M / ((1-g) + g e^M) < 1 (the mean value theorem on the segment between v1 and v2).
    """
    if mdp.discount == "discounted_elbo":
        return mdp.gamma
    top = torch.maximum(mdp.mask_terminal(v1).amax(-1), mdp.mask_terminal(v2).amax(-1))
    return mdp.gamma * top.exp() / (1 - mdp.gamma + mdp.gamma * top.exp())


def test_lemma1_eq6_equals_eq10_for_arbitrary_v_and_q_c(case, generator):
    mdp, pi, _ = case
    for _ in range(3):
        v, q_c = _random_values(mdp, generator), random_policy(mdp, generator=generator)
        torch.testing.assert_close(
            bellman_qc(mdp, pi, v, q_c), bellman_qc_rewritten(mdp, pi, v, q_c), atol=ATOL, rtol=0
        )


def test_lemma1_eq7_equals_eq11_for_arbitrary_v(case, generator):
    mdp, pi, _ = case
    for _ in range(3):
        v = _random_values(mdp, generator)
        torch.testing.assert_close(
            bellman_optimal(mdp, pi, v), bellman_optimal_rewritten(mdp, pi, v), atol=ATOL, rtol=0
        )


def test_closed_form_q_d_and_q_c_attain_the_maxima_of_eqs_6_and_7(case, generator):
    """Eq. (12)-(13): any other q_d (resp. q_c) gives a smaller bracket; q_d^V (resp. q_c^Q) gives the max."""
    mdp, pi, _ = case
    v = _random_values(mdp, generator)
    q_c = random_policy(mdp, generator=generator)
    best_qd = bellman_qc(mdp, pi, v, q_c)
    best_qc = bellman_optimal_rewritten(mdp, pi, v)
    q_d_star = twisted_dynamics(mdp, v)
    largest_gap = 0.0
    for _ in range(5):
        other_qd = bellman_qc_qd(mdp, pi, v, q_c, _random_dynamics_like(q_d_star, generator))
        assert (other_qd <= best_qd + ATOL).all()
        other_qc = bellman_qc_rewritten(mdp, pi, v, random_policy(mdp, generator=generator))
        assert (other_qc <= best_qc + ATOL).all()
        largest_gap = max(largest_gap, (best_qd - other_qd).max().item(), (best_qc - other_qc).max().item())
    assert largest_gap > 1e-3, "perturbations too small for the test to mean anything"


def test_lemma3_twists_are_exponential_reweightings_of_p_and_pi(case, generator):
    """Eq. (14): q_d / p~ = exp(V~(x') - (Q - eta r)); eq. (15): q_c / pi = exp(Q - V') with V' = log E_pi e^Q."""
    mdp, pi, _ = case
    v = _random_values(mdp, generator)
    q = q_from_v(mdp, v)
    eta = mdp.eta[..., None, None]
    log_p = mdp.log_next_kernel()
    q_d = twisted_dynamics(mdp, v)
    live = ~mdp.terminal
    expected_log_ratio = mdp.next_values(v)[..., None, None, :] - (q - eta * mdp.reward)[..., None]
    support = (log_p > -float("inf")) & live[..., None, None]
    torch.testing.assert_close((q_d.log() - log_p)[support], expected_log_ratio[support], atol=1e-9, rtol=0)
    assert (q_d[log_p == -float("inf")] == 0).all()  # absolutely continuous w.r.t. p
    q_c = twisted_policy(pi, q)
    torch.testing.assert_close(q_c.log() - pi.log(), q - value_from_q(pi, q)[..., None], atol=1e-9, rtol=0)


def test_lemma2_operators_are_monotone(case, generator):
    mdp, pi, _ = case
    q_c = random_policy(mdp, generator=generator)
    for _ in range(3):
        v1 = _random_values(mdp, generator)
        v2 = v1 + torch.rand(v1.shape, dtype=torch.float64, generator=generator) * 2  # v2 >= v1
        assert (bellman_optimal_rewritten(mdp, pi, v1) <= bellman_optimal_rewritten(mdp, pi, v2) + ATOL).all()
        assert (bellman_qc(mdp, pi, v1, q_c) <= bellman_qc(mdp, pi, v2, q_c) + ATOL).all()


def test_lemma2_operators_are_sup_norm_contractions(case, generator):
    mdp, pi, _ = case
    q_c = random_policy(mdp, generator=generator)
    ratios = []
    for _ in range(5):
        v1, v2 = _random_values(mdp, generator), _random_values(mdp, generator)
        distance = (mdp.mask_terminal(v1) - mdp.mask_terminal(v2)).abs().amax(-1)
        modulus = _modulus(mdp, v1, v2)
        assert (modulus < 1).all()
        for operator in (lambda v: bellman_optimal(mdp, pi, v), lambda v: bellman_qc(mdp, pi, v, q_c)):
            gap = (operator(v1) - operator(v2)).abs().amax(-1)
            assert (gap <= modulus * distance + ATOL).all()
            ratios.append((gap / distance).max().item())
    assert max(ratios) > 0.1, "operators suspiciously insensitive to V"


def test_lemma2_v_pi_is_the_fixed_point_of_t_and_prop1_holds(case):
    mdp, pi, solution = case
    v = solution.value
    for operator in (bellman_optimal, bellman_optimal_rewritten):
        torch.testing.assert_close(operator(mdp, pi, v), v, atol=1e-9, rtol=0)
    # Proposition 1: V_pi = log E_pi exp Q_pi, with Q_pi from eq. (9)
    torch.testing.assert_close(value_from_q(pi, q_from_v(mdp, v)), v, atol=1e-9, rtol=0)


def test_lemma2_fixed_point_is_unique_from_any_start(case, generator):
    mdp, pi, solution = case
    start = 20 * torch.randn(*mdp.batch_shape, mdp.num_states, dtype=torch.float64, generator=generator)
    other = model_free_value_iteration(mdp, pi, tol=1e-12, initial_value=start)
    assert other.converged
    torch.testing.assert_close(other.value, solution.value, atol=1e-9, rtol=0)


def test_operators_are_zero_on_terminal_states_and_ignore_v_there(generator):
    from torchrl_vmbpo.tabular import random_mdp

    mdp = random_mdp(4, 2, (2,), num_terminal=1, reward_range=(-1, 1), generator=generator)
    pi, q_c = random_policy(mdp, generator=generator), random_policy(mdp, generator=generator)
    v = _random_values(mdp, generator)
    v_changed = v.clone()
    v_changed[:, -1] += 100.0
    for operator in (
        bellman_optimal,
        bellman_optimal_rewritten,
        lambda m, p, x: bellman_qc(m, p, x, q_c),
        lambda m, p, x: bellman_qc_rewritten(m, p, x, q_c),
    ):
        out = operator(mdp, pi, v)
        assert (out[:, -1] == 0).all()
        torch.testing.assert_close(out, operator(mdp, pi, v_changed), atol=0, rtol=0)
    assert (q_from_v(mdp, v)[:, -1] == 0).all()
    torch.testing.assert_close(twisted_policy(pi, q_from_v(mdp, v))[:, -1], pi[:, -1])


@pytest.mark.parametrize("gamma", [0.5, 0.9])
@pytest.mark.parametrize("eta", [0.5, 2.0])
def test_one_state_self_loop_matches_closed_forms(gamma, eta):
    """x -> x forever with reward r: form ii V = eta r / (1 - g); form i e^V = e^{eta r}(1 - g)/(1 - g e^{eta r})."""
    reward = -0.7
    one = torch.ones(1, 1, dtype=torch.float64)
    for discount in ("termination", "discounted_elbo"):
        mdp = TabularMDP.create([[[1.0]]], [[reward]], [False], [1.0], gamma=gamma, eta=eta, discount=discount)
        value = model_free_value_iteration(mdp, one, tol=1e-13).value
        er = torch.tensor(eta * reward, dtype=torch.float64)
        if discount == "discounted_elbo":
            expected = er / (1 - gamma)
        else:
            expected = er + torch.log((1 - gamma) / (1 - gamma * er.exp()))
        torch.testing.assert_close(value, expected.reshape(1), atol=1e-10, rtol=0)
