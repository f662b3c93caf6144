"""STEVE (Buckman et al. 2018): stochastic ensemble value expansion as a TorchRL value estimator.

:class:`STEVEEstimator` is a :class:`~torchrl.objectives.value.ValueEstimatorBase`: a critic loss
that asks its value estimator for ``value_estimate(tensordict)`` gets STEVE's target instead of the
TD(0) one. With TorchRL's ``SACLoss`` that is one call (:meth:`STEVEEstimator.from_sac_loss` builds
the estimator from the loss's own actor, target Q functions and temperature)::

    loss.make_value_estimator(STEVEEstimator.from_sac_loss(loss, dynamics=q_d, horizon=3, ...))

(``make_value_estimator``, not ``loss.value_estimator = ...``: ``nn.Module.__setattr__`` would
register a module under that name and bypass the property, leaving the default TD(0) in place.)

``SACLoss`` still computes its own soft next value and passes it in; STEVE ignores it, since its
candidates need each Q function separately (the disagreement between them is part of the
variance) and values at model states, not only at ``s_1``.

The maths is in :mod:`torchrl_vmbpo.objectives.functional_steve`; this module does the rollouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules.distributions.utils import rsample_and_log_prob
from torchrl.objectives.value import ValueEstimatorBase

from torchrl_vmbpo import keys
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.objectives.functional_steve import inverse_variance_blend, steve_candidates

# The signatures of torchrl_vmbpo.envs (objectives sit beside envs in the layering and do not import it).
TerminationFn = Callable[[torch.Tensor], torch.Tensor]
RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class STEVEEstimator(ValueEstimatorBase):
    """Inverse-variance-weighted blend of H-step model-based targets (STEVE, eqs. 3-5).

    For each transition ``(s_0, a_0, r_0, s_1)`` of the batch: ``a_1 ~ pi(s_1)`` once; then an
    ``H``-step rollout from ``(s_1, a_1)`` through EACH elite member ``n`` of the dynamics model
    (the member is kept for the whole rollout), with ``a_j ~ pi(s_j)``; every ``(s_(i+1), a_(i+1))``
    is scored by each of the ``L`` Q functions. The candidates ``T^i_{n,l}`` for horizons
    ``i = 0..H`` (:func:`steve_candidates`) are blended by inverse variance
    (:func:`inverse_variance_blend`). With ``H = 0`` this is the TD(0) target with the mean of the
    ``L`` Q functions; rewards of the rollout are the model's, or ``reward_fn``'s when given;
    a rollout stops contributing after a state ``termination_fn`` calls terminal.

    Soft (SAC-style) critics: with a probabilistic actor and a temperature ``alpha`` (or a live
    ``log_alpha``), every state's value and every model reward carries the entropy bonus
    ``-alpha log pi(a_j | s_j)``. A deterministic actor (a module writing the action, no
    ``get_dist``) gives the plain (DDPG/TD3-style) STEVE of the paper; ``alpha`` must then be 0.

    The target is computed without gradients (it is a regression target).

    Keyword Args:
        gamma: discount.
        horizon: ``H >= 0`` model steps.
        dynamics: the learned ensemble; its elites are the ``N`` rollout members.
        actor: the policy pi (sampled in RANDOM mode when probabilistic).
        qvalue_network: ``(observation, action) -> state_action_value`` module.
        qvalue_params: stacked parameters ``[L]`` of the ``L`` Q functions (e.g. SACLoss's
            ``target_qvalue_network_params``); ``None``: the module's own parameters (``L = 1``).
        termination_fn: ``next_obs -> bool [..., 1]`` for model states.
        reward_fn: optional known reward ``(obs, action, next_obs) -> [..., 1]``.
        alpha: constant entropy temperature (default 0).
        log_alpha: a live log-temperature tensor read at every call (overrides ``alpha``).
        sample_model: draw each member's next state from its Gaussian (True) or take its mean.
        eps: variance floor of the inverse-variance weights.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_vmbpo.envs.termination import never_done
        >>> from torchrl_vmbpo.models.networks import make_q_value, make_tanh_gaussian_actor
        >>> actor = make_tanh_gaussian_actor(3, Bounded(-2.0, 2.0, shape=(1,)), hidden=(16,))
        >>> est = STEVEEstimator(gamma=0.99, horizon=3, dynamics=DynamicsModel(3, 1, hidden=(16,)), actor=actor,
        ...                      qvalue_network=make_q_value(3, 1, hidden=(16,)), termination_fn=never_done, alpha=0.2)
        >>> no = torch.zeros(8, 1, dtype=torch.bool)
        >>> td = TensorDict({"observation": torch.randn(8, 3), "action": torch.rand(8, 1),
        ...     "next": {"observation": torch.randn(8, 3), "reward": torch.randn(8, 1), "done": no, "terminated": no}}, [8])
        >>> est.value_estimate(td).shape
        torch.Size([8, 1])
    """

    @dataclass
    class _AcceptedKeys(ValueEstimatorBase._AcceptedKeys):
        """Keys of ValueEstimatorBase, plus where the actor and Q functions read and write.

        Attributes:
            observation: the state key (default ``"observation"``).
            action: the action key (default ``"action"``).
            state_action_value: the Q module's output (default ``"state_action_value"``).
            horizon_weights: written by :meth:`forward`: the ``[*B, H+1]`` blend weights.
        """

        observation: str = keys.OBSERVATION
        action: str = keys.ACTION
        state_action_value: str = "state_action_value"
        horizon_weights: tuple = ("steve", "horizon_weights")

    default_keys = _AcceptedKeys

    def __init__(
        self,
        *,
        gamma: float,
        horizon: int,
        dynamics: DynamicsModel,
        actor: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        qvalue_params: TensorDictBase | None = None,
        termination_fn: TerminationFn,
        reward_fn: RewardFn | None = None,
        alpha: float = 0.0,
        log_alpha: torch.Tensor | None = None,
        sample_model: bool = True,
        eps: float = 1e-8,
    ):
        super().__init__(value_network=qvalue_network)
        if not isinstance(horizon, int) or horizon < 0:
            raise ValueError(f"horizon must be an integer >= 0, got {horizon!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if not isinstance(dynamics, DynamicsModel):
            raise TypeError(f"dynamics must be a DynamicsModel, got {type(dynamics).__name__}")
        if not callable(termination_fn):
            raise TypeError("termination_fn must be a callable next_obs -> bool tensor [..., 1]")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        soft = log_alpha is not None or alpha != 0.0
        if soft and not hasattr(actor, "get_dist"):
            raise ValueError("alpha / log_alpha (entropy bonus) needs a probabilistic actor with get_dist")
        if qvalue_params is not None and qvalue_params.batch_dims != 1:
            raise ValueError(
                f"qvalue_params must be stacked along ONE leading dim [L], got batch {qvalue_params.batch_size}"
            )
        self.register_buffer("gamma", torch.tensor(float(gamma)))
        self.horizon, self.sample_model, self.eps, self.alpha = horizon, sample_model, eps, float(alpha)
        self.termination_fn, self.reward_fn = termination_fn, reward_fn
        # References, not submodules (as TorchRL stores value_network): the loss or agent owns them,
        # so they are neither trained nor saved twice through the estimator.
        self.__dict__["dynamics"] = dynamics
        self.__dict__["actor"] = actor
        self.__dict__["qvalue_params"] = qvalue_params
        self.__dict__["log_alpha"] = log_alpha
        self.last_horizon_weights = torch.zeros(horizon + 1)  # diagnostics only: batch mean of the last blend

    @classmethod
    def from_sac_loss(cls, loss, **kwargs) -> STEVEEstimator:
        """STEVE over a TorchRL ``SACLoss``: its actor, its TARGET Q functions, its live temperature.

        ``kwargs`` are the remaining constructor arguments (``gamma``, ``horizon``, ``dynamics``,
        ``termination_fn``, ...). Install it with ``loss.make_value_estimator(estimator)``.
        """
        return cls(
            actor=loss.actor_network,
            qvalue_network=loss.qvalue_network,
            qvalue_params=loss.target_qvalue_network_params,
            log_alpha=loss.log_alpha,
            **kwargs,
        )

    # --- the pieces of one rollout ---
    def _temperature(self) -> torch.Tensor | float:
        return self.log_alpha.detach().exp() if self.log_alpha is not None else self.alpha

    def _act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``a ~ pi(s)`` and the entropy bonus ``-alpha log pi(a|s)``: ``[*R, D] -> [*R, A], [*R]``."""
        td = TensorDict({self.tensor_keys.observation: obs}, batch_size=obs.shape[:-1])
        if not hasattr(self.actor, "get_dist"):
            action = self.actor(td).get(self.tensor_keys.action)
            return action, torch.zeros(obs.shape[:-1], dtype=obs.dtype)
        with set_exploration_type(ExplorationType.RANDOM):
            action, log_prob = rsample_and_log_prob(self.actor.get_dist(td))
        return action, -self._temperature() * log_prob.reshape(obs.shape[:-1])

    def _model_step(self, obs: torch.Tensor, action: torch.Tensor, weights) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every elite on its own rows: ``[N, R, D], [N, R, A] -> [N, R, D], [N, R]``.
        ``weights``: the elites' ``GaussianEnsemble.member_weights``, gathered once per target."""
        dyn = self.dynamics
        inputs = dyn.input_normalizer(dyn.model_inputs(obs, action))
        mean, logvar = dyn.ensemble.forward_members_first(inputs, weights=weights)
        if self.sample_model:
            mean = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        next_obs = obs + mean[..., :-1]  # the model predicts [x' - x, r]
        reward = mean[..., -1] if self.reward_fn is None else self.reward_fn(obs, action, next_obs)[..., 0]
        return next_obs, reward

    def _q_values(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Every Q function at every row: ``[R, D], [R, A] -> [L, R]``."""
        td = TensorDict({self.tensor_keys.observation: obs, self.tensor_keys.action: action}, batch_size=obs.shape[:1])
        net, key = self.value_network, self.tensor_keys.state_action_value
        if self.qvalue_params is None:
            return net(td).get(key).reshape(1, -1)
        values = []
        for params in self.qvalue_params.unbind(0):
            with params.to_module(net, preserve_module_state=False):
                values.append(net(td.copy()).get(key).reshape(-1))
        return torch.stack(values)

    @torch.no_grad()
    def candidates(self, tensordict: TensorDictBase) -> torch.Tensor:
        """All candidate targets ``[H+1, N, L, *B]`` of a batch of transitions."""
        batch = tensordict.batch_size
        s1 = tensordict.get(("next", self.tensor_keys.observation))
        s1 = s1.reshape(-1, s1.shape[-1])
        r0 = tensordict.get(("next", self.tensor_keys.reward)).reshape(-1)
        terminated = tensordict.get(("next", self.tensor_keys.terminated)).reshape(-1)
        b, n, horizon = s1.shape[0], self.dynamics.num_elites, self.horizon

        a1, h1 = self._act(s1)  # one action at the real s_1, shared by every member
        alive = (~terminated).to(s1.dtype).expand(n, b)
        obs, action, bonus = s1.expand(n, b, -1), a1.expand(n, b, -1), h1.expand(n, b)
        rewards, continuation, model_obs, model_act, model_bonus = [], [alive], [], [], []
        weights = self.dynamics.ensemble.member_weights(self.dynamics.elites)
        for _ in range(horizon):
            next_obs, reward = self._model_step(obs, action, weights)
            rewards.append(reward + bonus)
            alive = alive * (~self.termination_fn(next_obs)[..., 0]).to(alive.dtype)
            continuation.append(alive)
            obs = next_obs
            action, bonus = self._act(obs)
            model_obs.append(obs)
            model_act.append(action)
            model_bonus.append(bonus)
        # Q at s_1 once (shared), then at every model state, in one pass per Q function.
        q_obs = torch.cat([s1, *[o.reshape(n * b, -1) for o in model_obs]])
        q_act = torch.cat([a1, *[a.reshape(n * b, -1) for a in model_act]])
        q = self._q_values(q_obs, q_act)  # [L, b + H*n*b]
        q0 = (q[:, :b] + h1).unsqueeze(0).expand(n, -1, -1)  # [N, L, b]
        qh = q[:, b:].reshape(q.shape[0], horizon, n, b).permute(1, 2, 0, 3)  # [H, N, L, b]
        if horizon:
            qh = qh + torch.stack(model_bonus).unsqueeze(2)
        bootstrap = torch.cat([q0.unsqueeze(0), qh])  # [H+1, N, L, b]
        reward_steps = torch.stack(rewards) if rewards else torch.zeros(0, n, b, dtype=s1.dtype)
        out = steve_candidates(r0, reward_steps, torch.stack(continuation), bootstrap, self.gamma)
        return out.reshape(*out.shape[:3], *batch)

    @torch.no_grad()
    def value_estimate(
        self, tensordict: TensorDictBase, target_params: TensorDictBase | None = None, next_value=None, **kwargs
    ) -> torch.Tensor:
        """STEVE's target ``[*B, 1]`` (``target_params`` and ``next_value`` are not used)."""
        target, weights = self._blend(tensordict)
        return target.unsqueeze(-1)

    def _blend(self, tensordict):
        cands = self.candidates(tensordict)
        target, weights = inverse_variance_blend(cands.flatten(1, 2), eps=self.eps)
        self.last_horizon_weights = weights.reshape(weights.shape[0], -1).mean(-1)
        return target, weights

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase, *, params=None, target_params=None) -> TensorDictBase:
        """Writes ``value_target`` ``[*B, 1]``, ``advantage`` (target minus the mean Q at ``(s_0, a_0)``)
        and the ``[*B, H+1]`` horizon weights."""
        target, weights = self._blend(tensordict)
        obs, action = tensordict.get(self.tensor_keys.observation), tensordict.get(self.tensor_keys.action)
        value = self._q_values(obs.reshape(-1, obs.shape[-1]), action.reshape(-1, action.shape[-1])).mean(0)
        target = target.unsqueeze(-1)
        tensordict.set(self.tensor_keys.value_target, target)
        tensordict.set(self.tensor_keys.advantage, target - value.reshape(target.shape))
        tensordict.set(self.tensor_keys.horizon_weights, weights.movedim(0, -1))
        return tensordict
