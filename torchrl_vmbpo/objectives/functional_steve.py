"""Pure maths of STEVE (Buckman et al. 2018): candidate targets per horizon, inverse-variance blend.

Shape legend: ``H`` rollout horizon (candidates for horizons ``i = 0..H``), ``N`` model members,
``L`` Q functions, ``*B`` batch, ``C`` candidates per horizon (``N * L``).

For a real transition ``(s_0, a_0, r_0, s_1)`` and an H-step rollout ``s_1, a_1, s_2, ...`` through
member ``n`` (``a_j ~ pi(s_j)``), the candidate target of horizon ``i`` with Q function ``l`` is
(STEVE, eq. 3, with SAC's soft rewards)

    T^i_{n,l} = r_0 + sum_{j=1..i} gamma^j d_j (r_j + h_j) + gamma^(i+1) d_(i+1) (Q_l(s_(i+1), a_(i+1)) + h_(i+1))

where ``d_j`` is 1 while ``s_j`` is not terminal (``d_1 = 1 - terminated``), ``r_j`` the model's
(or a known) reward of step ``j`` and ``h_j = -alpha log pi(a_j | s_j)`` the entropy bonus (0 for
a non-soft critic). The target is ``sum_i w_i mean_i / sum_i w_i`` with ``w_i = 1 / var_i``, the
mean and variance of the ``C`` candidates of horizon ``i`` (STEVE, eq. 5).
"""

from __future__ import annotations

import torch


def steve_candidates(
    first_reward: torch.Tensor,
    rewards: torch.Tensor,
    continuation: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float | torch.Tensor,
) -> torch.Tensor:
    """Every candidate target ``T^i_{n,l}``: ``[H+1, N, L, *B]``.

    Args:
        first_reward: ``r_0`` ``[*B]``, the real reward of the transition.
        rewards: ``r_j + h_j`` for ``j = 1..H``, ``[H, N, *B]``.
        continuation: ``d_j`` for ``j = 1..H+1``, ``[H+1, N, *B]`` (1 alive, 0 after a terminal state).
        bootstrap: ``Q_l(s_(i+1), a_(i+1)) + h_(i+1)`` for ``i = 0..H``, ``[H+1, N, L, *B]``.
        gamma: discount.

    Example:
        >>> r0, q = torch.tensor([1.0]), torch.full((1, 1, 1, 1), 10.0)  # H = 0: r0 + gamma Q
        >>> steve_candidates(r0, torch.zeros(0, 1, 1), torch.ones(1, 1, 1), q, 0.9).flatten()
        tensor([10.])
    """
    horizon = rewards.shape[0]
    if continuation.shape[0] != horizon + 1 or bootstrap.shape[0] != horizon + 1:
        raise ValueError(
            f"continuation and bootstrap need H+1 = {horizon + 1} leading entries, got "
            f"{continuation.shape[0]} and {bootstrap.shape[0]}"
        )
    gamma = torch.as_tensor(gamma, dtype=bootstrap.dtype)
    powers = gamma ** torch.arange(1, horizon + 2, dtype=bootstrap.dtype)  # gamma^1 .. gamma^(H+1)
    view = (-1,) + (1,) * (continuation.ndim - 1)
    # Discounted reward sums up to horizon i: S_0 = 0, S_i = sum_{j<=i} gamma^j d_j (r_j + h_j).
    # `where`, not a product, past a terminal state: a model state there may have diverged (inf/NaN).
    zero = torch.zeros((), dtype=bootstrap.dtype)
    step = torch.where(continuation[:horizon] > 0, powers[:horizon].view(view) * continuation[:horizon] * rewards, zero)
    partial = torch.cat([torch.zeros_like(continuation[:1]), step.cumsum(0)], dim=0)  # [H+1, N, *B]
    tail = (powers.view(view) * continuation).unsqueeze(2)  # gamma^(i+1) d_(i+1)
    return first_reward + partial.unsqueeze(2) + torch.where(tail > 0, tail * bootstrap, zero)


def inverse_variance_blend(candidates: torch.Tensor, *, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """STEVE's target from ``[H+1, C, *B]`` candidates: ``(target [*B], weights [H+1, *B])``.

    ``w_i`` is proportional to ``1 / max(var_i, eps)`` (population variance over the ``C``
    candidates); a horizon with zero variance therefore takes (up to ``eps``) all the weight, and
    with a single horizon the target is its candidates' mean.

    Example:
        >>> c = torch.tensor([[[1.0], [3.0]], [[5.0], [5.0]]])  # horizon 1 has zero variance
        >>> target, w = inverse_variance_blend(c)
        >>> round(float(target), 4), [round(float(x), 4) for x in w.flatten()]
        (5.0, [0.0, 1.0])
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    mean = candidates.mean(1)
    var = candidates.var(1, unbiased=False)
    precision = 1.0 / var.clamp_min(eps)
    weights = precision / precision.sum(0, keepdim=True)
    return (weights * mean).sum(0), weights
