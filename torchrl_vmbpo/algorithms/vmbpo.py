"""VMBPO (Chow et al.): the E-step (eqs. 19, 21-25) and M-step (eq. 27) over the shared loop.

Which phase runs where (Algorithm 1 as far as the paper fixes it):
  * loop "fit model" phase: q_d by the twisted NLL of eq. 19 (:meth:`VMBPOAgent.dynamics_loss`),
    then ν by eq. 21 (:meth:`VMBPOAgent.after_model_fit`);
  * loop "imagine" phase: branched rollouts of q_d with q_c into the model buffer E;
  * loop "update" phase (:meth:`VMBPOAgent.update`): critic (eqs. 22-24) and actor (eq. 25) on
    model transitions, target update, then the M-step (eq. 27): in "copy" mode pi <- q_c every
    ``m_step_period`` updates; in "weighted_map" mode one gradient step of pi on eq. 27 EVERY update,
    with the trust-region centre pi_old <- pi re-snapshotted every ``m_step_period`` updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, ReplayBuffer
from torchrl.objectives import LossModule

from torchrl_vmbpo import keys
from torchrl_vmbpo.algorithms.em_agent import EMAgent
from torchrl_vmbpo.data.buffers import real_row_count, sample_mixed
from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.models.log_ratio import log_ratio_of, make_log_ratio_network
from torchrl_vmbpo.models.networks import (
    action_box_log_det,
    make_q_value,
    make_state_value,
    make_tanh_gaussian_actor,
)
from torchrl_vmbpo.objectives.vmbpo import VMBPOLoss
from torchrl_vmbpo.training.agent import Capabilities, borrow
from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
from torchrl_vmbpo.training.divergence import CriticScale
from torchrl_vmbpo.training.model_fit import make_dynamics, make_model_optimizer
from torchrl_vmbpo.training.optim import optimize
from torchrl_vmbpo.training.validation import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
)


@dataclass(frozen=True)
class VMBPOSettings(ExtraSettings):
    """VMBPO's own settings (the ``vmbpo`` preset), read from ``TrainConfig.extra`` (``--set extra.eta=2``);
    how the defaults were chosen: benchmarks/tuning/vmbpo-pendulum (README, "VMBPO defaults"). q_d is
    fitted to eq. 19's twisted dynamics (``weight_mix=0``): the twist is what makes the E-step's q_d
    VMBPO's and not MBPO's, so the default keeps it on. Three stabilisers, the same on every env,
    answer the three ways the paper's E-step lets Q run away (README, "VMBPO presets"): an entropy
    anchor on q_c (``entropy_constraint``), the action-value bootstrap (``bootstrap``), q_c acting
    (``acting_policy``); with them the preset puts 5% real rows (nu = 0 on them) in each E-step batch
    (presets.py), and a ceiling on the Q target's bootstrap at the largest value the real rewards allow
    (``value_ceiling``: with the twist on, an over-valued region otherwise feeds itself). With the
    action-value bootstrap the Q target does not read V, so eq. 19's V'(x') is taken by Monte Carlo at
    each model fit and no V network is trained (``value_estimate``). ``vmbpo-twist-off``
    (:class:`VMBPOTwistOffSettings`) is this with q_d by plain MLE; ``vmbpo-paper``
    (:class:`VMBPOPaperSettings`) is the paper's experimental choices as far as its text fixes them."""

    algorithm: ClassVar[str] = "VMBPO"

    eta: PositiveFloat = 30.0
    """Temperature of p(O=1|x,a) = exp(eta r): nats per reward unit. With pi uniform the E-step is SAC with
    alpha = 1/eta. 30: a step's reward differences must outweigh what the E-step pays in nats (KL(q_c || pi)
    and nu, about 0.5 each a step) on every task's reward scale; at 3, Reacher-v5's 0.1-0.2 a step between
    reaching and staying still did not, and q_c stayed still (benchmarks/tuning/vmbpo-eta)."""
    m_step_mode: Literal["copy", "weighted_map"] = "weighted_map"
    """"copy" (pi <- q_c, the paper's experiments) or "weighted_map" (eq. 27 with kl_coef)."""
    m_step_period: PositiveInt = 1000
    """E-step updates per M-step period. "copy": pi <- q_c once every this many updates (pi is unchanged
    in between). "weighted_map": pi takes one gradient step on eq. 27 at EVERY update; this is the period
    of the trust-region centre's snapshot pi_old <- pi (so pi moves up to this many steps away from one
    pi_old before the next)."""
    kl_coef: NonNegativeFloat = 0.1
    """lambda of eq. 27 (weighted_map only)."""
    m_step_row_stride: PositiveInt = 2
    """weighted_map: eq. 27's step fits pi on every this-many-th row of the E-step batch (the batch size must
    be a multiple). 2 (default): pi's gradient and pi_old's pass, 3 of the update's 21 network passes at 1,
    cost half, so an update costs 1.22x MBPO's in FLOPs instead of 1.31x (issue 22's bar: 1.3x); eq. 27 is
    a regularised fit of pi to q_c's samples, whose gradient is then averaged over 128 states a step
    instead of 256. 1: every row."""
    kl_coef_std: NonNegativeFloat | None = None
    """None (default): one KL to pi_old (eq. 27 as written); a number: MStepLoss's decoupled trust region
    (MPO's), this lambda on the spread. The decoupled region (100, the default before 2026-12-05) held pi
    near its initial spread all run, so the E-step paid KL(q_c || pi) of 10-15 nats a step on Reacher7DoF;
    eq. 27's one KL ended higher on both reachers and level on Pendulum and InvertedPendulum
    (benchmarks/tuning/vmbpo-m-step-spread)."""
    acting_policy: Literal["pi", "q_c"] = "q_c"
    """Which policy acts in the real env: "pi" (the paper: samples of D come from pi) or "q_c" (default:
    the data, and so q_d, follow the policy the critic evaluates, so the E-step is on-policy; with pi
    acting, pi lags q_c and Q is evaluated off D's state distribution; benchmarks/tuning/vmbpo-invpendulum)."""
    weight_mix: Fraction = 0.0
    """Mix of the eq.-19 weights with uniform ones: 0 = eq. 19's twist in full (default), 1 = plain MLE
    (MBPO's model loss: the ``vmbpo-twist-off`` ablation)."""
    weight_normaliser: Literal["critic", "model"] = "critic"
    """Normaliser of the eq.-19 weight: "critic" (default: Q' - eta r, eq. 19 verbatim) or "model" (a
    Monte Carlo log E[exp(gamma V')] under the model; the default before 2026-12-06). On deterministic
    tasks the model's estimate makes a row's log-weight about -(spread of gamma V' over the model's
    samples)^2 / 2, so the twisted fit moves capacity away from the rows the model fits worst, fit
    after fit (HalfCheetah-v5: holdout MSE 17 against MBPO's 0.6; benchmarks/tuning/vmbpo-weight-normaliser)."""
    weight_min_ess: Annotated[float, Range(0, 1, low_open=True)] | None = 0.5
    """Temper the eq.-19 weights to keep this effective sample size (fraction of a batch); None: no tempering."""
    max_weight: Annotated[float, Range(1, low_open=True)] | None = 10.0
    """Clip of the self-normalised weights (mean 1); None: no clip."""
    weighted_fit_after: NonNegativeInt = 1000
    """Updates before the twisted fit starts: earlier fits are plain MLE (V', Q' are untrained)."""
    uniform_prior_weight: Fraction = 0.0
    """beta: the E-step regulariser (1 - beta) KL(q_c || pi) + beta KL(q_c || uniform); 0 is the paper's,
    1 is SAC's entropy with alpha = 1/eta (functional_vmbpo.prior_log_prob explains why it matters)."""
    entropy_constraint: bool = True
    """Also keep H(q_c) >= the env's target entropy (TrainConfig.target_entropy; None: -action dim)
    with a learned multiplier alpha_H (SAC's temperature, starting at eta x alpha_init, learning at
    critic_lr) on top of KL(q_c || pi). On (default): an entropy anchor, because EM's fixed point is
    deterministic (KL(q_c || pi) -> 0 as pi follows q_c, and the E-step turns into greedy evaluation;
    the tabular oracle shows it). Off: the paper's E-step (benchmarks/tuning/vmbpo-hopper)."""
    entropy_units: Literal["unit_box", "raw"] = "unit_box"
    """Which entropy the constraint holds at the target: "unit_box" (default), that of the action rescaled
    to [-1, 1]^d, SAC's convention, in which the target -dim A was set; "raw", that of the env's action
    (TorchRL's TanhNormal log-density; runs before 2026-12-05). They differ by sum log((high - low)/2):
    0 on Reacher-v5 and the locomotion tasks, 0.69 nats on Pendulum, 1.10 on InvertedPendulum, 21.0 on
    Reacher7DoF, where alpha_H x 21 nats was a constant reward the critic learnt, then unlearnt as
    alpha_H decayed (models.networks.action_box_log_det)."""
    entropy_weight_min: PositiveFloat | None = 1e-4
    """Floor of alpha_H in SAC's units (the critic's is eta x this; VMBPOCriticLoss.entropy_weight_min):
    while H(q_c) stays above the target the dual lowers log alpha_H by about critic_lr every update,
    without end (alpha_H 1e-19 after 180k updates on Reacher-v5), so a constraint that binds later
    would wait ~140k updates for it. At 1e-4 the bonus is at most ~1e-4 x H reward units a step and
    alpha_H returns to 1 in ~30k updates. None: no floor."""
    critic_output_scale: Literal["eta", "one"] = "eta"
    """"eta": Q and V networks output eta x their MLP (models.networks.ScaledOutput), so their weights
    learn at SAC's scale whatever eta; "one": plain MLPs (values eta times larger to learn)."""
    num_qvalue_nets: PositiveInt = 2
    """Twin Q with min (a stabiliser the paper does not use; 1 gives eqs. 22-24 verbatim)."""
    bootstrap: Literal["value", "action_value"] = "action_value"
    """What the Q target bootstraps from at x': "value" (eq. 23: the target V'(x'), regressed only at
    E's start states but read at model next states) or "action_value" (default; SAC-v2's form:
    min_k Q'_k(x', a') - log q_c + prior at a fresh a' ~ q_c(.|x'), so the target is read where it was
    evaluated; VMBPOCriticLoss)."""
    value_estimate: Literal["monte_carlo", "network"] = "monte_carlo"
    """Where eq. 19's V'(x') comes from. "network": the paper's V, regressed on eq. 24 at every update, and
    its target copy V'. "monte_carlo" (default; needs ``bootstrap="action_value"``): eq. 24's expectation
    itself, the mean over ``value_samples`` draws a ~ q_c(.|x') of min_k Q'_k(x', a) - log q_c + prior,
    evaluated where eq. 19 reads it (VMBPOCriticLoss.monte_carlo_value). With the action-value bootstrap
    the Q target does not read V, so V's one reader is eq. 19's weights, computed once per model fit:
    training V every update (its forward and backward, 0.105 of the update's 0.845 GFLOP at Hopper sizes)
    only amortised an expectation that a fit can take directly, without V's regression error or lag."""
    value_samples: PositiveInt = 8
    """Draws a ~ q_c per state of the Monte Carlo V'(x') (``value_estimate="monte_carlo"``)."""
    value_ceiling: bool = True
    """Clip the Q target's bootstrap at the largest soft value the rewards allow, (eta r_max + nu bound +
    entropy bonus) / (1 - gamma) with r_max the largest real reward in the critic's batches (its real
    rows: real_ratio > 0; VMBPOCriticLoss._value_ceiling): a projection that keeps eq. 23's fixed point.
    On (default): without it, Pendulum's Q / eta rose to +62 and +112 reward units (seeds 0, 2) with every
    reward <= 0, and seed 2's last evaluation fell to -431 (benchmarks/tuning/vmbpo-value-ceiling)."""
    log_ratio_bound: PositiveFloat = 0.5
    """|nu| <= bound (scaled tanh) so exp(nu) in eq. 21 cannot overflow. A truncation: eq. 21's optimum
    becomes clip(log q_d/p, +-bound), the KL estimate a lower bound, and the Q target's -nu at most
    bound nats a step; ratio_fit_nu_at_bound_fraction (after each ratio fit) and nu_at_bound_fraction
    (the critic's, each update) log
    how often nu sits at the bound."""
    log_ratio_at: Literal["imagination", "update"] = "imagination"
    """When a model row's nu(x, a, x') in the Q target (eqs. 22-23) is evaluated. "imagination" (default):
    once, as the row enters E, by the nu fitted (eq. 21) to the q_d that imagined it, so every row's -nu
    estimates its own generator's log ratio (-KL(q_d || p) in expectation) through all the refits it stays
    in E for; "update": at every update, by the latest nu, which estimates the latest q_d's ratio also at
    the x' earlier q_d drew (runs before 2026-12-06). Also one network pass fewer per update."""
    log_ratio_steps: NonNegativeInt = 250
    """Gradient steps of eq. 21 after each model fit."""
    log_ratio_lr: PositiveFloat = 3e-4
    """Adam learning rate of nu."""

    def check(self) -> None:
        super().check()
        if self.value_estimate == "monte_carlo" and self.bootstrap != "action_value":
            raise ConfigError(
                "extra.value_estimate='monte_carlo' needs extra.bootstrap='action_value' (eq. 23's target "
                f"reads V'), got extra.bootstrap={self.bootstrap!r}; set extra.value_estimate=network"
            )


@dataclass(frozen=True)
class VMBPOPaperSettings(VMBPOSettings):
    """The ``vmbpo-paper`` preset: VMBPO with every choice the paper's text fixes set as it says.

    Fixed by the text, and set so here (each field below says where):

    - M-step: "we simply set pi = q_c* in its M-step" (Sec. 6): ``m_step_mode="copy"``;
    - one Q network (Sec. 5 lists eight networks: pi, q_d, q_c, nu, V, Q, V', Q'): ``num_qvalue_nets=1``;
    - the Q target bootstraps from the target state value V'(x') (eq. 23), V a network regressed on eq. 24:
      ``bootstrap="value"``, ``value_estimate="network"``;
    - the E-step's only regulariser is KL(q_c || pi) (eqs. 5, 24, 25): ``entropy_constraint=False``,
      ``uniform_prior_weight=0``;
    - q_d fitted to the twisted dynamics with weights exp(eta r + V'(x') - Q'(x, a)) (eq. 19):
      ``weight_mix=0``, ``weight_normaliser="critic"`` (Q' as eq. 19 writes it), no tempering
      (``weight_min_ess=None``) and no clip (``max_weight=None``);
    - D holds samples of the baseline policy pi (Sec. 5.1): ``acting_policy="pi"``;
    - eqs. 22-24 are fitted on model samples only: the preset's ``real_ratio=0`` (presets.py);
    - nu = log q_d / p, unbounded (eq. 20): bounded here only as far as ``exp(nu)`` in eq. 21 needs
      (``log_ratio_bound=10``, the ratio network's default), not VMBPO's 0.5;
    - eq. 23's target as written, with no ceiling on the bootstrap (``value_ceiling=False``).

    Left open by the text (its Appendix E, with the hyper-parameters, is not in our copy), chosen as
    the ``vmbpo`` preset's defaults so that the two presets differ only where the paper decides:
    eta, gamma, the learning rates, batch size and network sizes; how many E-step updates pass
    between two copies pi <- q_c (``m_step_period``); the plain-MLE warm-up before eq. 19 reads an
    untrained critic (``weighted_fit_after``); the steps and learning rate of the ratio fit and when
    a row's nu is evaluated (``log_ratio_at``); the
    critic's output scale (a reparameterisation, not another objective); the updates per env step and
    the model's fit and rollout schedule (MBPO's). One open choice differs from ``vmbpo``'s: LayerNorm in
    Q and V (the preset's ``critic_layer_norm=True``, presets.py), its only bound on the critic without
    the ceiling. Two approximations the implementation makes
    whatever the preset: eq. 19's sum is self-normalised over each batch (in exact arithmetic
    E_p[w] = 1, eq. 9, so this only rescales), and eq. 23's "sample x, then a ~ q_c, then x' ~ q_d"
    draws its rows from the model buffer E of branched rollouts, refilled after each model fit (rows
    from older q_c and q_d, each with its own q_d's nu: see :class:`VMBPOAgent`).
    """

    algorithm: ClassVar[str] = "VMBPO-paper"

    m_step_mode: Literal["copy", "weighted_map"] = "copy"
    """"copy": pi <- q_c every ``m_step_period`` updates, as the paper's experiments do (Sec. 6)."""
    num_qvalue_nets: PositiveInt = 1
    """One Q network, as the paper's eight networks (Sec. 5): eqs. 22-24 verbatim."""
    bootstrap: Literal["value", "action_value"] = "value"
    """"value": the Q target bootstraps from the target V'(x') (eq. 23)."""
    value_estimate: Literal["monte_carlo", "network"] = "network"
    """"network": V and its target copy V' (Sec. 5's networks), V regressed on eq. 24."""
    entropy_constraint: bool = False
    """Off: the paper's E-step regularises q_c by KL(q_c || pi) only (eq. 25)."""
    uniform_prior_weight: Fraction = 0.0
    """0: the prior of the E-step is pi itself (eqs. 24-25)."""
    weight_mix: Fraction = 0.0
    """0: q_d fitted to eq. 19's twisted dynamics, no uniform mixture."""
    weight_normaliser: Literal["critic", "model"] = "critic"
    """"critic": eq. 19's normaliser Q'(x, a) - eta r, as the paper writes it."""
    weight_min_ess: Annotated[float, Range(0, 1, low_open=True)] | None = None
    """None: the eq.-19 weights are not tempered (the paper does not temper them)."""
    max_weight: Annotated[float, Range(1, low_open=True)] | None = None
    """None: the self-normalised eq.-19 weights are not clipped (the paper does not clip them)."""
    acting_policy: Literal["pi", "q_c"] = "pi"
    """"pi": D holds samples of the baseline policy (Sec. 5.1)."""
    value_ceiling: bool = False
    """Off: the paper's Q target is not clipped (eq. 23)."""
    log_ratio_bound: PositiveFloat = 10.0
    """|nu| <= 10: the paper's nu is unbounded (eq. 20); this keeps exp(nu) of eq. 21 finite only.
    eq. 21's optimum becomes clip(log q_d/p, +-10) (see VMBPOSettings.log_ratio_bound)."""


@dataclass(frozen=True)
class VMBPOTwistOffSettings(VMBPOSettings):
    """The ``vmbpo-twist-off`` preset: ``vmbpo`` with q_d fitted by plain maximum likelihood
    (``weight_mix=1``, MBPO's model loss): the ablation of eq. 19's twist. Everything else is
    ``vmbpo``'s."""

    algorithm: ClassVar[str] = "VMBPO-twist-off"

    weight_mix: Fraction = 1.0
    """1: every eq.-19 weight is one, i.e. q_d by plain MLE (the twist off); the ablation's one change."""


class VMBPOAgent(EMAgent):
    """The eight networks of VMBPO and the five losses that train them (six by default: V and V' are
    built only with ``value_estimate="network"``; otherwise eq. 19 reads a Monte Carlo V'(x')).

    ``loss`` (:class:`~torchrl_vmbpo.objectives.VMBPOLoss`) owns every network; the agent's other
    attributes are references into it, not registered again: ``pi`` (baseline policy), ``q_c``
    (variational policy), ``q_d`` (dynamics ensemble), ``nu`` (log-ratio network), the objectives
    ``critic`` (holding ``V``, ``Q``, ``V_target``, ``Q_target``, also exposed as properties),
    ``actor_loss``, ``ratio_loss``, ``m_step``, ``model_loss``, ``plain_model_loss``. ``state_dict``
    saves each tensor once.

    Model rows from older models: eq. 23 draws x, then a ~ q_c, then x' ~ q_d with the CURRENT q_c and
    q_d, and nu is refitted (eq. 21) to the current q_d after every model fit. The model buffer E keeps
    ``model_retain_epochs`` epochs of imagined rows (MBPO's), so after a refit most of its rows were
    generated by earlier q_d and q_c. Each row therefore carries the nu of its own q_d, recorded as it
    enters E (:meth:`label_imagined`, ``log_ratio_at="imagination"``): its target ``eta r + gamma V'(x') -
    nu`` is eq. 23's under the model that drew x', and Q regresses on the mixture of the retained models'
    targets, as MBPO's Q does on their next states. Off-policy actions are harmless (Q is regressed per
    (x, a)). ``log_ratio_at="update"`` reads the latest nu at every row instead.

    Real rows (``real_ratio > 0``): :meth:`sample_batch` flags them and the critic gives them nu = 0.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        obs_dim: int,
        action_spec: Bounded,
        *,
        termination_fn: TerminationFn,
        reward_fn=None,
        settings: VMBPOSettings | None = None,
    ):
        super().__init__()
        s = self.settings = VMBPOSettings.from_extra(cfg.extra) if settings is None else settings
        act_dim = action_spec.shape[-1]
        pi = make_tanh_gaussian_actor(obs_dim, action_spec, hidden=cfg.hidden)
        q_c = make_tanh_gaussian_actor(obs_dim, action_spec, hidden=cfg.hidden)
        q_c.load_state_dict(pi.state_dict())  # start the EM from q_c = pi
        q_d = make_dynamics(cfg, obs_dim, act_dim)
        nu = make_log_ratio_network(obs_dim, act_dim, hidden=cfg.hidden, bound=s.log_ratio_bound)
        scale = s.eta if s.critic_output_scale == "eta" else 1.0
        # The one owner of every network (pi, q_c, q_d, nu, V, Q, V', Q', pi_old): the agent's
        # state_dict holds each tensor once, under "loss.".
        self.loss = VMBPOLoss(
            pi,
            q_c,
            make_q_value(obs_dim, act_dim, hidden=cfg.hidden, output_scale=scale, layer_norm=cfg.critic_layer_norm),
            make_state_value(obs_dim, hidden=cfg.hidden, output_scale=scale, layer_norm=cfg.critic_layer_norm)
            if s.value_estimate == "network"
            else None,
            q_d,
            nu,
            eta=s.eta,
            gamma=cfg.gamma,
            num_qvalue_nets=s.num_qvalue_nets,
            uniform_prior_weight=s.uniform_prior_weight,
            target_entropy=cfg.target_entropy_for(act_dim) if s.entropy_constraint else None,
            entropy_weight_init=s.eta * cfg.alpha_init,
            entropy_weight_min=None if s.entropy_weight_min is None else s.eta * s.entropy_weight_min,
            entropy_log_det=action_box_log_det(action_spec) if s.entropy_units == "unit_box" else 0.0,
            bootstrap=s.bootstrap,
            value_ceiling=s.value_ceiling,
            value_samples=s.value_samples,
            max_weight=s.max_weight,
            mix=s.weight_mix,
            min_ess=s.weight_min_ess,
            normaliser=s.weight_normaliser,
            m_step_mode=s.m_step_mode,
            kl_coef=s.kl_coef,
            kl_coef_std=s.kl_coef_std,
            m_step_period=s.m_step_period,
            weighted_fit_after=s.weighted_fit_after,
        )
        borrow(
            self,
            q_d=q_d,
            dynamics=q_d,
            nu=nu,
            ratio_loss=self.loss.log_ratio,
            model_loss=self.loss.dynamics,
            plain_model_loss=self.loss.mle_dynamics,
        )
        self.model_optimizer = make_model_optimizer(self.q_d, lr=cfg.model_lr, weight_decay=cfg.model_weight_decay)
        self.termination_fn, self.reward_fn = termination_fn, reward_fn
        self.capabilities = Capabilities(model_fit=True, imagination=True, real_ratio=cfg.real_ratio)
        self._setup_em(cfg, pi, q_c, acting_policy=s.acting_policy, m_step_row_stride=s.m_step_row_stride)
        self.ratio_optimizer = torch.optim.Adam(self.ratio_loss.parameters(), lr=s.log_ratio_lr, fused=True)
        self.ratio_batch_size = cfg.batch_size

    def dynamics_loss(self) -> LossModule:
        """Eq. 19 once the critic has trained ``weighted_fit_after`` updates; plain MLE before."""
        return self.loss.dynamics_objective(int(self.num_updates))

    def after_model_fit(self, real_buffer: ReplayBuffer) -> dict[str, float]:
        """Eq. 21: ν against the freshly fitted q_d, on real (x, a, x') from D."""
        out, ratio_loss = None, self.fit_step_loss(self.ratio_loss, compiled=self.compile_ratio_fit)
        for _ in range(self.settings.log_ratio_steps):
            out = ratio_loss(real_buffer.sample(self.ratio_batch_size))
            optimize(out, self.ratio_optimizer, max_grad_norm=self.max_grad_norm)
        metrics = {} if out is None else {"kl_qd_p_estimate": float(out["kl_estimate"])}
        if out is not None and "nu_at_bound_fraction" in out.keys():  # how much the bound truncates eq. 21
            metrics["ratio_fit_nu_at_bound_fraction"] = float(out["nu_at_bound_fraction"])
        with torch.no_grad():
            weights = self.model_loss(real_buffer.sample(self.ratio_batch_size))
        # With mix=1 (plain MLE) the loss never reads the critic, so log_weight_mean is absent.
        metrics.update(
            {
                k: float(weights[k])
                for k in ("weight_ess", "weight_max", "weight_beta", "log_weight_mean")
                if k in weights
            }
        )
        metrics["weighted_fit"] = float(self.dynamics_loss() is self.model_loss)
        return metrics

    @torch.no_grad()
    def label_imagined(self, rows: TensorDictBase) -> TensorDictBase:
        """Record nu(x, a, x') on imagined rows as they enter E (``log_ratio_at="imagination"``), by the nu
        just fitted (:meth:`after_model_fit`) to the q_d that imagined them, under ``("model", "log_ratio")``."""
        if self.settings.log_ratio_at == "imagination":
            nu = log_ratio_of(
                self.nu, rows.get(keys.OBSERVATION), rows.get(keys.ACTION), rows.get(keys.NEXT_OBSERVATION)
            )
            rows.set(keys.LOG_RATIO, nu.unsqueeze(-1))
        return rows

    def sample_batch(
        self, real_buffer: ReplayBuffer, model_buffer: ReplayBuffer | None, batch_size: int, real_ratio: float
    ) -> TensorDictBase:
        """``real_ratio`` of ``batch_size`` rows from D, the rest from E (as :meth:`Agent.sample_batch`), with
        ``("model", "is_real")`` marking the rows from D: the critic uses nu = 0 on them (eqs. 22-23 hold
        for x' ~ q_d; see :class:`~torchrl_vmbpo.objectives.VMBPOCriticLoss`), and the model rows' recorded
        nu (:meth:`label_imagined`) under ``("model", "log_ratio")``."""
        recorded = (keys.LOG_RATIO,) if self.settings.log_ratio_at == "imagination" else ()
        batch = sample_mixed(real_buffer, model_buffer, batch_size, real_ratio, model_keys=recorded)
        n_real = real_row_count(model_buffer, batch_size, real_ratio)  # the batch's first rows
        batch.set(keys.IS_REAL, torch.arange(batch_size, device=batch.get(keys.OBSERVATION).device) < n_real)
        return batch

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        if self.m_step.mode == "weighted_map":  # eqs. 22-25 and eq. 27 on one batch, one backward
            return self.em_update(batch)
        metrics = self.e_step_update(batch)  # eqs. 22-25 on model transitions from E (and real rows, flagged)
        metrics.update(self.m_step_update(batch))  # the copy M-step: pi <- q_c every period
        return metrics

    def critic_scale(self) -> CriticScale:
        """The critic's ``q_value`` is eta x reward units, and its target subtracts ``nu`` (``|nu| <=
        log_ratio_bound``, i.e. up to log_ratio_bound / eta reward units a step)."""
        s = self.settings
        return CriticScale("q_value", per_reward=s.eta, per_step_bound=s.log_ratio_bound / s.eta)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "ratio": self.ratio_optimizer}
