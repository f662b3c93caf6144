"""The tabular M-step (eqs. 26, 27) and the exact EM loop (Sections 3-4).

With q fixed, J(q; pi) depends on pi only through sum_x d_q(x) sum_a q_c(a|x) log pi(a|x) (d_q the
occupancy of q, see :mod:`~torchrl_vmbpo.tabular.elbo`), so for a tabular pi:

* eq. (26), unconstrained: pi_new = q_c (on every state q visits; we use q_c everywhere);
* eq. (27), with lambda KL(pi_old || pi): per state maximise sum_a (q_c + lambda pi_old) log pi,
  i.e. pi_new = (q_c + lambda pi_old) / (1 + lambda), a mixture (the weight d_q(x) is common to both
  terms and cancels).

Both never decrease J(q; .), so EM never decreases the objective J(q*_k; pi_k) = E_{p_0}[V_{pi_k}]
(= log p_{pi_k}(O = 1) in form i). The supremum over pi, max_pi max_q J, is reached by
deterministic pi and satisfies V*(x) = max_a [eta r + log E_{p~}[exp V~*(x')]] (:func:`optimal_value`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from torchrl_vmbpo.tabular.dynamic_programming import EStepSolution, model_free_value_iteration
from torchrl_vmbpo.tabular.elbo import elbo, state_occupancy
from torchrl_vmbpo.tabular.mdp import TabularMDP
from torchrl_vmbpo.tabular.operators import kl_divergence, soft_next_value


def _check_kl_weight(kl_weight: float) -> None:
    if not kl_weight >= 0:
        raise ValueError(f"kl_weight must be >= 0 (lambda of eq. 27), got {kl_weight}")


def m_step(q_c: torch.Tensor, policy_old: torch.Tensor, kl_weight: float = 0.0) -> torch.Tensor:
    """The exact tabular M-step: eq. (26) if ``kl_weight == 0`` else eq. (27), ``[*B, X, A]``.

    Args:
        q_c: the E-step's variational policy, ``[*B, X, A]``.
        policy_old: the current baseline pi, ``[*B, X, A]``.
        kl_weight: lambda >= 0 of eq. (27).

    Example:
        >>> q_c = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        >>> pi = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
        >>> m_step(q_c, pi), m_step(q_c, pi, kl_weight=1.0)
        (tensor([[1., 0.]], dtype=torch.float64), tensor([[0.7500, 0.2500]], dtype=torch.float64))
    """
    _check_kl_weight(kl_weight)
    return (q_c + kl_weight * policy_old) / (1 + kl_weight)


def m_step_objective(
    mdp: TabularMDP,
    q_c: torch.Tensor,
    q_d: torch.Tensor,
    policy: torch.Tensor,
    policy_old: torch.Tensor,
    kl_weight: float = 0.0,
    initial: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. (27)'s objective E_q[sum_t (log pi(a_t|x_t) - lambda KL(pi_old || pi)(x_t))], ``[*B]``.

    Discounted as the MDP's form says (the same occupancy as :func:`~torchrl_vmbpo.tabular.elbo.elbo`);
    with ``kl_weight == 0`` it differs from J(q; pi) by a constant in pi (eq. 26).
    """
    _check_kl_weight(kl_weight)
    policy = mdp.check_policy(policy, "policy")
    policy_old = mdp.check_policy(policy_old, "policy_old")
    occupancy = state_occupancy(mdp, q_c, q_d, initial)
    cross = torch.where(q_c > 0, q_c * policy.log(), torch.zeros((), dtype=torch.float64)).sum(-1)
    per_state = mdp.mask_terminal(cross - kl_weight * kl_divergence(policy_old, policy.log()))
    # 0 * (-inf) = 0 on states q never visits
    return torch.where(occupancy > 0, occupancy * per_state, torch.zeros((), dtype=torch.float64)).sum(-1)


