"""One LossModule per algorithm: :class:`VMBPOLoss` and :class:`VMBPOMFELoss` own every network.

As TorchRL's ``SACLoss`` owns its actor and critics, these own pi, q_c, q_d, nu, V, Q and the
targets V', Q' (and the M-step's snapshot pi_old), through the five objectives they compose, each
network registered exactly once: one ``.to()``, ``state_dict``, ``deepcopy`` or ``torch.compile``
covers the algorithm, and a checkpoint holds each tensor once. The five objectives stay usable alone
(``loss.critic``, ``loss.actor``, ``loss.m_step``, ``loss.dynamics``, ``loss.log_ratio``).
"""

from __future__ import annotations

from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.objectives import LossModule

from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.objectives.common import KeyedLoss, TransitionKeys
from torchrl_vmbpo.objectives.ensemble_nll import GaussianEnsembleNLLLoss
from torchrl_vmbpo.objectives.exponential_td import ExponentialTDLoss
from torchrl_vmbpo.objectives.log_ratio import LogRatioLoss
from torchrl_vmbpo.objectives.m_step import MStepLoss
from torchrl_vmbpo.objectives.vmbpo_actor import VMBPOActorLoss
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss
from torchrl_vmbpo.objectives.vmbpo_dynamics import VMBPODynamicsLoss

# Which optimizer group steps each loss_* entry (param_groups() gives the groups' parameters).
LOSS_GROUPS = {
    "loss_dynamics": "dynamics",
    "loss_log_ratio": "log_ratio",
    "loss_qvalue": "critic",
    "loss_value": "critic",
    "loss_entropy_weight": "critic",
    "loss_actor": "actor",
    "loss_policy": "policy",
}


