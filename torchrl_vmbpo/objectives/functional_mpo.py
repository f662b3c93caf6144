"""Pure maths of MPO (Abdolmaleki et al. 2018, "Maximum a Posteriori Policy Optimisation" and
"Relative Entropy Regularized Policy Iteration"), one named function per step.

Shape legend: B states in the batch, N actions sampled per state, D action dimensions.
Sampled tensors put the sample dimension first (``[N, B, ...]``), as ``dist.sample((N,))`` does.

The E-step builds a non-parametric policy q(a|x) ∝ π_old(a|x) exp(Q(x, a)/τ) on N samples from
π_old; its temperature τ is the Lagrange multiplier of KL(q‖π_old) ≤ ε, learned by minimising the
dual g(τ) = τ ε + τ mean_x log mean_N exp(Q/τ). The M-step fits the parametric Gaussian policy to q
by weighted maximum likelihood under decoupled KL trust regions on its mean and its standard
deviation, with Lagrange multipliers α_mean, α_std learned by their own duals.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

# Added to every softplus-parameterised dual so it stays strictly positive (as acme does).
DUAL_EPSILON = 1e-8
# Floor of the unconstrained ("log") duals: softplus(-18) ~ 1.5e-8, i.e. the dual is ~0 but its
# gradient has not vanished, so the multiplier can grow back when its constraint is violated.
MIN_LOG_DUAL = -18.0


def dual_from_log(log_dual: torch.Tensor) -> torch.Tensor:
    """Positive dual variable ``softplus(log_dual) + 1e-8`` (softplus rather than exp: no overflow).

    Example:
        >>> abs(dual_from_log(torch.tensor([0.0])).item() - math.log(2.0)) < 1e-6
        True
    """
    return F.softplus(log_dual) + DUAL_EPSILON


def log_dual_from_value(value: float) -> float:
    """Inverse of :func:`dual_from_log`: the unconstrained parameter whose dual equals ``value``.

    Uses ``y + log(1 - exp(-y))``, the overflow-free form of ``log(exp(y) - 1)``.

    Example:
        >>> round(dual_from_log(torch.tensor(log_dual_from_value(1000.0))).item(), 3)
        1000.0
    """
    if not value > DUAL_EPSILON:
        raise ValueError(f"a dual's initial value must be > {DUAL_EPSILON}, got {value}")
    y = value - DUAL_EPSILON
    return max(y + math.log(-math.expm1(-y)), MIN_LOG_DUAL)


def weights_and_temperature_loss(
    q_values: torch.Tensor, epsilon: float, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step: the non-parametric policy's weights and the temperature dual.

    Args:
        q_values: ``[N, B]`` Q(x, a_n) of actions a_n ~ π_old(·|x); gradients are stopped here.
        epsilon: the bound ε on KL(q‖π_old).
        temperature: τ > 0, shape ``[]`` or ``[1]``.

    Returns:
        ``weights [N, B]``, softmax over the N samples of Q/τ (detached), and the scalar dual
        ``τ (ε + mean_B logsumexp_N(Q/τ) - log N)``, whose minimiser over τ makes
        mean_B KL(q‖π_old) = ε (its derivative in τ is ε - mean_B KL, see
        :func:`nonparametric_kl`).

    Example:
        >>> w, dual = weights_and_temperature_loss(torch.zeros(4, 2), 0.1, torch.tensor(2.0))
        >>> w[:, 0].tolist(), round(dual.item(), 6)
        ([0.25, 0.25, 0.25, 0.25], 0.2)
    """
    tempered = q_values.detach() / temperature.reshape(())  # [N, B]
    weights = torch.softmax(tempered, dim=0).detach()  # [N, B]
    log_num = math.log(q_values.shape[0])
    dual = temperature.reshape(()) * (epsilon + torch.logsumexp(tempered, dim=0).mean() - log_num)
    return weights, dual


def nonparametric_kl(weights: torch.Tensor) -> torch.Tensor:
    """KL(q‖π_old) of the sample-based E-step policy, per state: ``sum_N w log(N w)``; ``[N, B] -> [B]``.

    On N samples from π_old, q puts mass w_n where π_old's empirical measure puts 1/N.

    Example:
        >>> nonparametric_kl(torch.full((5, 3), 0.2)).abs().max().item() < 1e-7
        True
    """
    num = weights.shape[0]
    # xlogy gives 0·log 0 = 0 for weights that underflowed, without an additive fudge.
    return torch.special.xlogy(weights, num * weights).sum(0)