def optimal_value(mdp: TabularMDP, *, tol: float = 1e-10, max_iterations: int = 100_000) -> torch.Tensor:
    """V* = max_pi V_pi: value iteration on V*(x) = max_a [eta r + log E_{p~}[exp V~*(x')]], ``[*B, X]``.

    Form ii: log E_p[exp(gamma V*)]; form i: log((1 - gamma) + gamma E_p[exp V*]).

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import gridworld
        >>> round(optimal_value(gridworld(("SG",), slip=0.0, step_reward=-1.0))[0].item(), 9)   # one step, cost 1
        -1.0
    """
    value = torch.zeros(*mdp.batch_shape, mdp.num_states, dtype=torch.float64)
    eta = mdp.per_batch(mdp.eta, 2)
    for _ in range(max_iterations):
        new_value = mdp.mask_terminal((eta * mdp.reward + soft_next_value(mdp, value)).amax(-1))
        done = (new_value - value).abs().max() < tol
        value = new_value
        if done:
            return value
    raise RuntimeError(f"optimal_value did not converge in {max_iterations} iterations")


@dataclass(frozen=True)
class EMResult:
    """The EM run.

    Attributes:
        policy: the final baseline pi_K, ``[*B, X, A]``.
        e_step: the E-step solution for pi_K.
        objective: ``[K + 1, *B]``, J(q*_k; pi_k) = max_q J(q; pi_k) for k = 0..K.
        objective_after_m_step: ``[K, *B]``, J(q*_k; pi_{k+1}) (between the M- and the E-step), so
            objective[k] <= objective_after_m_step[k] <= objective[k + 1].
    """

    policy: torch.Tensor
    e_step: EStepSolution
    objective: torch.Tensor
    objective_after_m_step: torch.Tensor


def expectation_maximization(
    mdp: TabularMDP,
    policy: torch.Tensor,
    *,
    num_iterations: int,
    kl_weight: float = 0.0,
    e_step: Callable[..., EStepSolution] = model_free_value_iteration,
    tol: float = 1e-10,
) -> EMResult:
    """Exact EM: alternate the E-step (any solver of Section 4.2) and the tabular M-step.

    Args:
        mdp: the batch of MDPs.
        policy: pi_0, ``[*B, X, A]`` (full support, or EM cannot put mass back on an action).
        num_iterations: K >= 0 EM iterations.
        kl_weight: lambda of eq. (27) (0: eq. 26, pi <- q_c).
        e_step: one of the four solvers of :mod:`~torchrl_vmbpo.tabular.dynamic_programming`.
        tol: the E-step's tolerance.

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import gridworld, uniform_policy
        >>> mdp = gridworld()
        >>> run = expectation_maximization(mdp, uniform_policy(mdp), num_iterations=5)
        >>> bool((run.objective.diff(dim=0) >= 0).all())
        True
    """
    if not (isinstance(num_iterations, int) and num_iterations >= 0):
        raise ValueError(f"num_iterations must be an int >= 0, got {num_iterations!r}")
    _check_kl_weight(kl_weight)
    if not callable(e_step):
        raise TypeError(f"e_step must be one of the E-step solvers (a callable), got {type(e_step).__name__}")
    policy = mdp.check_policy(policy, "policy")
    solution = e_step(mdp, policy, tol=tol)
    objective = [elbo(mdp, policy, solution.q_c, solution.q_d)]
    after_m_step = []
    for _ in range(num_iterations):
        policy = m_step(solution.q_c, policy, kl_weight)
        after_m_step.append(elbo(mdp, policy, solution.q_c, solution.q_d))
        solution = e_step(mdp, policy, tol=tol)
        objective.append(elbo(mdp, policy, solution.q_c, solution.q_d))
    empty = torch.zeros(0, *mdp.batch_shape, dtype=torch.float64)
    return EMResult(
        policy=policy,
        e_step=solution,
        objective=torch.stack(objective),
        objective_after_m_step=torch.stack(after_m_step) if after_m_step else empty,
    )


__all__ = ["EMResult", "expectation_maximization", "m_step", "m_step_objective", "optimal_value"]
