"""MPO for continuous actions as a TorchRL ``LossModule``.

Maximum a posteriori Policy Optimisation (Abdolmaleki et al. 2018a, arXiv:1806.06920) with the
decoupled Gaussian M-step of Abdolmaleki et al. 2018b (arXiv:1812.02256) and the optional MO-MPO
action penalty (Abdolmaleki et al. 2020, arXiv:2005.07513). The maths lives in
:mod:`torchrl_vmbpo.objectives.functional_mpo`; this module only wires networks, samples and keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn
from torchrl.objectives.common import LossModule
from torchrl.objectives.utils import distance_loss

from torchrl_vmbpo.objectives import functional_mpo as fm

_LOSS_FUNCTIONS = ("l2", "l1", "smooth_l1")


def _gaussian_parts(dist: D.Distribution) -> tuple[torch.Tensor, torch.Tensor, list[D.Transform]]:
    """The diagonal Gaussian under ``dist`` (``[B, D]`` loc and scale) and the bijections on top of it.

    Accepts TorchRL's ``TanhNormal`` (any ``TransformedDistribution`` over an ``Independent`` or
    plain ``Normal``) and plain Gaussians (then the transform list is empty).
    """
    transforms: list[D.Transform] = []
    base = dist
    if isinstance(base, D.TransformedDistribution):
        transforms = list(base.transforms)
        base = base.base_dist
    if isinstance(base, D.Independent):
        base = base.base_dist
    if not isinstance(base, D.Normal):
        raise TypeError(
            f"MPOLoss needs an actor whose distribution is a (transformed) diagonal Gaussian, such as "
            f"TanhNormal; got {type(dist).__name__} over {type(base).__name__}"
        )
    return base.loc, base.scale, transforms


def _squash(pre_tanh: torch.Tensor, transforms: list[D.Transform]) -> torch.Tensor:
    for transform in transforms:
        pre_tanh = transform(pre_tanh)
    return pre_tanh


class MPOLoss(LossModule):
    """MPO loss: expected-SARSA critic, sample-based E-step, decoupled-KL Gaussian M-step.

    Per batch of B states x (with their stored action a, reward r and next state x'):

    * **E-step** (non-parametric): N actions a_n ~ π_old(·|x) from the *target* policy, scored by
      the *target* critic; weights w = softmax_N(Q/τ). The temperature τ is the multiplier of
      KL(q‖π_old) ≤ ``epsilon`` and minimises the dual τ (ε + mean_x logsumexp_N(Q/τ) - log N).
    * **M-step** (parametric): weighted maximum likelihood of the a_n under two decoupled
      Gaussians, (online mean, target std) and (target mean, online std), each with its own
      trust region KL(π_old‖·) ≤ ``epsilon_mean`` / ``epsilon_std`` and its own multiplier
      (α_mean, α_std) learned by its dual. With ``per_dim_constraining`` each action dimension
      has its own multiplier and bound ``epsilon_* / D`` (the bound arguments are totals).
    * **Critic**: Q(x, a) regressed on y = r + γ (1 - terminated) mean_N Q'(x', a'_n),
      a'_n ~ π_old(·|x') (expected SARSA with the target critic Q').

    The policy is a tanh-squashed Gaussian (``make_tanh_gaussian_actor``). Everything in the
    M-step is computed on the pre-tanh Gaussian u: the tanh bijection is shared by all the
    distributions involved, so it leaves the KLs unchanged, and it shifts every log-density by
    the same parameter-free log-Jacobian, so the M-step gradients equal those of
    ``TanhNormal.log_prob`` without its ``atanh`` of saturated actions.

    Duals are ``softplus(log_dual) + 1e-8``; the unconstrained ``log_*`` parameters are projected
    onto ``[-18, inf)`` at the start of each forward (acme clips them after each step instead).

    Optimisers: each ``loss_*`` sends gradients only to its own parameters, so summing them into
    one optimiser is valid; MPO usually gives the duals a larger learning rate, hence
    :meth:`parameters_by_loss` for per-loss parameter groups:

    * ``loss_critic`` -> critic parameters (``qvalue_network_params``), lr ~1e-4…3e-4;
    * ``loss_policy`` -> actor parameters (``actor_network_params``), lr ~1e-4…3e-4;
    * ``loss_dual`` -> ``log_temperature``, ``log_alpha_mean``, ``log_alpha_std`` (and
      ``log_penalty_temperature``), lr ~1e-2.

    Target actor and critic parameters (``target_*_params``) are updated by TorchRL's
    ``SoftUpdate`` / ``HardUpdate`` (acme: a hard copy every 100 steps). They define π_old, so the
    trust regions bound the change since the last target update.

    Args:
        actor_network: tanh-Gaussian ``ProbabilisticActor`` (its distribution exposes the
            pre-tanh ``Normal``).
        qvalue_network: Q(x, a) module writing ``state_action_value``, or a list/tuple of such
            modules with identical parameter structure, each keeping its own initialisation
            (twin/ensemble critics: each is regressed on the same target, and both the
            critic target and the E-step use the minimum over critics, i.e. clipped double Q;
            a design choice beyond acme's single critic).

    Keyword Args:
        num_samples: N, actions sampled per state (default 20).
        gamma: discount γ in [0, 1] (default 0.99).
        epsilon: E-step bound ε on KL(q‖π_old) (default 0.1).
        epsilon_mean: M-step bound on the mean's KL, summed over dimensions (default 1e-2).
        epsilon_std: M-step bound on the std's KL, summed over dimensions (default 1e-6).
        per_dim_constraining: one multiplier and bound ``epsilon_*/D`` per action dimension
            (default ``True``, as acme).
        temperature_init: initial τ (default 10.0).
        alpha_mean_init: initial α_mean (default 10.0).
        alpha_std_init: initial α_std (default 1000.0).
        action_penalty: add the MO-MPO penalty on pre-tanh samples outside
            ``[-action_penalty_bound, action_penalty_bound]`` with its own temperature (default
            ``False``: the tanh already keeps actions in bounds; the penalty instead discourages
            a saturated tanh, where Q and log-prob gradients vanish).
        epsilon_penalty: KL bound of the penalty's E-step (default 1e-3).
        action_penalty_bound: pre-tanh bound of the penalty (default 3.0: tanh(3) ≈ 0.995).
        loss_function: critic distance, one of ``"l2"``, ``"l1"``, ``"smooth_l1"`` (default "l2").
        action_dim: D; inferred from the actor's action spec when omitted.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.objectives import SoftUpdate
        >>> from torchrl_vmbpo.models.networks import make_q_value, make_tanh_gaussian_actor
        >>> actor = make_tanh_gaussian_actor(3, Bounded(-1.0, 1.0, shape=(2,)), hidden=(16,))
        >>> loss = MPOLoss(actor, make_q_value(3, 2, hidden=(16,)), num_samples=8)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> td = TensorDict({
        ...     "observation": torch.randn(4, 3), "action": torch.rand(4, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(4, 3), "reward": torch.randn(4, 1),
        ...              "terminated": torch.zeros(4, 1, dtype=torch.bool),
        ...              "done": torch.zeros(4, 1, dtype=torch.bool)}}, [4])
        >>> out = loss(td)
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_critic', 'loss_dual', 'loss_policy']
        >>> groups = loss.parameters_by_loss()
        >>> sorted(groups), len(groups["loss_dual"])
        (['loss_critic', 'loss_dual', 'loss_policy'], 3)
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys (``loss.set_keys(...)``).

        Attributes:
            action: stored action (default ``"action"``).
            state_action_value: the critic's output (default ``"state_action_value"``).
            reward: reward, under ``"next"`` (default ``"reward"``).
            done: done flag, under ``"next"`` (default ``"done"``; read for in_keys only: a
                truncated transition still bootstraps).
            terminated: terminal flag, under ``"next"`` (default ``"terminated"``).
        """

        action: NestedKey = "action"
        state_action_value: NestedKey = "state_action_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    actor_network: TensorDictModule
    actor_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    qvalue_network: TensorDictModule
    qvalue_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: TensorDictModule,
        qvalue_network: TensorDictModule | Sequence[TensorDictModule],
        *,
        num_samples: int = 20,
        gamma: float = 0.99,
        epsilon: float = 0.1,
        epsilon_mean: float = 1e-2,
        epsilon_std: float = 1e-6,
        per_dim_constraining: bool = True,
        temperature_init: float = 10.0,
        alpha_mean_init: float = 10.0,
        alpha_std_init: float = 1000.0,
        action_penalty: bool = False,
        epsilon_penalty: float = 1e-3,
        action_penalty_bound: float = 3.0,
        loss_function: str = "l2",
        action_dim: int | None = None,
    ) -> None:
        self._in_keys = None
        super().__init__()
        if not isinstance(num_samples, int) or num_samples < 2:
            raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        for name, value in (
            ("epsilon", epsilon),
            ("epsilon_mean", epsilon_mean),
            ("epsilon_std", epsilon_std),
            ("epsilon_penalty", epsilon_penalty),
            ("action_penalty_bound", action_penalty_bound),
            ("temperature_init", temperature_init),
            ("alpha_mean_init", alpha_mean_init),
            ("alpha_std_init", alpha_std_init),
        ):
            if not value > 0.0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if loss_function not in _LOSS_FUNCTIONS:
            raise ValueError(f"loss_function must be one of {_LOSS_FUNCTIONS}, got {loss_function!r}")

        action_dim = self._infer_action_dim(actor_network, action_dim)
        self.num_samples = num_samples
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.per_dim_constraining = bool(per_dim_constraining)
        # The bound arguments are totals over the action; per-dimension constraints split them.
        num_constraints = action_dim if self.per_dim_constraining else 1
        self.epsilon_mean = float(epsilon_mean) / num_constraints
        self.epsilon_std = float(epsilon_std) / num_constraints
        self.action_penalty = bool(action_penalty)
        self.epsilon_penalty = float(epsilon_penalty)
        self.action_penalty_bound = float(action_penalty_bound)
        self.loss_function = loss_function

        self.convert_to_functional(actor_network, "actor_network", create_target_params=True)
        if isinstance(qvalue_network, Sequence):
            if len(qvalue_network) == 0:
                raise ValueError("qvalue_network must be a module or a non-empty sequence of modules")
            self.num_qvalue_nets = len(qvalue_network)
            # Stacked [K, ...] parameters, each critic keeping its own initialisation.
            self.convert_to_functional(
                list(qvalue_network), "qvalue_network", expand_dim=self.num_qvalue_nets, create_target_params=True
            )
        else:
            self.num_qvalue_nets = 1
            self.convert_to_functional(qvalue_network, "qvalue_network", create_target_params=True)

        tensors = [*self.actor_network_params.values(True, True), *self.qvalue_network_params.values(True, True)]
        device = tensors[0].device if tensors else torch.device("cpu")

        def dual(value: float, size: int) -> nn.Parameter:
            return nn.Parameter(torch.full((size,), fm.log_dual_from_value(value), device=device))

        self.log_temperature = dual(temperature_init, 1)
        self.log_alpha_mean = dual(alpha_mean_init, num_constraints)
        self.log_alpha_std = dual(alpha_std_init, num_constraints)
        self.log_penalty_temperature = dual(temperature_init, 1) if self.action_penalty else None

    @staticmethod
    def _infer_action_dim(actor_network: TensorDictModule, action_dim: int | None) -> int:
        if action_dim is not None:
            if not isinstance(action_dim, int) or action_dim < 1:
                raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
            return action_dim
        spec = getattr(actor_network, "spec", None)
        try:
            return int(spec["action"].shape[-1])
        except (TypeError, KeyError, AttributeError, IndexError):
            raise ValueError(
                "action_dim could not be inferred from actor_network.spec['action']; pass action_dim="
            ) from None

    # ----------------------------------------------------------------------------------- keys
    def _set_in_keys(self) -> None:
        keys = [
            self.tensor_keys.action,
            ("next", self.tensor_keys.reward),
            ("next", self.tensor_keys.done),
            ("next", self.tensor_keys.terminated),
            *self.actor_network.in_keys,
            *[("next", key) for key in self.actor_network.in_keys],
            *self.qvalue_network.in_keys,
        ]
        self._in_keys = list(dict.fromkeys(keys))

    @property
    def in_keys(self):
        if self._in_keys is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values):
        self._in_keys = values

    @property
    def out_keys(self):
        keys = ["loss_critic", "loss_policy", "loss_dual", *self._DIAGNOSTICS]
        if self.action_penalty:
            keys += ["penalty_temperature", "kl_penalty_nonparametric"]
        return keys

    _DIAGNOSTICS = (
        "kl_mean",
        "kl_std",
        "kl_nonparametric",
        "temperature",
        "alpha_mean",
        "alpha_std",
        "ess",
        "q_value",
        "target_value",
    )

    # ------------------------------------------------------------------------------- helpers
    def parameters_by_loss(self) -> dict[str, list[nn.Parameter]]:
        """The parameters each ``loss_*`` entry trains, for per-loss optimiser groups."""
        duals = [self.log_temperature, self.log_alpha_mean, self.log_alpha_std]
        if self.log_penalty_temperature is not None:
            duals.append(self.log_penalty_temperature)
        return {
            "loss_critic": list(self.qvalue_network_params.values(True, True)),
            "loss_policy": list(self.actor_network_params.values(True, True)),
            "loss_dual": duals,
        }

    @torch.no_grad()
    def _project_duals(self) -> None:
        # Projected gradient descent on the duals: keep the softplus in its non-flat region.
        for param in self.parameters_by_loss()["loss_dual"]:
            param.clamp_(min=fm.MIN_LOG_DUAL)

    def _gaussian(self, obs_td: TensorDictBase, params: TensorDictParams):
        # preserve_module_state=False: the default would turn target buffers into grad tensors.
        with params.to_module(self.actor_network, preserve_module_state=False):
            dist = self.actor_network.get_dist(obs_td.copy())
        return _gaussian_parts(dist)

    def _q_values(self, obs_td: TensorDictBase, action: torch.Tensor, params: TensorDictParams) -> torch.Tensor:
        """Q of every critic: ``[*S, B, D]`` actions -> ``[K, *S, B]``."""
        td = obs_td.expand(*action.shape[:-1]) if obs_td.shape != action.shape[:-1] else obs_td.copy()
        td.set(self.tensor_keys.action, action)
        per_critic = [params] if self.num_qvalue_nets == 1 else [params[k] for k in range(self.num_qvalue_nets)]
        values = []
        for critic_params in per_critic:
            with critic_params.to_module(self.qvalue_network, preserve_module_state=False):
                out = self.qvalue_network(td.copy())
            values.append(out.get(self.tensor_keys.state_action_value).squeeze(-1))
        return torch.stack(values)

    # ------------------------------------------------------------------------------- forward
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Compute ``loss_critic``, ``loss_policy``, ``loss_dual`` and detached diagnostics."""
        self._project_duals()
        td = tensordict.reshape(-1) if tensordict.ndim != 1 else tensordict
        keys = self.tensor_keys
        obs_keys = [k for k in self.qvalue_network.in_keys if k != keys.action]
        obs = td.select(*self.actor_network.in_keys, *obs_keys, strict=False)
        next_td = td.get("next")
        next_obs = next_td.select(*self.actor_network.in_keys, *obs_keys, strict=False)
        n = self.num_samples

        with torch.no_grad():
            # Sampling is explicit (base_dist.sample): LossModule.forward runs in deterministic
            # exploration mode, where actor(td) would return the mode N times.
            target_loc, target_scale, squash = self._gaussian(obs, self.target_actor_network_params)
            pre_tanh = D.Normal(target_loc, target_scale).sample((n,))  # [N, B, D]
            q_samples = self._q_values(obs, _squash(pre_tanh, squash), self.target_qvalue_network_params)
            q_samples = q_samples.min(0).values  # [N, B]

            next_loc, next_scale, next_squash = self._gaussian(next_obs, self.target_actor_network_params)
            next_action = _squash(D.Normal(next_loc, next_scale).sample((n,)), next_squash)  # [N, B, D]
            next_q = self._q_values(next_obs, next_action, self.target_qvalue_network_params).min(0).values
            target = fm.expected_sarsa_target(
                next_td.get(keys.reward).reshape(-1),
                next_td.get(keys.terminated).reshape(-1),
                next_q,
                self.gamma,
            )  # [B]

        # Critic: every critic regresses on the same target.
        q_pred = self._q_values(obs, td.get(keys.action), self.qvalue_network_params)  # [K, B]
        loss_critic = distance_loss(q_pred, target.expand_as(q_pred), self.loss_function).mean(-1).sum(0)

        # E-step.
        temperature = fm.dual_from_log(self.log_temperature)
        weights, loss_temperature = fm.weights_and_temperature_loss(q_samples, self.epsilon, temperature)
        out = {"kl_nonparametric": fm.nonparametric_kl(weights).mean()}
        out["ess"] = fm.weights_effective_sample_size(weights).mean()
        loss_dual = loss_temperature
        if self.action_penalty:
            penalty_temperature = fm.dual_from_log(self.log_penalty_temperature)
            cost = fm.action_penalty_cost(pre_tanh, self.action_penalty_bound)  # [N, B]
            penalty_weights, loss_penalty = fm.weights_and_temperature_loss(
                cost, self.epsilon_penalty, penalty_temperature
            )
            # MO-MPO: the two objectives' non-parametric policies are fitted jointly.
            weights = weights + penalty_weights
            loss_dual = loss_dual + loss_penalty
            out["penalty_temperature"] = penalty_temperature.detach().mean()
            out["kl_penalty_nonparametric"] = fm.nonparametric_kl(penalty_weights).mean()

        # M-step on the decoupled Gaussians (online mean, target std) and (target mean, online std).
        online_loc, online_scale, _ = self._gaussian(obs, self.actor_network_params)
        alpha_mean = fm.dual_from_log(self.log_alpha_mean)
        alpha_std = fm.dual_from_log(self.log_alpha_std)
        loss_policy, loss_alpha, kl_mean, kl_std = fm.decoupled_gaussian_mstep(
            pre_tanh,
            weights,
            target_loc,
            target_scale,
            online_loc,
            online_scale,
            alpha_mean,
            alpha_std,
            self.epsilon_mean,
            self.epsilon_std,
            self.per_dim_constraining,
        )
        loss_dual = loss_dual + loss_alpha

        out.update(
            kl_mean=kl_mean.detach().sum(-1).mean(),
            kl_std=kl_std.detach().sum(-1).mean(),
            temperature=temperature.detach().mean(),
            alpha_mean=alpha_mean.detach().mean(),
            alpha_std=alpha_std.detach().mean(),
            q_value=q_pred.detach().mean(),
            target_value=target.mean(),
        )
        return TensorDict(
            {"loss_critic": loss_critic, "loss_policy": loss_policy, "loss_dual": loss_dual, **out}, batch_size=[]
        )
