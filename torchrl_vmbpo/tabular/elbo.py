"""The ELBO J(q; pi) of eq. (4) evaluated exactly, and log p_pi(O = 1) computed independently.

J goes through the discounted state occupancy of q = (q_c, q_d): with P_q(x, x') the discounted
continuation kernel sum_a q_c(a|x) q_d~(x'|x, a) (form i: q_d restricted to real next states, the
discount being its kill probability; form ii: gamma q_d), zero rows on terminal states,

    d = p_0 + P_q^T d        (a linear solve),      J(q; pi) = sum_x d(x) c(x),

where c(x) = E_{q_c}[eta r - log q_c/pi - KL(q_d || p~)] is the expected one-step term of eq. (4).

log p_pi(O = 1) (eq. 1) is computed without any of the E-step code: in the footnote-1 MDP
(continue with probability gamma) the desirability z(x) = p_pi(O = 1 | x_0 = x) solves the LINEAR
equation z(x) = sum_a pi(a|x) e^{eta r(x,a)} ((1 - gamma) + gamma sum_x' p(x'|x,a) z(x')) with
z = 1 on terminal states. In form i the ELBO is tight: max_q J(q; pi) = log p_pi(O = 1).
"""

from __future__ import annotations

import torch

from torchrl_vmbpo.tabular.mdp import TabularMDP, check_distribution
from torchrl_vmbpo.tabular.operators import step_objective


def _initial(mdp: TabularMDP, initial: torch.Tensor | None) -> torch.Tensor:
    if initial is None:
        return mdp.initial
    initial = torch.as_tensor(initial, dtype=torch.float64).expand(*mdp.batch_shape, mdp.num_states)
    check_distribution(initial, "initial")
    return initial


def _check_dynamics(mdp: TabularMDP, q_d: torch.Tensor) -> torch.Tensor:
    q_d = torch.as_tensor(q_d, dtype=torch.float64)
    shape = (*mdp.batch_shape, mdp.num_states, mdp.num_actions, mdp.num_next_states)
    if tuple(q_d.shape) != shape:
        raise ValueError(
            f"q_d must have shape {shape} (next states X' = {mdp.num_next_states} in form "
            f"{mdp.discount!r}), got {tuple(q_d.shape)}"
        )
    check_distribution(q_d, "q_d")
    return q_d


def state_kernel(mdp: TabularMDP, q_c: torch.Tensor, q_d: torch.Tensor) -> torch.Tensor:
    """P_q(x, x') = sum_a q_c(a|x) q_d~(x'|x,a), discounted, 0 from terminal states, ``[*B, X, X]``."""
    kernel = torch.einsum("...xa,...xay->...xy", q_c, mdp.continuation(q_d))
    return mdp.mask_terminal(kernel)


def state_occupancy(
    mdp: TabularMDP, q_c: torch.Tensor, q_d: torch.Tensor, initial: torch.Tensor | None = None
) -> torch.Tensor:
    """d_q(x) = sum_t gamma-weighted P_q(x_t = x) under q, ``[*B, X]``: solves (I - P_q^T) d = p_0.

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import random_mdp, uniform_policy
        >>> mdp = random_mdp(3, 2, gamma=0.75, generator=torch.Generator().manual_seed(0))
        >>> q_d = mdp.log_next_kernel().exp()
        >>> state_occupancy(mdp, uniform_policy(mdp), q_d).sum()   # no terminals: 1 / (1 - gamma)
        tensor(4.0000, dtype=torch.float64)
    """
    q_c = mdp.check_policy(q_c, "q_c")
    q_d = _check_dynamics(mdp, q_d)
    eye = torch.eye(mdp.num_states, dtype=torch.float64)
    system = eye - state_kernel(mdp, q_c, q_d).transpose(-1, -2)
    return torch.linalg.solve(system, _initial(mdp, initial)[..., None])[..., 0]


def _weighted_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    # sum_x d(x) c(x) with 0 * (-inf) = 0 for states q never visits
    return torch.where(weights > 0, weights * values, torch.zeros((), dtype=values.dtype)).sum(-1)