class _EMLoss(KeyedLoss):
    """What VMBPO and VMBPO-MFE share: the critic, the actor, the M-step, the dynamics fit and its warm-up."""

    _AcceptedKeys = TransitionKeys  # shared by every objective (SACLoss's contract)
    default_keys = _AcceptedKeys
    critic: VMBPOCriticLoss
    actor: VMBPOActorLoss
    m_step: MStepLoss

    def _init_objectives(
        self, critic, pi, q_c, dynamics_model, *, m_step: dict, dynamics: dict, weighted_fit_after: int
    ) -> None:
        if not (isinstance(weighted_fit_after, int) and weighted_fit_after >= 0):
            raise ValueError(f"weighted_fit_after must be an int >= 0, got {weighted_fit_after!r}")
        self.critic = critic
        self.actor = VMBPOActorLoss(q_c, critic, pi)
        self.m_step = MStepLoss(pi, q_c, **m_step)
        self.weighted_fit_after = weighted_fit_after
        if dynamics_model is None:
            self.dynamics = None
            self.__dict__["mle_dynamics"] = None
        else:
            logvar_penalty = dynamics.get("logvar_penalty", 0.01)
            self.dynamics = VMBPODynamicsLoss(dynamics_model, critic, **dynamics)
            # The warm-up's plain MLE: the same q_d, borrowed (registered once, by self.dynamics).
            self.__dict__["mle_dynamics"] = GaussianEnsembleNLLLoss(dynamics_model, logvar_penalty=logvar_penalty)

    # --- the networks, by the paper's names (registered once, inside the objectives) ---
    @property
    def pi(self) -> nn.Module:
        return self.m_step.baseline_policy

    @property
    def q_c(self) -> nn.Module:
        return self.actor.variational_policy

    @property
    def q_d(self) -> DynamicsModel | None:
        return None if self.dynamics is None else self.dynamics.dynamics_model

    @property
    def eta(self) -> float:
        return self.critic.eta

    @property
    def gamma(self) -> float:
        return self.critic.gamma

    def objectives(self) -> dict[str, LossModule]:
        """The objectives this loss composes, by name (each usable alone on its own batch)."""
        named = {
            "dynamics": self.dynamics,
            "log_ratio": getattr(self, "log_ratio", None),
            "critic": self.critic,
            "actor": self.actor,
            "m_step": self.m_step,
        }
        return {name: loss for name, loss in named.items() if loss is not None}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters each optimizer group steps (``LOSS_GROUPS`` maps every ``loss_*`` to its group):
        ``dynamics`` q_d, ``log_ratio`` nu, ``critic`` Q and V (and alpha_H), ``actor`` q_c, ``policy`` pi."""
        groups = {
            "dynamics": self.dynamics,
            "log_ratio": getattr(self, "log_ratio", None),
            "critic": self.critic,
            "actor": self.actor,
            "policy": self.m_step,
        }
        return {name: list(loss.parameters()) for name, loss in groups.items() if loss is not None}

    def _read_keys(self) -> dict:
        read = {}
        for name, loss in self.objectives().items():
            read.update({f"{name}.{n}": key for n, key in loss._read_keys().items()})
        return read

    @property
    def out_keys(self) -> list[str]:
        out = []
        for name, loss in self.objectives().items():
            out += [k if k.startswith("loss_") else f"{name}_{k}" for k in loss.out_keys]
        return out

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        """``set_keys`` renames reach every objective (each takes the names it reads)."""
        for loss in [*self.objectives().values(), self.mle_dynamics]:
            if loss is None:
                continue
            if isinstance(loss, GaussianEnsembleNLLLoss):  # absolute keys: the dynamics loss's mapping
                loss.set_keys(
                    **{
                        n: self.dynamics.nll_loss.tensor_keys.__dict__[n]
                        for n in ("observation", "action", "next_observation", "reward")
                    }
                )
                continue
            accepted = loss._AcceptedKeys.__dataclass_fields__
            loss.set_keys(**{n: v for n, v in kwargs.items() if n in accepted})

    # --- protocol: the dynamics warm-up and the M-step schedule ---
    def dynamics_objective(self, num_updates: int) -> LossModule:
        """The dynamics fit after ``num_updates`` E-step updates: plain MLE during the warm-up
        (``num_updates < weighted_fit_after``: V' and Q' are untrained), then eq. 19."""
        if self.dynamics is None:
            raise ValueError(f"{type(self).__name__} was built without a dynamics model")
        return self.mle_dynamics if num_updates < self.weighted_fit_after else self.dynamics

    def m_step_schedule(self, num_updates: int) -> bool:
        """The M-step's schedule, called after each E-step update with the updates so far: every
        ``m_step_period`` updates, copy pi <- q_c (``m_step_mode="copy"``) or snapshot pi_old <- pi
        (weighted-MAP, which then takes ONE gradient step on ``loss_policy`` per update). True when it acted."""
        return self.m_step.on_update(num_updates)

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Every objective on ``td``: ``loss_*`` entries (stepped by the groups of ``LOSS_GROUPS``; the
        objectives detach each other's networks, so one summed backward equals separate steps) and each
        objective's diagnostics prefixed by its name. In a loop that feeds objectives different batches
        (real rows to ``dynamics`` / ``log_ratio``, model rows to the E-step), call them one by one."""
        out = {}
        for name, loss in self.objectives().items():
            for key, value in loss(td).items():
                out[key if key.startswith("loss_") else f"{name}_{key}"] = value
        return TensorDict(out, batch_size=[])


