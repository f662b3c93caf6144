"""Known termination functions ``done(next_obs) -> bool [*B, 1]`` for the world-model env.

MBPO replaces a learned done-predictor by these (reference facts). Observations are Gymnasium v5's.
Users pass their own callable for other envs (``WorldModelEnv(termination_fn=...)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from torchrl_vmbpo.errors import UnknownEnvFunction

TerminationFn = Callable[[torch.Tensor], torch.Tensor]


def never_done(next_obs: torch.Tensor) -> torch.Tensor:
    """Pendulum, HalfCheetah, Reacher: episodes only truncate."""
    return torch.zeros(*next_obs.shape[:-1], 1, dtype=torch.bool, device=next_obs.device)


def hopper_done(next_obs: torch.Tensor) -> torch.Tensor:
    """Hopper-v5: alive iff finite, |obs[1:]| < 100, height > 0.7 and |angle| < 0.2.

    (MBPO's original applies ``abs`` to a boolean here; the intended check is used.)
    """
    height, angle = next_obs[..., 0], next_obs[..., 1]
    alive = (
        torch.isfinite(next_obs).all(-1)
        & (next_obs[..., 1:].abs() < 100).all(-1)
        & (height > 0.7)
        & (angle.abs() < 0.2)
    )
    return (~alive).unsqueeze(-1)


def walker2d_done(next_obs: torch.Tensor) -> torch.Tensor:
    """Walker2d-v5: alive iff 0.8 < height < 2.0 and -1 < angle < 1."""
    height, angle = next_obs[..., 0], next_obs[..., 1]
    alive = (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return (~alive).unsqueeze(-1)


def inverted_pendulum_done(next_obs: torch.Tensor) -> torch.Tensor:
    """InvertedPendulum-v5: alive iff finite and |pole angle obs[1]| <= 0.2."""
    alive = torch.isfinite(next_obs).all(-1) & (next_obs[..., 1].abs() <= 0.2)
    return (~alive).unsqueeze(-1)


KNOWN_TERMINATION_FNS: dict[str, TerminationFn] = {
    "Pendulum-v1": never_done,
    "InvertedPendulum-v5": inverted_pendulum_done,
    "Hopper-v5": hopper_done,
    "Walker2d-v5": walker2d_done,
    "HalfCheetah-v5": never_done,
    "Reacher-v5": never_done,
    "torchrl_vmbpo/Reacher7DoF-v0": never_done,
}


def termination_fn_for(env_id: str) -> TerminationFn:
    """The known termination function of ``env_id``; an :class:`UnknownEnvFunction` (a KeyError) lists the
    known ids otherwise."""
    try:
        return KNOWN_TERMINATION_FNS[env_id]
    except KeyError:
        raise UnknownEnvFunction(
            f"No known termination function for {env_id!r}; known: {sorted(KNOWN_TERMINATION_FNS)}. "
            "Pass termination_fn=<callable next_obs -> bool[..., 1]> to use another env."
        ) from None