def weights_effective_sample_size(weights: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size of normalised weights, ``1 / sum_N w^2``: ``[N, B] -> [B]`` in [1, N].

    Example:
        >>> weights_effective_sample_size(torch.full((4, 1), 0.25)).item()
        4.0
    """
    return weights.sum(0).pow(2) / weights.pow(2).sum(0)


def action_penalty_cost(pre_tanh_actions: torch.Tensor, bound: float) -> torch.Tensor:
    """MO-MPO action penalty (Abdolmaleki et al. 2020): ``-‖u - clip(u, -bound, bound)‖``; ``[N, B, D] -> [N, B]``.

    Zero inside the box, minus the Euclidean distance to it outside. Used as a second "reward"
    whose own E-step (temperature with bound ε_penalty) adds weights to the policy fit.

    Example:
        >>> action_penalty_cost(torch.tensor([[[0.5, -4.0]]]), 3.0).tolist()
        [[-1.0]]
    """
    excess = pre_tanh_actions - pre_tanh_actions.clamp(-bound, bound)
    return -torch.linalg.vector_norm(excess, dim=-1)


def gaussian_log_prob(samples: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Diagonal-Gaussian log-density summed over D: ``[N, B, D]`` samples, ``[B, D]`` params -> ``[N, B]``.

    Example:
        >>> lp = gaussian_log_prob(torch.zeros(1, 1, 2), torch.zeros(1, 2), torch.ones(1, 2))
        >>> abs(lp.item() + math.log(2 * math.pi)) < 1e-6
        True
    """
    z = (samples - loc) / scale
    return (-0.5 * z.pow(2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def weighted_cross_entropy(log_prob: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """M-step fit to q: ``-mean_B sum_N w log π(a_n|x)``; ``[N, B]`` twice -> ``[]``.

    Its minimiser over a Gaussian's mean (scale fixed) is the weighted sample mean sum_N w a_n.

    Example:
        >>> weighted_cross_entropy(torch.tensor([[-1.0], [-3.0]]), torch.tensor([[0.5], [0.5]])).item()
        2.0
    """
    return -(weights * log_prob).sum(0).mean()


def gaussian_kl_per_dim(
    loc_p: torch.Tensor, scale_p: torch.Tensor, loc_q: torch.Tensor, scale_q: torch.Tensor
) -> torch.Tensor:
    """KL(N(loc_p, scale_p²) ‖ N(loc_q, scale_q²)) per dimension (closed form); shapes broadcast.

    ``log(σ_q/σ_p) + (σ_p² + (μ_p - μ_q)²) / (2 σ_q²) - 1/2``.

    Example:
        >>> gaussian_kl_per_dim(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0)).item()
        0.5
    """
    var_ratio = (scale_p / scale_q).pow(2)
    return 0.5 * (var_ratio - 1.0 - var_ratio.log()) + 0.5 * ((loc_p - loc_q) / scale_q).pow(2)


def decoupled_kls(
    target_loc: torch.Tensor, target_scale: torch.Tensor, online_loc: torch.Tensor, online_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoupled trust-region KLs of the M-step, per dimension; ``[B, D]`` params -> two ``[B, D]``.

    ``kl_mean = KL(π_old ‖ N(μ_online, σ_old))`` = (μ_old - μ)² / (2 σ_old²) moves only with the mean;
    ``kl_std = KL(π_old ‖ N(μ_old, σ_online))`` moves only with the standard deviation
    (Abdolmaleki et al. 2018b, decoupled updates of mean and covariance).

    Example:
        >>> km, ks = decoupled_kls(torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), torch.ones(1, 1))
        >>> km.item(), ks.item()
        (0.5, 0.0)
    """
    kl_mean = gaussian_kl_per_dim(target_loc, target_scale, online_loc, target_scale)
    kl_std = gaussian_kl_per_dim(target_loc, target_scale, target_loc, online_scale)
    return kl_mean, kl_std


def kl_penalty_and_dual_loss(
    kl: torch.Tensor, alpha: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lagrangian terms of one M-step trust region KL ≤ ε.

    Args:
        kl: ``[B, C]`` KL per state and constrained component (C = D per dimension, else 1).
        alpha: ``[C]`` Lagrange multipliers (positive).
        epsilon: the bound per component.

    Returns:
        ``sum_C stop_grad(α) mean_B KL`` (added to the policy loss; gradient only to the policy)
        and the dual ``sum_C α (ε - stop_grad(mean_B KL))`` (gradient only to α: it grows α when
        the constraint is violated and shrinks it otherwise).

    Example:
        >>> pen, dual = kl_penalty_and_dual_loss(torch.tensor([[0.2], [0.4]]), torch.tensor([2.0]), 0.1)
        >>> round(pen.item(), 6), round(dual.item(), 6)
        (0.6, -0.4)
    """
    mean_kl = kl.mean(0)  # [C]
    penalty = (alpha.detach() * mean_kl).sum()
    dual = (alpha * (epsilon - mean_kl.detach())).sum()
    return penalty, dual


def decoupled_gaussian_mstep(
    samples: torch.Tensor,
    weights: torch.Tensor,
    target_loc: torch.Tensor,
    target_scale: torch.Tensor,
    online_loc: torch.Tensor,
    online_scale: torch.Tensor,
    alpha_mean: torch.Tensor,
    alpha_std: torch.Tensor,
    epsilon_mean: float,
    epsilon_std: float,
    per_dim: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoupled M-step's Lagrangian (Abdolmaleki et al. 2018b).

    The weighted fit of the mean uses N(μ_online, σ_old) and that of the std N(μ_old, σ_online),
    each under its own trust region, so the mean's gradient never depends on the online std and
    vice versa: the std cannot collapse to chase a moving mean.

    Args:
        samples: ``[N, B, D]`` pre-tanh samples from π_old.
        weights: ``[N, B]`` E-step weights (detached).
        target_loc, target_scale: ``[B, D]`` π_old (no gradient expected).
        online_loc, online_scale: ``[B, D]`` π being fitted.
        alpha_mean, alpha_std: ``[C]`` multipliers, C = D if ``per_dim`` else 1.
        epsilon_mean, epsilon_std: bounds per constrained component.
        per_dim: constrain each dimension's KL (else the KL summed over D).

    Returns:
        ``loss_policy []`` (weighted fits + stop_grad(α)-weighted KLs; gradient only to the
        online parameters), ``loss_alpha []`` (the multipliers' duals; gradient only to α) and
        the KLs ``kl_mean, kl_std [B, C]``.

    Example:
        >>> u, w = torch.randn(20, 4, 2), torch.full((20, 4), 0.05)
        >>> loc, scale, alpha = torch.zeros(4, 2), torch.ones(4, 2), torch.ones(2)
        >>> loss, dual, km, ks = decoupled_gaussian_mstep(u, w, loc, scale, loc, scale, alpha, alpha, 1e-2, 1e-6, True)
        >>> km.shape, float(km.sum()), float(ks.sum())
        (torch.Size([4, 2]), 0.0, 0.0)
    """
    fit_mean = weighted_cross_entropy(gaussian_log_prob(samples, online_loc, target_scale), weights)
    fit_std = weighted_cross_entropy(gaussian_log_prob(samples, target_loc, online_scale), weights)
    kl_mean, kl_std = decoupled_kls(target_loc, target_scale, online_loc, online_scale)  # [B, D]
    if not per_dim:
        kl_mean, kl_std = kl_mean.sum(-1, keepdim=True), kl_std.sum(-1, keepdim=True)  # [B, 1]
    penalty_mean, dual_mean = kl_penalty_and_dual_loss(kl_mean, alpha_mean, epsilon_mean)
    penalty_std, dual_std = kl_penalty_and_dual_loss(kl_std, alpha_std, epsilon_std)
    return fit_mean + fit_std + penalty_mean + penalty_std, dual_mean + dual_std, kl_mean, kl_std


def expected_sarsa_target(
    reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Critic target ``r + γ (1 - terminated) mean_N Q'(x', a'_n)``, a'_n ~ π_old(·|x').

    Args:
        reward: ``[B]``; terminated: ``[B]`` (bool or 0/1); next_q: ``[N, B]``.

    Returns:
        ``[B]`` targets (a truncated episode is not terminated: it still bootstraps).

    Example:
        >>> expected_sarsa_target(torch.tensor([1.0, 1.0]), torch.tensor([False, True]),
        ...                       torch.tensor([[2.0, 2.0], [4.0, 4.0]]), 0.5).tolist()
        [2.5, 1.0]
    """
    not_terminated = 1.0 - terminated.to(next_q.dtype)
    return reward + gamma * not_terminated * next_q.mean(0)