class VMBPOLoss(_EMLoss):
    r"""VMBPO's five objectives in one LossModule that owns pi, q_c, q_d, nu, V, Q, V', Q'.

    ``forward(td)`` returns (optimizer group of :meth:`param_groups` in brackets):

    - ``loss_dynamics`` [dynamics: q_d]: eq. 19, :class:`VMBPODynamicsLoss` (``loss.dynamics``);
    - ``loss_log_ratio`` [log_ratio: nu]: eq. 21, :class:`LogRatioLoss` (``loss.log_ratio``);
    - ``loss_qvalue``, ``loss_value`` [critic: Q, V; and ``loss_entropy_weight`` under an entropy
      constraint]: eqs. 22-24, :class:`VMBPOCriticLoss` (``loss.critic``, owner of V', Q': one
      ``SoftUpdate(loss.critic)`` updates them);
    - ``loss_actor`` [actor: q_c]: eq. 25, :class:`VMBPOActorLoss` (``loss.actor``);
    - ``loss_policy`` [policy: pi]: eq. 27, :class:`MStepLoss` (``loss.m_step``; weighted-MAP mode only),

    plus each objective's diagnostics prefixed by its name (``critic_q_value``, ``actor_entropy``, ...).
    The paper trains q_d and nu on real transitions (D) and the E-step on model ones (E): call the
    objectives one by one for that (see the README's custom loop). nu is fitted to the q_d of the
    latest fit; model rows generated by an earlier q_d (a replay buffer E kept across fits) make the
    critic's ``-nu`` an approximation (``VMBPOAgent`` says more). Real rows in an E-step batch must
    carry the ``("model", "is_real")`` flag: the critic then uses nu = 0 on them.

    Protocol (documented arguments, the preset's schedule): ``weighted_fit_after`` E-step updates of
    plain-MLE dynamics fits before eq. 19 (:meth:`dynamics_objective`), and the M-step's period
    ``m_step_period`` (:meth:`m_step_schedule`): the copy pi <- q_c every ``m_step_period`` updates,
    or, in weighted-MAP mode, the snapshot pi_old <- pi every ``m_step_period`` updates while pi
    steps on ``loss_policy`` at every update.

    Args:
        actor_network: pi (tanh-Gaussian ProbabilisticActor).
        variational_network: q_c (same interface; start it equal to pi for the EM).
        qvalue_network: Q template (2 in_keys; re-initialised into ``num_qvalue_nets`` copies).
        value_network: V (1 in_key), or ``None`` with ``bootstrap="action_value"``: no V, V', no
            ``loss_value``, and eq. 19 reads V'(x') as a Monte Carlo soft value of Q' under q_c
            (:meth:`VMBPOCriticLoss.monte_carlo_value`, ``value_samples`` draws).
        dynamics_model: q_d.
        log_ratio_network: nu (3 in_keys), or ``None`` for nu = 0.

    Keyword Args:
        eta, gamma, num_qvalue_nets, uniform_prior_weight, target_entropy, entropy_weight_init,
            entropy_weight_min, entropy_log_det, bootstrap, value_ceiling, value_samples, loss_function:
            :class:`VMBPOCriticLoss`'s.
        max_weight, mix, min_ess, normaliser, normaliser_samples, logvar_penalty: :class:`VMBPODynamicsLoss`'s.
        m_step_mode, kl_coef, kl_coef_std: :class:`MStepLoss`'s ``mode``, ``kl_coef``, ``kl_coef_std``.
        m_step_period: E-step updates per M-step period (:meth:`m_step_schedule`): between two copies
            pi <- q_c (copy), or between two snapshots pi_old <- pi (weighted_map, where pi takes a
            gradient step every update).
        weighted_fit_after: E-step updates of plain-MLE warm-up (:meth:`dynamics_objective`; default 0).

    Keys (``set_keys``, ``SACLoss``'s contract, carried to every objective): ``observation``,
    ``action``, ``reward``, ``terminated`` (the last two read under ``"next"``, as is x').

    Example:
        >>> import torch
        >>> from torchrl.data import Bounded
        >>> from torchrl_vmbpo.models import (make_log_ratio_network, make_q_value, make_state_value,
        ...                                   make_tanh_gaussian_actor)
        >>> spec = Bounded(-1.0, 1.0, shape=(1,))
        >>> pi, q_c = make_tanh_gaussian_actor(3, spec, hidden=(8,)), make_tanh_gaussian_actor(3, spec, hidden=(8,))
        >>> loss = VMBPOLoss(pi, q_c, make_q_value(3, 1, hidden=(8,)), make_state_value(3, hidden=(8,)),
        ...                  DynamicsModel(3, 1, hidden=(8,)), make_log_ratio_network(3, 1, hidden=(8,)),
        ...                  eta=1.0, gamma=0.99, mix=0.5)
        >>> td = TensorDict({"observation": torch.randn(6, 3), "action": torch.rand(6, 1) * 2 - 1,
        ...     ("next", "observation"): torch.randn(6, 3), ("next", "reward"): torch.randn(6, 1),
        ...     ("next", "terminated"): torch.zeros(6, 1, dtype=torch.bool)}, [6])
        >>> sorted(k for k in loss(td).keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_dynamics', 'loss_log_ratio', 'loss_policy', 'loss_qvalue', 'loss_value']
        >>> sorted(loss.param_groups())
        ['actor', 'critic', 'dynamics', 'log_ratio', 'policy']
    """

    def __init__(
        self,
        actor_network,
        variational_network,
        qvalue_network: TensorDictModule,
        value_network: TensorDictModule | None,
        dynamics_model: DynamicsModel,
        log_ratio_network: TensorDictModule | None = None,
        *,
        eta: float,
        gamma: float,
        num_qvalue_nets: int = 2,
        uniform_prior_weight: float = 0.0,
        target_entropy: float | None = None,
        entropy_weight_init: float = 1.0,
        entropy_weight_min: float | None = None,
        entropy_log_det: float = 0.0,
        bootstrap: str = "value",
        value_ceiling: bool = False,
        value_samples: int = 8,
        loss_function: str = "l2",
        max_weight: float | None = None,
        mix: float = 0.0,
        min_ess: float | None = None,
        normaliser: str = "critic",
        normaliser_samples: int = 4,
        logvar_penalty: float = 0.01,
        m_step_mode: str = "weighted_map",
        kl_coef: float = 1.0,
        kl_coef_std: float | None = None,
        m_step_period: int = 1,
        weighted_fit_after: int = 0,
    ):
        super().__init__()
        critic = VMBPOCriticLoss(
            qvalue_network,
            value_network,
            variational_network,
            actor_network,
            log_ratio_network,
            eta=eta,
            gamma=gamma,
            num_qvalue_nets=num_qvalue_nets,
            loss_function=loss_function,
            uniform_prior_weight=uniform_prior_weight,
            target_entropy=target_entropy,
            entropy_weight_init=entropy_weight_init,
            entropy_weight_min=entropy_weight_min,
            entropy_log_det=entropy_log_det,
            bootstrap=bootstrap,
            value_ceiling=value_ceiling,
            value_samples=value_samples,
        )
        self._init_objectives(
            critic,
            actor_network,
            variational_network,
            dynamics_model,
            m_step=dict(mode=m_step_mode, kl_coef=kl_coef, kl_coef_std=kl_coef_std, period=m_step_period),
            dynamics=dict(
                max_weight=max_weight,
                mix=mix,
                min_ess=min_ess,
                normaliser=normaliser,
                normaliser_samples=normaliser_samples,
                logvar_penalty=logvar_penalty,
            ),
            weighted_fit_after=weighted_fit_after,
        )
        self.log_ratio = None if log_ratio_network is None else LogRatioLoss(log_ratio_network, dynamics_model)

    @property
    def nu(self) -> nn.Module | None:
        return None if self.log_ratio is None else self.log_ratio.log_ratio_network


