"""Lemma 4: the four E-step algorithms of Section 4.2 reach the same q_c*, q_d*, V_pi; their traces."""

import warnings

import pytest
import torch

from torchrl_vmbpo.tabular import (
    E_STEP_SOLVERS,
    bellman_optimal_rewritten,
    elbo_values,
    gridworld,
    model_based_policy_iteration,
    model_free_value_iteration,
    random_mdp,
    random_policy,
    uniform_policy,
)


def test_lemma4_all_four_algorithms_converge_to_the_same_solution(case):
    mdp, pi, reference = case
    for name, solver in E_STEP_SOLVERS.items():
        solution = solver(mdp, pi, tol=1e-11)
        assert solution.converged, name
        torch.testing.assert_close(solution.value, reference.value, atol=1e-8, rtol=0, msg=name)
        torch.testing.assert_close(solution.q_value, reference.q_value, atol=1e-8, rtol=0, msg=name)
        torch.testing.assert_close(solution.q_c, reference.q_c, atol=1e-9, rtol=0, msg=name)
        torch.testing.assert_close(solution.q_d, reference.q_d, atol=1e-9, rtol=0, msg=name)
        assert solution.q_d.shape[-1] == mdp.num_next_states


def test_v_pi_is_the_elbo_of_q_star_from_every_start_state(case):
    """Eq. (8): V_pi(x) is J(q*; pi) started at x, evaluated here by a linear solve, not by the operators."""
    mdp, pi, solution = case
    torch.testing.assert_close(elbo_values(mdp, pi, solution.q_c, solution.q_d), solution.value, atol=1e-9, rtol=0)


def test_value_iteration_trace_contracts_geometrically():
    """Residuals ||T V_k - V_k|| of VI shrink at least by the modulus gamma each sweep (form ii, Lemma 2)."""
    mdp = random_mdp(
        6,
        3,
        (4,),
        gamma=0.8,
        eta=2.0,
        discount="discounted_elbo",
        reward_range=(-1, 1),
        generator=torch.Generator().manual_seed(0),
    )
    solution = model_free_value_iteration(mdp, random_policy(mdp, generator=torch.Generator().manual_seed(1)))
    r = solution.residuals
    assert solution.residuals.shape == (solution.iterations, 4) == solution.start_values.shape
    assert (r[1:] <= 0.8 * r[:-1] + 1e-12).all()
    assert r[-1].max() < 1e-10 <= r[-2].max()  # stopped at the first sweep below tol


def test_policy_iteration_needs_few_improvements_and_records_its_evaluations():
    mdp = gridworld()
    pi = uniform_policy(mdp)
    vi = model_free_value_iteration(mdp, pi)
    for solver in (E_STEP_SOLVERS["model_based_pi"], E_STEP_SOLVERS["model_free_pi"]):
        pi_solution = solver(mdp, pi)
        assert pi_solution.iterations < 10 < vi.iterations
        assert pi_solution.evaluation_sweeps.shape == (pi_solution.iterations,)
        assert (pi_solution.evaluation_sweeps >= 1).all()
        # the E-step objective E_p0[V_{q_c^(k)}] rises with every improvement (policy improvement)
        assert (pi_solution.start_values.diff() >= -1e-12).all()


def test_policy_iteration_started_at_the_optimum_stops_after_one_improvement(case):
    mdp, pi, reference = case
    solution = model_based_policy_iteration(mdp, pi, initial_q_c=reference.q_c, tol=1e-10)
    assert solution.iterations == 1 and solution.converged


def test_residual_reported_by_pi_is_the_optimal_bellman_residual(case):
    mdp, pi, _ = case
    solution = E_STEP_SOLVERS["model_free_pi"](mdp, pi, tol=1e-10)
    residual = (bellman_optimal_rewritten(mdp, pi, solution.value) - solution.value).abs().amax(-1)
    torch.testing.assert_close(solution.residuals[-1], residual)
    assert (residual < 1e-10).all()


def test_iteration_cap_is_reported_not_hidden():
    mdp = gridworld()
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        solution = model_free_value_iteration(mdp, uniform_policy(mdp), max_iterations=3)
    assert not solution.converged and solution.iterations == 3


@pytest.mark.parametrize(
    "kwargs, match", [({"tol": 0.0}, "tol must be > 0"), ({"max_iterations": 0}, "max_iterations must be an int >= 1")]
)
def test_invalid_solver_arguments_raise(kwargs, match):
    mdp = gridworld()
    for solver in E_STEP_SOLVERS.values():
        with pytest.raises(ValueError, match=match):
            solver(mdp, uniform_policy(mdp), **kwargs)


def test_undiscounted_forms_agree_when_gamma_is_one():
    """With gamma = 1 nothing is killed (form i) and nothing discounted (form ii): same E-step."""
    g = torch.Generator().manual_seed(3)
    values = []
    for discount in ("termination", "discounted_elbo"):
        g.manual_seed(3)
        mdp = random_mdp(
            5,
            2,
            (3,),
            gamma=1.0,
            discount=discount,
            num_terminal=1,
            zero_prob=0.0,
            reward_range=(-1.0, -0.2),
            generator=g,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values.append(model_free_value_iteration(mdp, random_policy(mdp, generator=g)).value)
    torch.testing.assert_close(values[0], values[1], atol=1e-9, rtol=0)
