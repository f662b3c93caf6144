"""Exact E-step and EM on finite MDPs (Section 4 of the paper): the oracle for the sample-based losses.

Everything is float64 and batched over leading dims ``*B``:

* :mod:`.mdp`: :class:`TabularMDP` (p, r, terminal states, p_0, gamma, eta, discount form) and
  generators (random MDPs, a gridworld);
* :mod:`.operators`: eqs. (6), (7), (9), (10), (11), (14), (15);
* :mod:`.dynamic_programming`: model-based / model-free policy and value iteration (Lemma 4);
* :mod:`.elbo`: J(q; pi) of eq. (4) through occupancies, and log p_pi(O = 1) by a linear solve;
* :mod:`.em`: the tabular M-step (eqs. 26, 27), the EM loop and the optimum V*.

Example:
    >>> import torch
    >>> from torchrl_vmbpo.tabular import gridworld, uniform_policy, model_free_value_iteration, log_likelihood, elbo
    >>> mdp = gridworld()   # form i (termination) by default: the ELBO is tight
    >>> pi = uniform_policy(mdp)
    >>> sol = model_free_value_iteration(mdp, pi)
    >>> torch.allclose(elbo(mdp, pi, sol.q_c, sol.q_d), log_likelihood(mdp, pi))
    True
"""

from torchrl_vmbpo.tabular.dynamic_programming import (
    E_STEP_SOLVERS,
    EStepSolution,
    model_based_policy_iteration,
    model_based_value_iteration,
    model_free_policy_iteration,
    model_free_value_iteration,
)
from torchrl_vmbpo.tabular.elbo import (
    elbo,
    elbo_values,
    log_likelihood,
    log_likelihood_values,
    state_kernel,
    state_occupancy,
)
from torchrl_vmbpo.tabular.em import EMResult, expectation_maximization, m_step, m_step_objective, optimal_value
from torchrl_vmbpo.tabular.mdp import (
    DISCOUNT_FORMS,
    DISCOUNTED_ELBO,
    TERMINATION,
    TabularMDP,
    gridworld,
    random_mdp,
    random_policy,
    uniform_policy,
)
from torchrl_vmbpo.tabular.operators import (
    bellman_optimal,
    bellman_optimal_rewritten,
    bellman_qc,
    bellman_qc_qd,
    bellman_qc_rewritten,
    dynamics_kl,
    kl_divergence,
    q_from_v,
    soft_next_value,
    step_objective,
    twisted_dynamics,
    twisted_policy,
    value_from_q,
)

__all__ = [
    "DISCOUNTED_ELBO",
    "DISCOUNT_FORMS",
    "EMResult",
    "EStepSolution",
    "E_STEP_SOLVERS",
    "TERMINATION",
    "TabularMDP",
    "bellman_optimal",
    "bellman_optimal_rewritten",
    "bellman_qc",
    "bellman_qc_qd",
    "bellman_qc_rewritten",
    "dynamics_kl",
    "elbo",
    "elbo_values",
    "expectation_maximization",
    "gridworld",
    "kl_divergence",
    "log_likelihood",
    "log_likelihood_values",
    "m_step",
    "m_step_objective",
    "model_based_policy_iteration",
    "model_based_value_iteration",
    "model_free_policy_iteration",
    "model_free_value_iteration",
    "optimal_value",
    "q_from_v",
    "random_mdp",
    "random_policy",
    "soft_next_value",
    "state_kernel",
    "state_occupancy",
    "step_objective",
    "twisted_dynamics",
    "twisted_policy",
    "uniform_policy",
    "value_from_q",
]