class VMBPOMFELoss(_EMLoss):
    r"""VMBPO-MFE's objectives in one LossModule that owns pi, q_c, V, Q, V', Q' and (optionally) q_d.

    As :class:`VMBPOLoss` with the exponential-TD critic (eq. 9, :class:`ExponentialTDLoss`, trained
    on real transitions) and no nu; ``dynamics_model`` (``None`` for a model-free run) only supplies
    the M-step's states. ``forward`` returns ``loss_qvalue``, ``loss_value`` [critic], ``loss_actor``
    [actor], ``loss_policy`` [policy, weighted-MAP only] and, with a model, ``loss_dynamics`` [dynamics].

    Args:
        actor_network, variational_network, qvalue_network, value_network: as :class:`VMBPOLoss`.
        dynamics_model: q_d or ``None``.

    Keyword Args:
        eta, gamma, temperature, max_exponent, num_qvalue_nets: :class:`ExponentialTDLoss`'s.
        max_weight, mix: :class:`VMBPODynamicsLoss`'s; m_step_mode, kl_coef, kl_coef_std, m_step_period,
            weighted_fit_after: as :class:`VMBPOLoss`.
    """

    def __init__(
        self,
        actor_network,
        variational_network,
        qvalue_network: TensorDictModule,
        value_network: TensorDictModule,
        dynamics_model: DynamicsModel | None = None,
        *,
        eta: float,
        gamma: float,
        temperature: float = 1.0,
        max_exponent: float | None = 5.0,
        num_qvalue_nets: int = 2,
        max_weight: float | None = None,
        mix: float = 1.0,
        m_step_mode: str = "weighted_map",
        kl_coef: float = 1.0,
        kl_coef_std: float | None = None,
        m_step_period: int = 1,
        weighted_fit_after: int = 0,
    ):
        super().__init__()
        critic = ExponentialTDLoss(
            qvalue_network,
            value_network,
            variational_network,
            actor_network,
            eta=eta,
            gamma=gamma,
            temperature=temperature,
            max_exponent=max_exponent,
            num_qvalue_nets=num_qvalue_nets,
        )
        self._init_objectives(
            critic,
            actor_network,
            variational_network,
            dynamics_model,
            m_step=dict(mode=m_step_mode, kl_coef=kl_coef, kl_coef_std=kl_coef_std, period=m_step_period),
            dynamics=dict(max_weight=max_weight, mix=mix),
            weighted_fit_after=weighted_fit_after,
        )
