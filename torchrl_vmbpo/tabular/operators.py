"""The E-step operators of Section 4.1 on tensors: eqs. (6), (7), (9), (10), (11), (14), (15).

All functions take a :class:`~torchrl_vmbpo.tabular.mdp.TabularMDP` (which fixes eta, gamma and the
discount form) and the baseline policy pi ``[*B, X, A]``; values are ``[*B, X]``, action values and
policies ``[*B, X, A]``, dynamics ``[*B, X, A, X']`` over the MDP's next-state space (X' = X + 1 in
form i, where the last outcome is "killed by the discount", X in form ii).

Sums of exponentials go through ``logsumexp``/``softmax``; p = 0 gives log p = -inf, which those
handle, and KL terms use 0 log 0 = 0. On terminal states every operator returns 0 and Q is 0
(so q_c = pi there): V(x) = 0 on X^0 and no reward is collected.
"""

from __future__ import annotations

import torch

from torchrl_vmbpo.tabular.mdp import TabularMDP


def _log(probs: torch.Tensor) -> torch.Tensor:
    return probs.log()  # log 0 = -inf on purpose: logsumexp and softmax treat it as "no mass"


def _expect(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    # sum over the last dim of weights * values, with 0 * (+-inf) = 0 (outcomes q gives no mass)
    return torch.where(weights > 0, weights * values, torch.zeros((), dtype=values.dtype)).sum(-1)


def kl_divergence(q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) over the last dim, with p given by its log; 0 log 0 = 0, +inf off p's support.

    Example:
        >>> q = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
        >>> kl_divergence(q, torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64).log())
        tensor(0.6931, dtype=torch.float64)
    """
    return _expect(q, _log(q) - log_p)


def soft_next_value(mdp: TabularMDP, value: torch.Tensor) -> torch.Tensor:
    """log E_{x' ~ p~(.|x,a)}[exp V~(x')], ``[*B, X, A]``: the soft backup inside eq. (9).

    Form i: log((1 - gamma) + gamma E_p[exp V(x')]); form ii: log E_p[exp(gamma V(x'))].
    """
    logits = mdp.log_next_kernel() + mdp.next_values(value)[..., None, None, :]
    return torch.logsumexp(logits, dim=-1)


def q_from_v(mdp: TabularMDP, value: torch.Tensor) -> torch.Tensor:
    """Eq. (9): Q(x, a) = eta r(x, a) + log E_{p~}[exp V~(x')], ``[*B, X, A]`` (0 on terminals).

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import random_mdp
        >>> mdp = random_mdp(3, 2, gamma=0.5, discount="discounted_elbo",
        ...                  generator=torch.Generator().manual_seed(0))
        >>> q = q_from_v(mdp, torch.zeros(3, dtype=torch.float64))   # V = 0: Q = eta r
        >>> torch.allclose(q, mdp.reward)
        True
    """
    eta = mdp.per_batch(mdp.eta, 2)
    return mdp.mask_terminal(eta * mdp.reward + soft_next_value(mdp, value))


def value_from_q(policy: torch.Tensor, q_value: torch.Tensor) -> torch.Tensor:
    """Proposition 1: V(x) = log E_{a ~ pi}[exp Q(x, a)], ``[*B, X]``.

    Example:
        >>> pi = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
        >>> value_from_q(pi, torch.tensor([[0.0, 0.0]], dtype=torch.float64))
        tensor([0.], dtype=torch.float64)
    """
    return torch.logsumexp(_log(policy) + q_value, dim=-1)


def twisted_dynamics(mdp: TabularMDP, value: torch.Tensor) -> torch.Tensor:
    """Eq. (14): q_d^V(x'|x,a) = p~(x'|x,a) exp V~(x') / exp(Q(x,a) - eta r), ``[*B, X, A, X']``.

    The exponential twist of p by the next-state value (in form i the killed outcome has value 0,
    so the twist also rescales the probability of being killed).

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import random_mdp
        >>> mdp = random_mdp(3, 2, discount="termination", generator=torch.Generator().manual_seed(0))
        >>> q_d = twisted_dynamics(mdp, torch.zeros(3, dtype=torch.float64))
        >>> q_d.shape, torch.allclose(q_d, mdp.log_next_kernel().exp())   # V = 0: no twist
        (torch.Size([3, 2, 4]), True)
    """
    logits = mdp.log_next_kernel() + mdp.next_values(value)[..., None, None, :]
    return torch.softmax(logits, dim=-1)


def twisted_policy(policy: torch.Tensor, q_value: torch.Tensor) -> torch.Tensor:
    """Eq. (15): q_c^Q(a|x) = pi(a|x) exp Q(x,a) / E_pi[exp Q(x, .)], ``[*B, X, A]``.

    Example:
        >>> pi = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
        >>> twisted_policy(pi, torch.tensor([[1.0, 2.0]], dtype=torch.float64).log())   # Q = (0, log 2)
        tensor([[0.3333, 0.6667]], dtype=torch.float64)
    """
    return torch.softmax(_log(policy) + q_value, dim=-1)


def dynamics_kl(mdp: TabularMDP, q_d: torch.Tensor) -> torch.Tensor:
    """E_{q_d}[log q_d / p~] = KL(q_d(.|x,a) || p~(.|x,a)), ``[*B, X, A]`` (form i: over X + 1)."""
    return kl_divergence(q_d, mdp.log_next_kernel())


def step_objective(mdp: TabularMDP, policy: torch.Tensor, q_c: torch.Tensor, q_d: torch.Tensor) -> torch.Tensor:
    """One step of eq. (4) in expectation: E_{q_c}[eta r - log q_c/pi - KL(q_d || p~)], ``[*B, X]``.

    The per-state reward of the ELBO for the trajectory distribution q = (q_c, q_d); 0 on terminals.
    """
    eta = mdp.per_batch(mdp.eta, 2)
    per_action = eta * mdp.reward - dynamics_kl(mdp, q_d)
    return mdp.mask_terminal(_expect(q_c, per_action) - kl_divergence(q_c, _log(policy)))


def bellman_qc_qd(
    mdp: TabularMDP, policy: torch.Tensor, value: torch.Tensor, q_c: torch.Tensor, q_d: torch.Tensor
) -> torch.Tensor:
    """The bracket of eq. (6) for a GIVEN q_d (before the max over q_d), ``[*B, X]``.

    E_{a~q_c}[eta r - log q_c/pi + E_{x'~q_d}[V~(x') - log q_d/p~]]. Eq. (6) is its maximum over
    q_d, attained at q_d^V (eq. 14); VMBPO's critic target (eq. 22) samples this with a learnt q_d.
    """
    next_term = _expect(q_d, mdp.next_values(value)[..., None, None, :])  # [*B, X, A]
    return mdp.mask_terminal(step_objective(mdp, policy, q_c, q_d) + _expect(q_c, next_term))


def bellman_qc(mdp: TabularMDP, policy: torch.Tensor, value: torch.Tensor, q_c: torch.Tensor) -> torch.Tensor:
    """Eq. (6): T_{q_c}[V], the max over q_d taken by its closed form q_d^V (eq. 14), ``[*B, X]``.

    This is the model-based form: it builds the variational dynamics explicitly.
    """
    return bellman_qc_qd(mdp, policy, value, q_c, twisted_dynamics(mdp, value))


def bellman_qc_rewritten(mdp: TabularMDP, policy: torch.Tensor, value: torch.Tensor, q_c: torch.Tensor) -> torch.Tensor:
    """Eq. (10): T_{q_c}[V](x) = E_{a~q_c}[Q(x,a) - log q_c(a|x)/pi(a|x)], ``[*B, X]`` (model-free).

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import random_mdp, random_policy
        >>> g = torch.Generator().manual_seed(0)
        >>> mdp = random_mdp(4, 3, (2,), generator=g)
        >>> pi, q_c = random_policy(mdp, generator=g), random_policy(mdp, generator=g)
        >>> v = torch.randn(2, 4, dtype=torch.float64, generator=g)
        >>> torch.allclose(bellman_qc_rewritten(mdp, pi, v, q_c), bellman_qc(mdp, pi, v, q_c))  # Lemma 1
        True
    """
    q_value = q_from_v(mdp, value)
    return mdp.mask_terminal(_expect(q_c, q_value) - kl_divergence(q_c, _log(policy)))


def bellman_optimal(mdp: TabularMDP, policy: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Eq. (7): T[V] = max_{q_c} T_{q_c}[V], both maxima by their closed forms (14), (15), ``[*B, X]``.

    Model-based: builds q_d^V and q_c^Q and evaluates eq. (6) with them.
    """
    q_c = twisted_policy(policy, q_from_v(mdp, value))
    return bellman_qc(mdp, policy, value, q_c)


def bellman_optimal_rewritten(mdp: TabularMDP, policy: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Eq. (11): T[V](x) = log E_{a~pi, x'~p~}[exp(eta r(x,a) + V~(x'))], ``[*B, X]`` (model-free).

    One log-sum-exp over the joint (a, x') outcomes, with no policy or dynamics built.

    Example:
        >>> from torchrl_vmbpo.tabular.mdp import random_mdp, random_policy
        >>> g = torch.Generator().manual_seed(0)
        >>> mdp = random_mdp(4, 3, discount="termination", generator=g)
        >>> pi, v = random_policy(mdp, generator=g), torch.randn(4, dtype=torch.float64, generator=g)
        >>> torch.allclose(bellman_optimal_rewritten(mdp, pi, v), bellman_optimal(mdp, pi, v))  # Lemma 1
        True
    """
    eta = mdp.per_batch(mdp.eta, 2)
    per_action = _log(policy) + eta * mdp.reward  # [*B, X, A]
    logits = per_action[..., None] + mdp.log_next_kernel() + mdp.next_values(value)[..., None, None, :]
    return mdp.mask_terminal(torch.logsumexp(logits.flatten(-2), dim=-1))


__all__ = [
    "bellman_optimal",
    "bellman_optimal_rewritten",
    "bellman_qc",
    "bellman_qc_qd",
    "bellman_qc_rewritten",
    "dynamics_kl",
    "kl_divergence",
    "q_from_v",
    "soft_next_value",
    "step_objective",
    "twisted_dynamics",
    "twisted_policy",
    "value_from_q",
]
