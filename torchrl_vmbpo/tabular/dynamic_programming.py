"""The four E-step dynamic-programming algorithms of Section 4.2 (Lemma 4), exact and batched.

* :func:`model_based_policy_iteration`: evaluate q_c by iterating eq. (6) with q_d^V built at each
  sweep (eq. 14), then improve q_c by eq. (15).
* :func:`model_free_policy_iteration`: the same with eq. (10) (no q_d until the end).
* :func:`model_based_value_iteration`: iterate eq. (7) through (6) with the closed-form maximisers.
* :func:`model_free_value_iteration`: iterate eq. (11), one log-sum-exp.

Each returns an :class:`EStepSolution` with V_pi, Q_pi (eq. 9), q_c* and q_d* (eq. 16). The
per-iteration trace records the optimal Bellman residual ||T[V_k] - V_k||_inf (for VI this is the
change of V; for PI it is measured on the evaluated V_{q_c^(k)}), so the four traces are comparable
and a residual below ``tol`` bounds the distance to V_pi by tol / (1 - modulus) (Lemma 2).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from torchrl_vmbpo.tabular.mdp import TabularMDP
from torchrl_vmbpo.tabular.operators import (
    bellman_optimal,
    bellman_optimal_rewritten,
    bellman_qc,
    bellman_qc_rewritten,
    q_from_v,
    twisted_dynamics,
    twisted_policy,
)

Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EStepSolution:
    """The exact E-step solution and how it was reached.

    Attributes:
        value: V_pi, ``[*B, X]`` (eq. 8; fixed point of T, Lemma 2).
        q_value: Q_pi from eq. (9), ``[*B, X, A]``.
        q_c: q_c* of eq. (16), ``[*B, X, A]``.
        q_d: q_d* of eq. (16), ``[*B, X, A, X']``.
        iterations: K, the number of (outer) iterations run.
        converged: whether the residual went below ``tol`` for every MDP of the batch.
        residuals: ``[K, *B]`` optimal Bellman residual sup_x |T[V_k](x) - V_k(x)| per iteration.
        start_values: ``[K, *B]`` E_{x ~ p_0}[V_k(x)] per iteration.
        evaluation_sweeps: ``[K]`` sweeps of T_{q_c} per policy evaluation (PI only, else None).
    """

    value: torch.Tensor
    q_value: torch.Tensor
    q_c: torch.Tensor
    q_d: torch.Tensor
    iterations: int
    converged: bool
    residuals: torch.Tensor
    start_values: torch.Tensor
    evaluation_sweeps: torch.Tensor | None = None


def _check_tolerances(tol: float, max_iterations: int, name: str = "max_iterations") -> None:
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if not (isinstance(max_iterations, int) and max_iterations >= 1):
        raise ValueError(f"{name} must be an int >= 1, got {max_iterations!r}")


def _sup(delta: torch.Tensor) -> torch.Tensor:
    return delta.abs().amax(-1)  # [*B, X] -> [*B]


def _fixed_point(operator: Operator, value: torch.Tensor, tol: float, max_iterations: int):
    """Iterate V <- operator(V) until sup|V_{n+1} - V_n| < tol; returns (V, residuals, converged)."""
    residuals = []
    for _ in range(max_iterations):
        new_value = operator(value)
        residuals.append(_sup(new_value - value))
        value = new_value
        if residuals[-1].max() < tol:
            return value, residuals, True
    return value, residuals, False


def _initial_value(mdp: TabularMDP, value: torch.Tensor | None) -> torch.Tensor:
    if value is None:
        return torch.zeros(*mdp.batch_shape, mdp.num_states, dtype=torch.float64)
    value = torch.as_tensor(value, dtype=torch.float64)
    shape = (*mdp.batch_shape, mdp.num_states)
    if value.shape != shape:
        raise ValueError(f"initial_value must have shape {shape}, got {tuple(value.shape)}")
    return mdp.mask_terminal(value)


def _solution(mdp, policy, value, converged, residuals, start_values, sweeps=None) -> EStepSolution:
    # eq. (16): q* from V_pi and Q_pi
    q_value = q_from_v(mdp, value)
    if not converged:
        warnings.warn(
            f"E-step did not reach tol within its iteration cap (last residual {residuals[-1].max().item():.3e})",
            RuntimeWarning,
            stacklevel=3,
        )
    return EStepSolution(
        value=value,
        q_value=q_value,
        q_c=twisted_policy(policy, q_value),
        q_d=twisted_dynamics(mdp, value),
        iterations=len(residuals),
        converged=converged,
        residuals=torch.stack(residuals),
        start_values=torch.stack(start_values),
        evaluation_sweeps=None if sweeps is None else torch.tensor(sweeps),
    )


def _value_iteration(mdp, policy, optimal_operator, tol, max_iterations, initial_value) -> EStepSolution:
    _check_tolerances(tol, max_iterations)
    policy = mdp.check_policy(policy, "policy")
    value = _initial_value(mdp, initial_value)
    residuals, start_values = [], []
    converged = False
    for _ in range(max_iterations):
        new_value = optimal_operator(mdp, policy, value)
        residuals.append(_sup(new_value - value))  # = ||T[V_k] - V_k||
        start_values.append((mdp.initial * value).sum(-1))
        value = new_value
        if residuals[-1].max() < tol:
            converged = True
            break
    return _solution(mdp, policy, value, converged, residuals, start_values)


def model_based_value_iteration(
    mdp: TabularMDP,
    policy: torch.Tensor,
    *,
    tol: float = 1e-10,
    max_iterations: int = 10_000,
    initial_value: torch.Tensor | None = None,
) -> EStepSolution:
    """Model-based VI: V <- T[V] by eqs. (6)-(7), building q_d^V (14) and q_c^Q (15) every sweep.

    Args:
        mdp: the batch of MDPs (fixes eta, gamma, discount form).
        policy: baseline pi, ``[*B, X, A]``.
        tol: stop when sup_x |V_{k+1} - V_k| < tol for every MDP of the batch.
        max_iterations: cap on sweeps (a ``RuntimeWarning`` says when it is hit).
        initial_value: V_0, ``[*B, X]`` (default 0); any start converges (Lemma 2).

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import random_mdp, random_policy
        >>> g = torch.Generator().manual_seed(0)
        >>> mdp = random_mdp(3, 2, gamma=0.5, generator=g)
        >>> sol = model_based_value_iteration(mdp, random_policy(mdp, generator=g))
        >>> sol.converged, sol.q_d.shape
        (True, torch.Size([3, 2, 3]))
    """
    return _value_iteration(mdp, policy, bellman_optimal, tol, max_iterations, initial_value)


def model_free_value_iteration(
    mdp: TabularMDP,
    policy: torch.Tensor,
    *,
    tol: float = 1e-10,
    max_iterations: int = 10_000,
    initial_value: torch.Tensor | None = None,
) -> EStepSolution:
    """Model-free VI: V <- T[V] by eq. (11); q_d* and q_c* are built only at the end (eq. 16).

    Arguments as :func:`model_based_value_iteration`.

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import random_mdp, random_policy
        >>> g = torch.Generator().manual_seed(0)
        >>> mdp = random_mdp(3, 2, gamma=0.5, discount="termination", generator=g)
        >>> sol = model_free_value_iteration(mdp, random_policy(mdp, generator=g))
        >>> sol.converged, sol.q_d.shape    # form i: next states + the discount's kill
        (True, torch.Size([3, 2, 4]))
    """
    return _value_iteration(mdp, policy, bellman_optimal_rewritten, tol, max_iterations, initial_value)


def _policy_iteration(
    mdp,
    policy,
    evaluation_operator,
    optimal_operator,
    tol,
    max_iterations,
    evaluation_tol,
    max_evaluation_iterations,
    initial_q_c,
) -> EStepSolution:
    _check_tolerances(tol, max_iterations)
    _check_tolerances(
        tol if evaluation_tol is None else evaluation_tol, max_evaluation_iterations, "max_evaluation_iterations"
    )
    policy = mdp.check_policy(policy, "policy")
    q_c = policy if initial_q_c is None else mdp.check_policy(initial_q_c, "initial_q_c")
    if evaluation_tol is None:
        # Evaluation errors e leave a Bellman residual of order 2e/(1 - modulus): keep them well
        # below tol (the modulus is gamma in form ii, and in form i wherever V <= 0).
        evaluation_tol = 0.1 * tol * (1 - mdp.gamma.max().item()) if mdp.gamma.max() < 1 else 0.1 * tol
    value = _initial_value(mdp, None)
    residuals, start_values, sweeps = [], [], []
    converged = evaluated = False
    for _ in range(max_iterations):
        # policy evaluation: V_{q_c} = lim T_{q_c}^n[V], warm-started from the previous V
        value, eval_residuals, evaluated = _fixed_point(
            lambda v: evaluation_operator(mdp, policy, v, q_c),  # noqa: B023 (used within this iteration)
            value,
            evaluation_tol,
            max_evaluation_iterations,
        )
        sweeps.append(len(eval_residuals))
        residuals.append(_sup(optimal_operator(mdp, policy, value) - value))
        start_values.append((mdp.initial * value).sum(-1))
        # policy improvement, eq. (15) with Q = Q_{q_c} from eq. (9)
        q_c = twisted_policy(policy, q_from_v(mdp, value))
        if residuals[-1].max() < tol:
            converged = evaluated
            break
    return _solution(mdp, policy, value, converged, residuals, start_values, sweeps)


def model_based_policy_iteration(
    mdp: TabularMDP,
    policy: torch.Tensor,
    *,
    tol: float = 1e-10,
    max_iterations: int = 1_000,
    evaluation_tol: float | None = None,
    max_evaluation_iterations: int = 100_000,
    initial_q_c: torch.Tensor | None = None,
) -> EStepSolution:
    """Model-based PI: evaluate q_c with eq. (6) (q_d^V of eq. 14 rebuilt every sweep), improve by (15).

    Args:
        mdp: the batch of MDPs.
        policy: baseline pi, ``[*B, X, A]``.
        tol: stop when the optimal Bellman residual of the evaluated V (measured with eqs. 6-7)
            is below tol for every MDP.
        max_iterations: cap on improvement steps.
        evaluation_tol: sweeps of T_{q_c} stop when sup|V_{n+1} - V_n| < evaluation_tol
            (default 0.1 tol (1 - max gamma)).
        max_evaluation_iterations: cap on sweeps per evaluation.
        initial_q_c: q_c^(0), ``[*B, X, A]`` (default pi).

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import random_mdp, random_policy
        >>> g = torch.Generator().manual_seed(0)
        >>> mdp = random_mdp(3, 2, gamma=0.5, generator=g)
        >>> pi = random_policy(mdp, generator=g)
        >>> pi_sol, vi_sol = model_based_policy_iteration(mdp, pi), model_free_value_iteration(mdp, pi)
        >>> torch.allclose(pi_sol.value, vi_sol.value), pi_sol.iterations < vi_sol.iterations  # Lemma 4
        (True, True)
    """
    return _policy_iteration(
        mdp,
        policy,
        bellman_qc,
        bellman_optimal,
        tol,
        max_iterations,
        evaluation_tol,
        max_evaluation_iterations,
        initial_q_c,
    )


def model_free_policy_iteration(
    mdp: TabularMDP,
    policy: torch.Tensor,
    *,
    tol: float = 1e-10,
    max_iterations: int = 1_000,
    evaluation_tol: float | None = None,
    max_evaluation_iterations: int = 100_000,
    initial_q_c: torch.Tensor | None = None,
) -> EStepSolution:
    """Model-free PI: evaluate q_c with eq. (10), improve by (15); q_d* only at the end (eq. 16).

    Arguments as :func:`model_based_policy_iteration` (the residual is measured with eq. 11).

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import random_mdp, random_policy
        >>> g = torch.Generator().manual_seed(0)
        >>> mdp = random_mdp(3, 2, (4,), gamma=0.5, generator=g)
        >>> sol = model_free_policy_iteration(mdp, random_policy(mdp, generator=g))
        >>> sol.value.shape, sol.residuals.shape[1:], sol.evaluation_sweeps.shape == (sol.iterations,)
        (torch.Size([4, 3]), torch.Size([4]), True)
    """
    return _policy_iteration(
        mdp,
        policy,
        bellman_qc_rewritten,
        bellman_optimal_rewritten,
        tol,
        max_iterations,
        evaluation_tol,
        max_evaluation_iterations,
        initial_q_c,
    )


E_STEP_SOLVERS = {
    "model_based_pi": model_based_policy_iteration,
    "model_free_pi": model_free_policy_iteration,
    "model_based_vi": model_based_value_iteration,
    "model_free_vi": model_free_value_iteration,
}

__all__ = [
    "E_STEP_SOLVERS",
    "EStepSolution",
    "model_based_policy_iteration",
    "model_based_value_iteration",
    "model_free_policy_iteration",
    "model_free_value_iteration",
]