def elbo(
    mdp: TabularMDP,
    policy: torch.Tensor,
    q_c: torch.Tensor,
    q_d: torch.Tensor,
    initial: torch.Tensor | None = None,
) -> torch.Tensor:
    """J(q; pi) of eq. (4) (discounted as the MDP's form says) through occupancies, ``[*B]``.

    Args:
        mdp: the batch of MDPs.
        policy: baseline pi, ``[*B, X, A]``.
        q_c: variational policy, ``[*B, X, A]``.
        q_d: variational dynamics over the next-state space, ``[*B, X, A, X']``.
        initial: start distribution ``[*B, X]`` (default ``mdp.initial``).

    Returns -inf where q_d puts mass outside p's support or q_c outside pi's.

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import TabularMDP
        >>> # one state, one action, r = -1, q = p_pi: J = eta r / (1 - gamma) in form ii
        >>> mdp = TabularMDP.create([[[1.0]]], [[-1.0]], [False], [1.0], gamma=0.5, eta=1.0,
        ...                         discount="discounted_elbo")
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> elbo(mdp, one, one, one[..., None])
        tensor(-2., dtype=torch.float64)
    """
    policy = mdp.check_policy(policy, "policy")
    occupancy = state_occupancy(mdp, q_c, q_d, initial)
    return _weighted_sum(occupancy, step_objective(mdp, policy, q_c, q_d))


def elbo_values(mdp: TabularMDP, policy: torch.Tensor, q_c: torch.Tensor, q_d: torch.Tensor) -> torch.Tensor:
    """Eq. (8) for any q: the ELBO from each start state, ``[*B, X]``: solves (I - P_q) V = c.

    The dual of :func:`elbo`: ``elbo(..., initial=p0) == (p0 * elbo_values(...)).sum(-1)``.
    """
    policy = mdp.check_policy(policy, "policy")
    q_c = mdp.check_policy(q_c, "q_c")
    q_d = _check_dynamics(mdp, q_d)
    eye = torch.eye(mdp.num_states, dtype=torch.float64)
    per_state = step_objective(mdp, policy, q_c, q_d)
    return torch.linalg.solve(eye - state_kernel(mdp, q_c, q_d), per_state[..., None])[..., 0]


def log_likelihood_values(mdp: TabularMDP, policy: torch.Tensor) -> torch.Tensor:
    """log p_pi(O = 1 | x_0 = x) in the footnote-1 MDP (eq. 1), ``[*B, X]``, by a linear solve.

    Uses only p, r, pi, gamma, eta and the terminal mask: the desirability z = exp(V) is linear,
    z = b + M z with M(x, x') = gamma sum_a pi e^{eta r} p(x'|x,a) on non-terminal x and
    b(x) = (1 - gamma) sum_a pi e^{eta r} (1 on terminal x, where M's row is 0). This is the
    likelihood whatever ``mdp.discount`` says (form ii's discounted ELBO is not bounded by it
    unless gamma = 1).

    Raises:
        ValueError: when the spectral radius of M is >= 1 (the likelihood series diverges, which
            needs exp(eta r) gamma >= 1 somewhere, i.e. r > 0).

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import TabularMDP
        >>> # one state, one action, r = -1: z = e^{-eta} (1 - g) / (1 - g e^{-eta})
        >>> mdp = TabularMDP.create([[[1.0]]], [[-1.0]], [False], [1.0], gamma=0.5, eta=1.0,
        ...                         discount="termination")
        >>> v = log_likelihood_values(mdp, torch.ones(1, 1, dtype=torch.float64))
        >>> e = torch.exp(torch.tensor(-1.0, dtype=torch.float64))
        >>> torch.allclose(v, (e * 0.5 / (1 - 0.5 * e)).log())
        True
    """
    policy = mdp.check_policy(policy, "policy")
    eta, gamma = mdp.per_batch(mdp.eta, 2), mdp.per_batch(mdp.gamma, 2)
    live = (~mdp.terminal).to(torch.float64)  # [*B, X]
    weight = policy * torch.exp(eta * mdp.reward) * live[..., None]  # pi e^{eta r} on live states
    step = torch.einsum("...xa,...xay->...xy", weight, mdp.transition)
    matrix = gamma * step
    offset = (1 - gamma[..., 0]) * weight.sum(-1) + (1 - live)
    radius = torch.linalg.eigvals(matrix).abs().amax(-1)
    if (radius >= 1).any():
        raise ValueError(
            f"log p_pi(O=1) is infinite: spectral radius {radius.max().item():.4f} >= 1 "
            "(exp(eta r) gamma too large; use rewards <= 0)"
        )
    eye = torch.eye(mdp.num_states, dtype=torch.float64)
    desirability = torch.linalg.solve(eye - matrix, offset[..., None])[..., 0]
    return desirability.log()


def log_likelihood(mdp: TabularMDP, policy: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
    """log p_pi(O = 1) = log E_{x_0 ~ p_0}[z(x_0)] in the footnote-1 MDP, ``[*B]``.

    See :func:`log_likelihood_values`.
    """
    z = log_likelihood_values(mdp, policy)
    return torch.logsumexp(_initial(mdp, initial).log() + z, dim=-1)


__all__ = ["elbo", "elbo_values", "log_likelihood", "log_likelihood_values", "state_kernel", "state_occupancy"]
