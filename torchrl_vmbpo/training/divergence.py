"""The divergence guard: a critic whose values leave the range the observed rewards allow.

A discounted value is a sum of per-step terms, so ``|Q| <= (r_max + c) / (1 - gamma)`` in reward units,
with ``r_max`` the largest ``|r|`` a step can give and ``c`` whatever else an algorithm adds per step.
The guard takes ``r_max`` as the largest ``|r|`` in the real buffer D so far, ``c`` and the critic's
units from the agent (:meth:`~torchrl_vmbpo.training.agent.Agent.critic_scale`: VMBPO's Q is eta x
reward units, and its Q target subtracts ``nu`` with ``|nu| <= log_ratio_bound``, i.e. at most
``log_ratio_bound / eta`` reward units a step), and calls the critic diverged when its magnitude
passes ``divergence_factor`` times that bound. Entropy or KL bonuses are not in ``c``: they are small
against the factor for a healthy critic, and a critic that diverges passes any such margin.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from tensordict import TensorDictBase

from torchrl_vmbpo import keys

RATIO_METRIC = "critic_divergence_ratio"


class CriticDivergenceWarning(RuntimeWarning):
    """A run's critic passed ``divergence_factor`` times the range its rewards allow (``divergence="warn"``)."""


@dataclass(frozen=True)
class CriticScale:
    """How the guard reads an agent's critic from the metrics of its updates."""

    metric: str = "q_value"
    """The update metric holding the critic's (mean) value: SAC, MBPO, STEVE, MPO, VMBPO, VMBPO-MFE all
    report ``q_value``."""
    per_reward: float = 1.0
    """Value units per reward unit: 1 for SAC's Q, eta for VMBPO's (Q = eta r + ...)."""
    per_step_bound: float = 0.0
    """Largest per-step term besides the reward, in reward units (VMBPO: log_ratio_bound / eta)."""


@dataclass(frozen=True)
class Divergence:
    """The first time the critic passed the guard's limit."""

    env_step: int
    value: float
    """``|critic metric| / per_reward``: the critic's magnitude in reward units."""
    bound: float
    """``(r_max + per_step_bound) / (1 - gamma)``: the range the rewards allow, in reward units."""
    ratio: float
    """``value / bound`` (> the factor)."""

    def to_json(self) -> dict:
        return {"env_step": self.env_step, "value": self.value, "bound": self.bound, "ratio": self.ratio}

    def message(self, factor: float) -> str:
        return (
            f"critic diverged at env step {self.env_step}: |Q| = {self.value:.4g} reward units is {self.ratio:.3g}x "
            f"the {self.bound:.4g} that (max |r| in D + per-step bound) / (1 - gamma) allows (limit: {factor:g}x)"
        )


class DivergenceGuard:
    """Tracks ``r_max`` over the real data and checks each update's metrics against the bound.

    Args:
        scale: the agent's :class:`CriticScale`, or ``None`` for an agent without a critic (never trips).
        gamma: the discount (``gamma = 1``: no bound, never trips).
        factor: how many times the bound counts as diverged (``TrainConfig.divergence_factor``).
        real_data: transitions already in D (a resumed run), read once for ``r_max``.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> guard = DivergenceGuard(CriticScale(), gamma=0.5, factor=10.0)
        >>> guard.observe(TensorDict({("next", "reward"): torch.tensor([[-2.0], [1.0]])}, [2]))
        >>> metrics = {"q_value": -20.0}
        >>> guard.check(metrics, env_step=5) is None, metrics["critic_divergence_ratio"]  # 20 / (2 / 0.5)
        (True, 5.0)
        >>> guard.check({"q_value": 50.0}, env_step=6).to_json()
        {'env_step': 6, 'value': 50.0, 'bound': 4.0, 'ratio': 12.5}
    """

    def __init__(
        self, scale: CriticScale | None, *, gamma: float, factor: float, real_data: TensorDictBase | None = None
    ):
        self.scale, self.gamma, self.factor = scale, float(gamma), float(factor)
        self.r_max = 0.0
        self.seen = False  # no reward seen: no bound yet
        if real_data is not None and len(real_data):
            self.observe(real_data)

    def observe(self, transitions: TensorDictBase) -> None:
        """Take the rewards of new real transitions into ``r_max``."""
        rewards = transitions.get(keys.REWARD)
        if rewards.numel():
            self.r_max = max(self.r_max, float(rewards.detach().abs().max()))
            self.seen = True

    @property
    def bound(self) -> float:
        """``(r_max + per_step_bound) / (1 - gamma)`` in reward units (inf when gamma = 1 or before any
        reward was seen)."""
        if self.scale is None or self.gamma >= 1.0 or not self.seen:
            return math.inf
        return (self.r_max + self.scale.per_step_bound) / (1.0 - self.gamma)

    def check(self, metrics: dict[str, float], env_step: int) -> Divergence | None:
        """Add ``critic_divergence_ratio`` to ``metrics`` (when the agent reports its critic and the
        bound is positive) and return a :class:`Divergence` when it exceeds the factor (a NaN or inf
        critic counts as diverged)."""
        bound = self.bound
        if self.scale is None or self.scale.metric not in metrics or not 0.0 < bound < math.inf:
            return None
        value = abs(float(metrics[self.scale.metric])) / self.scale.per_reward
        ratio = value / bound if math.isfinite(value) else math.inf
        metrics[RATIO_METRIC] = ratio
        if ratio > self.factor or math.isnan(value):
            return Divergence(env_step, value, bound, ratio)
        return None


def warn_divergence(found: Divergence, factor: float) -> None:
    """The one-line warning of ``divergence="warn"`` (once per run)."""
    warnings.warn(found.message(factor) + "; the run goes on (divergence=warn)", CriticDivergenceWarning, stacklevel=2)


__all__ = [
    "RATIO_METRIC",
    "CriticDivergenceWarning",
    "CriticScale",
    "Divergence",
    "DivergenceGuard",
    "warn_divergence",
]
