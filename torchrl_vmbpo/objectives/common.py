"""What every VMBPO loss shares with TorchRL's own losses: the key contract, ``in_keys`` / ``out_keys``
and ``make_value_estimator`` (tensordict plumbing, no maths).

Key contract (``SACLoss``'s): a loss's ``set_keys`` names are the entries of one step; the next
step's entries are read under ``"next"``. ``loss.set_keys(observation="obs", reward="rew")`` makes
a loss read ``"obs"``, ``("next", "obs")`` and ``("next", "rew")``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchrl.objectives import LossModule
from torchrl.objectives.utils import ValueEstimators

from torchrl_vmbpo import keys


def next_key(key):
    """The entry of ``key`` at the next step: ``"reward" -> ("next", "reward")``, ``("a", "b") -> ("next", "a", "b")``."""
    return ("next", key) if isinstance(key, str) else ("next", *key)


@dataclass
class TransitionKeys:
    """The entries of a transition (``set_keys`` names): x, a, and under "next" x', reward and terminated."""

    observation: str = keys.OBSERVATION
    action: str = keys.ACTION
    reward: str = "reward"
    terminated: str = "terminated"


class KeyedLoss(LossModule):
    """A LossModule whose ``in_keys`` are the batch entries it reads and ``out_keys`` the entries it returns.

    Subclasses list their outputs in ``_out_keys_`` and implement :meth:`_read_keys` (``{name: key}``,
    next-step entries already under ``"next"``). ``make_value_estimator`` raises a :class:`ValueError`
    naming the targets the loss supports (``SUPPORTED_VALUE_ESTIMATORS``, empty where the loss has no
    bootstrapped target) instead of TorchRL's generic ``NotImplementedError``.
    """

    _out_keys_: tuple[str, ...] = ()
    SUPPORTED_VALUE_ESTIMATORS: tuple = ()

    def _read_keys(self) -> dict:
        raise NotImplementedError

    @property
    def in_keys(self) -> list:
        """The batch entries :meth:`forward` reads (``set_keys`` renames them)."""
        return list(dict.fromkeys(self._read_keys().values()))

    @property
    def out_keys(self) -> list[str]:
        """The entries :meth:`forward` returns: ``loss_*`` to step and detached diagnostics."""
        return list(self._out_keys_)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    def make_value_estimator(self, value_type=None, **hyperparams):
        """Refused unless ``value_type`` is one of ``SUPPORTED_VALUE_ESTIMATORS`` (see the subclass)."""
        name = type(self).__name__
        if not self.SUPPORTED_VALUE_ESTIMATORS:
            raise ValueError(
                f"{name} has no bootstrapped target, so no value estimator applies (make_value_estimator "
                f"is for the critic: VMBPOCriticLoss supports {[v.name for v in (ValueEstimators.TD0,)]})"
            )
        raise ValueError(
            f"{name} supports the value estimators {[getattr(v, 'name', v) for v in self.SUPPORTED_VALUE_ESTIMATORS]}, "
            f"got {value_type!r}"
        )
