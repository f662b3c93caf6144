"""VMBPO-MFE (Chow et al., Sec. 4.2 and Table 1): VMBPO with a model-free E-step.

Which phase runs where:
  * loop "update" phase (:meth:`VMBPOMFEAgent.update`), on a batch of REAL transitions from D:
    critic by exponential TD (eq. 9; :class:`ExponentialTDLoss`), V (eq. 24) and actor q_c (eq. 25),
    exactly VMBPO's losses except Q's; then the target update; then the M-step (eq. 27), on states
    of a batch from the model buffer E;
  * loop "fit model" / "imagine" phases: q_d fitted on D (plain MLE by default) and rolled out with
    q_c into E. "q_d is fitted only for the M-step": nothing in the E-step reads the model.

With ``m_step_mode="copy"`` (pi <- q_c) the M-step needs no states at all, so that mode fits no
model and the agent is model-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, ReplayBuffer
from torchrl.envs import EnvBase
from torchrl.objectives import LossModule

from torchrl_vmbpo import keys
from torchrl_vmbpo.algorithms.em_agent import EMAgent
from torchrl_vmbpo.data.buffers import sample_mixed
from torchrl_vmbpo.envs.functions import EnvFunctions, env_functions_for
from torchrl_vmbpo.envs.real import env_dims
from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.vmbpo import VMBPOMFELoss
from torchrl_vmbpo.training.agent import Agent, Capabilities, borrow
from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
from torchrl_vmbpo.training.divergence import CriticScale
from torchrl_vmbpo.training.model_fit import make_dynamics, make_model_optimizer
from torchrl_vmbpo.training.validation import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
)

# TrainConfig defaults of the "vmbpo-mfe" preset. utd 1: the E-step learns from real data only, as
# SAC does. 100 rollouts per env step instead of MBPO's 400: E feeds only the M-step's states (one
# batch per update), not the critic, so a quarter of MBPO's imagination keeps each state reused a
# few times at a quarter of the cost.
VMBPO_MFE_DEFAULTS: dict = dict(utd=1.0, rollouts_per_step=100)


@dataclass(frozen=True)
class VMBPOMFESettings(ExtraSettings):
    """VMBPO-MFE's own settings, read from ``TrainConfig.extra`` (``--set extra.temperature=2``).

    Names and defaults are VMBPO's (:class:`~torchrl_vmbpo.algorithms.vmbpo.VMBPOSettings`) where the
    setting is shared; how they were chosen and measured: benchmarks/tuning/vmbpo-mfe.
    """

    algorithm: ClassVar[str] = "VMBPO-MFE"

    eta: PositiveFloat = 3.0
    """Temperature of p(O=1|x,a) = exp(eta r)."""
    temperature: PositiveFloat = 1.0
    """Exponential-TD temperature tau: 1 is eq. 9; large tau tends to the mean TD (Borkar 2002). The
    optimism exp() adds to noisy targets is about Var(y) / (2 tau) per step; on a deterministic env
    tau leaves the fixed point unchanged. 10 on InvertedPendulum-v5 (algorithms/presets.toml),
    where tau = 1 diverged on one seed."""
    max_exponent: PositiveFloat | None = 5.0
    """(y - Q) / tau above which exp is continued linearly (overflow guard); None: exact exp."""
    num_qvalue_nets: PositiveInt = 2
    """Twin Q with min (a stabiliser the paper does not use; 1 gives eq. 9 per copy verbatim)."""
    m_step_mode: Literal["weighted_map", "copy"] = "weighted_map"
    """"weighted_map" (eq. 27 on model states: the M-step q_d is fitted for) or "copy" (pi <- q_c; then
    no state is needed and no model is fitted)."""
    m_step_period: PositiveInt = 1000
    """E-step updates per M-step period: "copy": pi <- q_c once every this many updates; "weighted_map":
    pi takes one gradient step on eq. 27 at EVERY update and this is the period of the trust-region
    snapshot pi_old <- pi (as VMBPO's agent)."""
    kl_coef: NonNegativeFloat = 0.1
    """lambda of eq. 27 (weighted_map only)."""
    kl_coef_std: NonNegativeFloat | None = 100.0
    """None: one KL (eq. 27); else MStepLoss's decoupled trust region, this lambda on the spread."""
    critic_output_scale: Literal["eta", "one"] = "eta"
    """"eta": Q and V output eta x their MLP (models.networks.ScaledOutput; VMBPO's default); "one": plain MLPs."""
    m_step_on_next_states: bool = True
    """M-step states: the model's next states x' ~ q_d of E (True: model states whatever the rollout
    length k) or E's current states (False: with k = 1 those are D's start states, and q_d has no role)."""
    acting_policy: Literal["pi", "q_c"] = "pi"
    """Which policy acts in the real env: "pi" (the paper: D is sampled with pi) or "q_c"."""
    weight_mix: Fraction = 1.0
    """Mix of eq. 19's weights with uniform ones for the q_d fit: 1 (default) is plain MLE; < 1 twists q_d
    towards q_d* = p exp(gamma V') / exp(Q' - eta r) (eq. 14), with V', Q' of the exponential-TD critic."""
    max_weight: Annotated[float, Range(1, low_open=True)] | None = 10.0
    """Clip of the self-normalised eq.-19 weights (weight_mix < 1 only); None: no clip."""
    weighted_fit_after: NonNegativeInt = 1000
    """Updates before a twisted fit (weight_mix < 1) starts: earlier fits are plain MLE."""

    @property
    def model_based(self) -> bool:
        """Only the weighted-MAP M-step reads states, hence needs q_d and E."""
        return self.m_step_mode == "weighted_map"


class VMBPOMFEAgent(EMAgent):
    """pi, q_c, the exponential-TD critic (Q, V and targets) and, for the weighted-MAP M-step, q_d.

    Attributes by the paper's names: ``pi`` (baseline policy), ``q_c`` (variational policy),
    ``critic`` (:class:`ExponentialTDLoss`, owner of V, Q, V', Q'), ``q_d`` (dynamics ensemble, or
    ``None`` in copy mode): references into ``loss`` (:class:`~torchrl_vmbpo.objectives.VMBPOMFELoss`),
    the one owner of every network, so ``state_dict`` saves each tensor once. ``q_c`` starts equal to
    ``pi`` (the E-step starts from q = (pi, p)). Each :meth:`update` takes ``{"real": [B] from D, "model": [B] from E}`` (:meth:`sample_batch`).

    Example:
        >>> from torchrl_vmbpo.training.config import TrainConfig
        >>> from torchrl_vmbpo.envs.termination import never_done
        >>> spec = Bounded(-2.0, 2.0, shape=(1,))
        >>> cfg = TrainConfig(hidden=(8,), model_hidden=(8,))
        >>> agent = VMBPOMFEAgent(cfg, 3, spec, VMBPOMFESettings(temperature=2.0), termination_fn=never_done)
        >>> def rows(n):
        ...     return TensorDict({"observation": torch.randn(n, 3), "action": torch.rand(n, 1),
        ...         ("next", "observation"): torch.randn(n, 3), ("next", "reward"): torch.randn(n, 1),
        ...         ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool)}, [n])
        >>> out = agent.update(TensorDict({"real": rows(5), "model": rows(5)}, []))
        >>> sorted(k for k in out if "loss" in k)
        ['actor_loss_actor', 'loss_qvalue', 'loss_value', 'm_step_loss_policy']
    """

    def __init__(
        self,
        cfg: TrainConfig,
        obs_dim: int,
        action_spec: Bounded,
        settings: VMBPOMFESettings,
        *,
        termination_fn: TerminationFn | None = None,
        reward_fn: RewardFn | None = None,
    ):
        super().__init__()
        s = self.settings = settings
        act_dim = action_spec.shape[-1]
        pi = make_tanh_gaussian_actor(obs_dim, action_spec, hidden=cfg.hidden)
        q_c = make_tanh_gaussian_actor(obs_dim, action_spec, hidden=cfg.hidden)
        q_c.load_state_dict(pi.state_dict())
        scale = s.eta if s.critic_output_scale == "eta" else 1.0
        qvalue = make_q_value(obs_dim, act_dim, hidden=cfg.hidden, output_scale=scale, layer_norm=cfg.critic_layer_norm)
        value = make_state_value(obs_dim, hidden=cfg.hidden, output_scale=scale, layer_norm=cfg.critic_layer_norm)
        q_d = None
        if s.model_based:
            if termination_fn is None:
                raise ValueError("VMBPO-MFE with m_step_mode='weighted_map' fits q_d and needs termination_fn")
            q_d = make_dynamics(cfg, obs_dim, act_dim)
        # The one owner of every network (pi, q_c, V, Q, V', Q', pi_old, q_d): state_dict holds each once.
        self.loss = VMBPOMFELoss(
            pi,
            q_c,
            qvalue,
            value,
            q_d,
            eta=s.eta,
            gamma=cfg.gamma,
            temperature=s.temperature,
            max_exponent=s.max_exponent,
            num_qvalue_nets=s.num_qvalue_nets,
            max_weight=s.max_weight,
            mix=s.weight_mix,
            m_step_mode=s.m_step_mode,
            kl_coef=s.kl_coef,
            kl_coef_std=s.kl_coef_std,
            m_step_period=s.m_step_period,
            weighted_fit_after=s.weighted_fit_after,
        )
        if s.m_step_on_next_states:
            self.loss.m_step.set_keys(observation=keys.NEXT_OBSERVATION)
        borrow(self, q_d=q_d)
        self._setup_em(cfg, pi, q_c, acting_policy=s.acting_policy)
        if q_d is not None:
            borrow(self, dynamics=q_d, model_loss=self.loss.dynamics, plain_model_loss=self.loss.mle_dynamics)
            self.model_optimizer = make_model_optimizer(q_d, lr=cfg.model_lr, weight_decay=cfg.model_weight_decay)
            self.termination_fn, self.reward_fn = termination_fn, reward_fn
            # Real E-step batches; the M-step reads model states from E (sample_batch).
            self.capabilities = Capabilities(model_fit=True, imagination=True, real_ratio=1.0)
        self.batch_size = cfg.batch_size

    def dynamics_loss(self) -> LossModule:
        """Plain MLE, or eq. 19 (``weight_mix < 1``) once the critic has trained ``weighted_fit_after`` updates."""
        if self.settings.weight_mix == 1.0:
            return self.plain_model_loss
        return self.loss.dynamics_objective(int(self.num_updates))

    def sample_batch(
        self, real_buffer: ReplayBuffer, model_buffer: ReplayBuffer | None, batch_size: int, real_ratio: float
    ) -> TensorDictBase:
        """``{"real": B rows of D}`` for the E-step, plus ``"model": B rows of E`` for the M-step.

        ``real_ratio`` is ignored: the E-step is model-free by definition, and the M-step's states
        come from the model only.
        """
        parts = {"real": sample_mixed(real_buffer, None, batch_size, 1.0)}
        if self.settings.model_based and model_buffer is not None and len(model_buffer):
            parts["model"] = sample_mixed(model_buffer, None, batch_size, 1.0)
        return TensorDict(parts, batch_size=[])

    def critic_scale(self) -> CriticScale:
        """The exponential-TD critic's ``q_value`` is eta x reward units (Q = eta r + log E_p exp(gamma V'), eq. 9)."""
        return CriticScale("q_value", per_reward=self.settings.eta)

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        metrics = self.e_step_update(batch["real"])  # model-free E-step: real transitions only
        metrics.update(self.m_step_update(batch.get("model", None)))  # M-step on model states
        return metrics


def build_vmbpo_mfe(cfg: TrainConfig, env: EnvBase, fns: EnvFunctions | None = None) -> Agent:
    """The ``vmbpo-mfe`` preset's agent for ``env`` (settings from ``cfg.extra``)."""
    obs_dim, _ = env_dims(env)
    settings = VMBPOMFESettings.from_extra(cfg.extra)
    fns = fns or env_functions_for(cfg.env)
    termination_fn = fns.termination() if settings.model_based else None
    return VMBPOMFEAgent(
        cfg, obs_dim, env.action_spec, settings, termination_fn=termination_fn, reward_fn=fns.reward_fn
    )
