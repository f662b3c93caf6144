"""VMBPO's E-step critic: Q and V of the variational policy on model samples (eqs. 22-24)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.objectives.utils import ValueEstimators, distance_loss

from torchrl_vmbpo import keys
from torchrl_vmbpo.models.log_ratio import log_ratio_bound, log_ratio_of
from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.objectives.common import KeyedLoss, TransitionKeys, next_key

_LOSS_FUNCTIONS = ("l2", "l1", "smooth_l1")


class SoftValueSample(NamedTuple):
    """Eq. 24's target at one ``a~ ~ q_c(.|x)`` per row, each ``[*B]`` and detached: ``target``
    (``min_k Q_k(x, a~) - log q_c(a~|x) + prior(a~|x)``, online Q), ``policy_log_ratio`` (``log q_c -
    mixed``) and ``log_q_c``. The actor's reparameterised sample of eq. 25 is such a draw, with the same
    online Q and prior: :meth:`VMBPOActorLoss.forward_with_value_sample` hands it to the critic, which
    then skips its own draw (4 of an E-step update's ~15 network passes)."""

    target: torch.Tensor
    policy_log_ratio: torch.Tensor
    log_q_c: torch.Tensor


BOOTSTRAPS = ("value", "action_value")
_V_KEYS = ("loss_value", "value")  # absent without a value network


class VMBPOCriticLoss(KeyedLoss):
    r"""Critic of VMBPO's E-step: regress Q and V of ``q_c`` under the variational dynamics ``q_d``.

    On model transitions ``(x, a, r, x')`` (``a ~ q_c``, ``x' ~ q_d``, ``r`` from the model or a known
    reward function), with discounting in the spec's form (ii):

    - eqs. 22-23: ``y_Q = eta r + gamma (1 - terminated) V'(x') - nu(x, a, x')``,
      ``loss_qvalue = sum_k mean (Q_k(x, a) - y_Q)^2``;
    - eq. 24: ``y_V = min_k Q_k(x, a~) - log q_c(a~|x) + log pi(a~|x)`` with ``a~ ~ q_c(.|x)`` drawn
      afresh (RANDOM mode, whatever the exploration mode), ``loss_value = mean (V(x) - y_V)^2``.

    ``V'`` is the target copy of V; ``nu`` estimates ``log q_d / p`` (eq. 21) and is not
    discounted. Real rows: eqs. 22-23 hold for model rows (``x' ~ q_d``), where ``E_{q_d}[-nu]`` is
    ``-KL(q_d || p)``; a real row (``x' ~ p``) fed the same target would receive ``E_p[-nu] =
    +KL(p || q_d)``, another quantity with the other sign. Rows flagged by the optional boolean entry
    ``is_real`` (default ``("model", "is_real")``, ``[*B]`` or ``[*B, 1]``; absent: every row is a
    model row) therefore get ``nu = 0``: ``y_Q = eta r + gamma V'(x')``, eq. 9's target when p is
    deterministic. ``nu`` is read from the optional entry ``log_ratio`` (default ``("model",
    "log_ratio")``, ``[*B]`` or ``[*B, 1]``) when the batch holds it: the value recorded as the row was
    imagined, by the nu fitted to the q_d that drew its x' (``VMBPOAgent.label_imagined``); absent, the
    critic evaluates ``log_ratio_network`` at the row. ``terminated`` (not ``done``) stops
    bootstrapping, so a time-limit truncation keeps ``V'(x')``. ``y_V`` uses the online Q, as eq. 24
    writes it. ``log q_c - log pi`` is scored in pre-tanh space on the same sample when both are
    ``TanhNormal`` over one box (exact, finite where tanh saturates; see
    :func:`~torchrl_vmbpo.objectives.functional_vmbpo.log_prob_at`); any other
    ``pi`` (e.g. uniform, a constant log-density) is scored with its own ``log_prob``.

    Twin Q: ``num_qvalue_nets`` independent Q copies (as TorchRL's ``SACLoss``: the module passed in
    is a template, its parameters are re-initialised into ``num_qvalue_nets`` copies owned here,
    ``qvalue_network_params``). Each copy regresses on the full batch; the minimum over copies
    enters ``y_V``, the actor (eq. 25) and the dynamics weights (eq. 19). The minimum is a
    stabiliser the paper does not use (``num_qvalue_nets=1`` gives eqs. 22-24 verbatim).

    Ownership: this loss is the single owner of Q, V and their targets ``Q'``, ``V'``
    (``target_qvalue_network_params``, ``target_value_network_params``), so one TorchRL
    ``SoftUpdate(critic_loss, tau=...)`` updates each target exactly once per step. The
    dynamics loss and the actor loss read values through :meth:`action_value` and
    :meth:`state_value` (parameters detached). ``q_c``, ``pi`` and ``nu`` are borrowed: held without
    registration (not in ``parameters()``, ``state_dict()`` nor moved by ``.to``), evaluated
    without gradient.

    Args:
        qvalue_network: ``Q(x, a)``, a TensorDictModule with 2 in_keys (x, a, filled by position).
        value_network: ``V(x)``, a TensorDictModule with 1 in_key, or ``None`` (only with
            ``bootstrap="action_value"``, where ``y_Q`` does not read V): no V, V' networks and no
            ``loss_value``; :meth:`state_value` is then eq. 24's expectation estimated by Monte Carlo,
            ``mean_j [min_k Q_k(x, a_j) - log q_c(a_j|x) + prior(a_j|x)]`` over ``value_samples`` fresh
            ``a_j ~ q_c(.|x)`` (:meth:`monte_carlo_value`): the quantity V is regressed to, read
            where it is needed (eq. 19's weights, once per model fit) instead of trained every update.
        variational_policy: ``q_c``, with ``in_keys`` (1: x) and ``get_dist(td)`` (owned by the actor loss).
        baseline_policy: ``pi``, same interface (owned by the M-step loss).
        log_ratio_network: ``nu(x'|x, a)`` with 3 in_keys (owned by :class:`LogRatioLoss`); ``None``
            means ``nu = 0``, i.e. ``q_d`` treated as the true dynamics (a recorded ``log_ratio`` is ignored).

    Keyword Args:
        eta: temperature ``eta > 0`` of ``p(O=1|x,a) = exp(eta r)``.
        gamma: discount in ``[0, 1]``.
        num_qvalue_nets: number of Q copies (>= 1; default 2).
        uniform_prior_weight: ``beta`` in ``[0, 1]`` (default 0, the paper): ``log pi`` in eq. 24 (and in
            the actor loss, which reads it from here) becomes ``(1 - beta) log pi + beta log U`` with
            ``U`` uniform on the action box (:func:`~torchrl_vmbpo.objectives.functional_vmbpo.prior_log_prob`).
        loss_function: ``"l2"`` (squared error, the paper's; default), ``"l1"`` or ``"smooth_l1"``.
        target_entropy: ``None`` (default, the paper): no entropy term. A number: the E-step also keeps
            ``H(q_c) >= target_entropy`` through a learned multiplier ``alpha_H`` (SAC's temperature,
            added to the paper's ``KL(q_c || pi)``): ``log pi`` in eq. 24 and in the actor loss
            becomes ``prior - alpha_H log q_c`` (:func:`~torchrl_vmbpo.objectives.functional_vmbpo.entropy_constrained_prior`),
            and the loss returns ``loss_entropy_weight`` (SAC's temperature loss on ``log alpha_H``,
            with the fresh ``a~`` of eq. 24). ``log_entropy_weight`` is a parameter of this loss.
        entropy_weight_init: initial ``alpha_H`` (in the critic's units: ``eta`` x SAC's alpha).
        entropy_log_det: ``log |det|`` of the affine map from ``[-1, 1]^d`` onto the action box,
            ``sum_i log((high_i - low_i) / 2)`` (default 0: the entropy of the raw action). The constraint,
            its multiplier's loss and the ceiling's entropy bonus then read the entropy of the action
            rescaled to ``[-1, 1]^d``, ``H(q_c) - entropy_log_det``: SAC's convention, in which the
            target ``-dim A`` was set. TorchRL's ``TanhNormal`` gives the raw action's log-density, so a
            wide box adds a constant to every entropy (21 nats on Reacher7DoF's +-20 box), which the
            multiplier then prices into Q as a constant reward until it decays. ``log pi`` and the
            KL terms are unaffected (the constant cancels).
        entropy_weight_min: floor of ``alpha_H`` (TorchRL ``SACLoss``'s ``min_alpha``; default ``None``, no
            floor). While ``H(q_c)`` stays above the target the dual's descent lowers ``log alpha_H``
            by about the learning rate every update, without end (1e-19 after 180k updates on
            Reacher-v5), and a constraint that binds later then waits tens of thousands of updates
            for ``alpha_H`` to return; :meth:`project_entropy_weight_` clamps it after each step.
        bootstrap: what ``y_Q`` bootstraps from at ``x'``. ``"value"`` (default, eq. 23): the target
            state-value network ``V'(x')``. ``"action_value"`` (SAC-v2's form, a stabiliser the paper
            does not use): eq. 24's soft value evaluated with the target Q copies at ``x'``,
            ``min_k Q'_k(x', a') - log q_c(a'|x') + prior(a'|x')`` with one fresh ``a' ~ q_c(.|x')``.
            V is then trained as before (eq. 19's weights read it) but no longer enters ``y_Q``.
        value_ceiling: clip the bootstrapped value at ``(eta r_high + b + c) / (1 - gamma)``, the largest
            soft value the per-step terms allow (:meth:`_value_ceiling`; default False, the paper).
            Needs a bounded ratio network (or none) and real rows in the batches (flagged ``is_real``;
            an unflagged batch counts as real): no ceiling before a real reward was seen. Adds
            ``value_ceiling`` and ``value_clip_fraction`` (the rows whose bootstrap was clipped) to the
            output; ``reward_high`` (the running max) is a buffer, saved with the loss.
        value_samples: draws ``a_j ~ q_c`` per state of :meth:`monte_carlo_value` (default 8; used
            only without a value network).

    Keys (``set_keys``, ``SACLoss``'s contract: next-step entries are named relative to ``"next"``):
    ``observation`` (read at x and, under ``"next"``, at x'), ``action``, ``reward`` and
    ``terminated`` (read under ``"next"``); ``in_keys`` lists the entries read. ``is_real`` (see
    above) is read when the batch has it.

    Value estimator: the Q target is TD(0) (eq. 23, bootstrapping V' or, with ``bootstrap="action_value"``,
    the target Q copies); ``make_value_estimator(ValueEstimators.TD0, gamma=...)`` is accepted (it sets
    ``gamma``), any other estimator is refused with the list of supported ones.

    Returns ``loss_qvalue`` (steps Q's parameters, ``qvalue_network_params``), ``loss_value``
    (steps V's, ``value_network_params``) and detached diagnostics: ``q_value``, ``q_target``,
    ``value``, ``value_target``, ``td_error`` (mean ``|Q - y_Q|``), ``log_ratio`` (mean nu, real
    rows counting 0), ``policy_log_ratio`` (mean ``log q_c/pi`` at ``a~``: a KL(q_c || pi) estimate)
    and, with a bounded ratio network, ``nu_at_bound_fraction`` (the model rows' nu within 1% of
    ``+-bound``: where the target's ``-nu`` is the truncation ``clip(log q_d/p, +-bound)`` of eq. 21).

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor, make_q_value, make_state_value
        >>> from torchrl_vmbpo.models.log_ratio import make_log_ratio_network
        >>> spec = Bounded(-1.0, 1.0, shape=(1,))
        >>> q_c, pi = make_tanh_gaussian_actor(3, spec, hidden=(8,)), make_tanh_gaussian_actor(3, spec, hidden=(8,))
        >>> loss = VMBPOCriticLoss(make_q_value(3, 1, hidden=(8,)), make_state_value(3, hidden=(8,)), q_c, pi,
        ...                        make_log_ratio_network(3, 1, hidden=(8,)), eta=1.0, gamma=0.99)
        >>> td = TensorDict({"observation": torch.randn(6, 3), "action": torch.rand(6, 1) * 2 - 1,
        ...     ("next", "observation"): torch.randn(6, 3), ("next", "reward"): torch.randn(6, 1),
        ...     ("next", "terminated"): torch.zeros(6, 1, dtype=torch.bool)}, [6])
        >>> from torchrl.objectives import SoftUpdate
        >>> target_updater = SoftUpdate(loss, tau=0.005)  # the one updater of V' and Q'
        >>> out = loss(td)
        >>> out["loss_qvalue"].shape, out["loss_value"].requires_grad
        (torch.Size([]), True)
        >>> target_updater.step()
    """

    @dataclass
    class _AcceptedKeys(TransitionKeys):
        """Model transitions (reward and terminated under "next") and the optional real-row flag."""

        is_real: tuple = keys.IS_REAL
        log_ratio: tuple = keys.LOG_RATIO

    default_keys = _AcceptedKeys
    _out_keys_ = (
        "loss_qvalue",
        "loss_value",
        "q_value",
        "q_target",
        "td_error",
        "log_ratio",
        "value",
        "value_target",
        "policy_log_ratio",
    )
    SUPPORTED_VALUE_ESTIMATORS = (ValueEstimators.TD0,)
    qvalue_network: TensorDictModule
    qvalue_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams
    value_network: TensorDictModule
    value_network_params: TensorDictParams
    target_value_network_params: TensorDictParams

    def __init__(
        self,
        qvalue_network: TensorDictModule,
        value_network: TensorDictModule | None,
        variational_policy,
        baseline_policy,
        log_ratio_network: TensorDictModule | None = None,
        *,
        eta: float,
        gamma: float,
        num_qvalue_nets: int = 2,
        loss_function: str = "l2",
        uniform_prior_weight: float = 0.0,
        target_entropy: float | None = None,
        entropy_weight_init: float = 1.0,
        entropy_weight_min: float | None = None,
        entropy_log_det: float = 0.0,
        bootstrap: str = "value",
        value_ceiling: bool = False,
        value_samples: int = 8,
    ):
        super().__init__()
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if not (isinstance(num_qvalue_nets, int) and num_qvalue_nets >= 1):
            raise ValueError(f"num_qvalue_nets must be an int >= 1, got {num_qvalue_nets!r}")
        if not 0.0 <= uniform_prior_weight <= 1.0:
            raise ValueError(f"uniform_prior_weight must be in [0, 1], got {uniform_prior_weight}")
        if loss_function not in _LOSS_FUNCTIONS:
            raise ValueError(f"loss_function must be one of {_LOSS_FUNCTIONS}, got {loss_function!r}")
        if bootstrap not in BOOTSTRAPS:
            raise ValueError(f"bootstrap must be one of {BOOTSTRAPS}, got {bootstrap!r}")
        if value_network is None and bootstrap != "action_value":
            raise ValueError(
                f"value_network=None needs bootstrap='action_value' (eq. 23's target reads V'), got {bootstrap!r}"
            )
        if not (isinstance(value_samples, int) and value_samples >= 1):
            raise ValueError(f"value_samples must be an int >= 1, got {value_samples!r}")
        fv.check_in_keys(qvalue_network, 2, "qvalue_network")
        if value_network is not None:
            fv.check_in_keys(value_network, 1, "value_network")
        fv.check_in_keys(variational_policy, 1, "variational_policy")
        fv.check_in_keys(baseline_policy, 1, "baseline_policy")
        if log_ratio_network is not None:
            fv.check_in_keys(log_ratio_network, 3, "log_ratio_network")
        for name, policy in (("variational_policy", variational_policy), ("baseline_policy", baseline_policy)):
            if not callable(getattr(policy, "get_dist", None)):
                raise TypeError(f"{name} must have a get_dist(td) method (e.g. a ProbabilisticActor)")
        self.eta, self.gamma = float(eta), float(gamma)
        self.num_qvalue_nets = num_qvalue_nets
        self.uniform_prior_weight = float(uniform_prior_weight)
        self.loss_function = loss_function
        self.bootstrap = bootstrap
        self.convert_to_functional(qvalue_network, "qvalue_network", num_qvalue_nets, create_target_params=True)
        self.value_samples = value_samples
        if value_network is None:
            self.value_network = None
        else:
            self.convert_to_functional(value_network, "value_network", create_target_params=True)
        # Borrowed networks: in __dict__, so they are neither parameters nor state of this loss.
        self.__dict__["variational_policy"] = variational_policy
        self.__dict__["baseline_policy"] = baseline_policy
        self.__dict__["log_ratio_network"] = log_ratio_network
        self.target_entropy = None if target_entropy is None else float(target_entropy)
        if self.target_entropy is not None:
            if not entropy_weight_init > 0:
                raise ValueError(f"entropy_weight_init must be > 0, got {entropy_weight_init}")
            if entropy_weight_min is not None and not 0 < entropy_weight_min <= entropy_weight_init:
                raise ValueError(
                    f"entropy_weight_min must be in (0, entropy_weight_init={entropy_weight_init}] or None, "
                    f"got {entropy_weight_min}"
                )
            self.log_entropy_weight = nn.Parameter(torch.tensor(math.log(entropy_weight_init)))
        self.entropy_log_det = float(entropy_log_det)
        if not math.isfinite(self.entropy_log_det):
            raise ValueError(f"entropy_log_det must be finite, got {entropy_log_det}")
        self.log_entropy_weight_min = None if entropy_weight_min is None else math.log(entropy_weight_min)
        self.value_ceiling = bool(value_ceiling)
        if self.value_ceiling:
            if log_ratio_network is not None and log_ratio_bound(log_ratio_network) is None:
                raise ValueError(
                    "value_ceiling needs a bounded log-ratio network (make_log_ratio_network's bound) or none: "
                    "with an unbounded nu no value is out of range"
                )
            # Largest real reward the critic's batches have shown (eta r enters the ceiling); persistent,
            # so a resumed run keeps it.
            self.register_buffer("reward_high", torch.tensor(-math.inf))

    @property
    def entropy_weight(self) -> torch.Tensor | None:
        """``alpha_H`` (detached), or ``None`` without an entropy constraint."""
        return None if self.target_entropy is None else self.log_entropy_weight.detach().exp()

    @torch.no_grad()
    def project_entropy_weight_(self) -> None:
        """Clamp ``alpha_H`` to ``[entropy_weight_min, inf)`` (projected descent on the dual): call after
        each optimizer step. A no-op without an entropy constraint or a floor."""
        if self.target_entropy is not None and self.log_entropy_weight_min is not None:
            self.log_entropy_weight.clamp_(min=self.log_entropy_weight_min)

    def constraint_log_prob(self, log_q_c: torch.Tensor) -> torch.Tensor:
        """``log q_c`` as the entropy constraint reads it: on the ``[-1, 1]^d`` box (``entropy_log_det``
        added to the raw action's log-density). The one place the prior's entropy term, alpha_H's dual
        and the ceiling's bonus take it from."""
        return log_q_c + self.entropy_log_det

    def e_step_prior(self, log_pi: torch.Tensor, log_q_c: torch.Tensor, dist) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mixed, prior)`` at ``q_c``'s action: ``mixed`` is ``log pi`` mixed with the uniform box
        (``uniform_prior_weight``; ``log q_c - mixed`` is the logged KL(q_c || pi) estimate), ``prior``
        the E-step's prior: ``mixed`` minus ``alpha_H log q_c`` under an entropy constraint. Shared by
        eq. 24's target here and the actor loss (eq. 25)."""
        mixed = fv.prior_log_prob(log_pi, dist, uniform_weight=self.uniform_prior_weight)
        if self.target_entropy is None:
            return mixed, mixed
        return mixed, fv.entropy_constrained_prior(mixed, self.constraint_log_prob(log_q_c), self.entropy_weight)

    @property
    def has_value_network(self) -> bool:
        """Whether V and V' exist (``value_network`` given) or :meth:`state_value` is Monte Carlo."""
        return self.value_network is not None

    @property
    def out_keys(self) -> list[str]:
        extra = ["loss_entropy_weight", "entropy_weight"] if self.target_entropy is not None else []
        bounded = ["nu_at_bound_fraction"] if log_ratio_bound(self.log_ratio_network) is not None else []
        ceiling = ["value_ceiling", "value_clip_fraction"] if self.value_ceiling else []
        base = self._out_keys_ if self.has_value_network else [k for k in self._out_keys_ if k not in _V_KEYS]
        return [*base, *bounded, *ceiling, *extra]

    def _read_keys(self) -> dict:
        k = self.tensor_keys
        return {
            "observation": k.observation,
            "action": k.action,
            "reward": next_key(k.reward),
            "next_observation": next_key(k.observation),
            "terminated": next_key(k.terminated),
        }

    def make_value_estimator(self, value_type=None, **hyperparams):
        """TD(0) only (eq. 23 is a one-step target; ``gamma`` may be given); anything else: ValueError."""
        if value_type not in (None, ValueEstimators.TD0):
            super().make_value_estimator(value_type)
        unknown = set(hyperparams) - {"gamma"}
        if unknown:
            raise ValueError(f"{type(self).__name__}'s TD(0) target takes only gamma, got {sorted(unknown)}")
        if "gamma" in hyperparams:
            if not 0.0 <= hyperparams["gamma"] <= 1.0:
                raise ValueError(f"gamma must be in [0, 1], got {hyperparams['gamma']}")
            self.gamma = float(hyperparams["gamma"])
        return self

    # --- values, readable by the other VMBPO losses (parameters detached) -----------------------

    def _qvalues(self, obs: torch.Tensor, action: torch.Tensor, params: TensorDictBase) -> torch.Tensor:
        """All Q copies under ``params`` (``[K]``-batched), evaluated at once with ``vmap``: ``[*B, D], [*B, A] -> [K, *B]``."""
        net = self.qvalue_network

        def one_copy(copy_params: TensorDictBase, td: TensorDictBase) -> TensorDictBase:
            with copy_params.to_module(net, preserve_module_state=False):
                return net(td)

        out = torch.vmap(one_copy, (0, None), randomness="error")(params, fv.module_input(net, obs, action))
        return out.get(net.out_keys[0]).squeeze(-1)

    def _value(self, obs: torch.Tensor, params: TensorDictBase) -> torch.Tensor:
        net = self.value_network
        with params.to_module(net, preserve_module_state=False):
            return net(fv.module_input(net, obs)).get(net.out_keys[0]).squeeze(-1)

    def action_value(self, obs: torch.Tensor, action: torch.Tensor, *, target: bool = False) -> torch.Tensor:
        """``min_k Q_k(x, a)`` (or the targets ``Q'_k``), ``[*B]``; gradients reach ``action`` only."""
        params = self.target_qvalue_network_params if target else self.qvalue_network_params.detach()
        return self._qvalues(obs, action, params).min(0).values

    def state_value(self, obs: torch.Tensor, *, target: bool = False) -> torch.Tensor:
        """``V(x)`` (or the target ``V'(x)``), ``[*B]``; no gradient to V's parameters. Without a value
        network, :meth:`monte_carlo_value` (with ``Q'`` for ``target``)."""
        if not self.has_value_network:
            return self.monte_carlo_value(obs, target=target)
        params = self.target_value_network_params if target else self.value_network_params.detach()
        return self._value(obs, params)

    @torch.no_grad()
    def monte_carlo_value(self, obs: torch.Tensor, *, target: bool = False, chunk: int = 2**16) -> torch.Tensor:
        """Eq. 24's soft value by Monte Carlo, ``[*B]``: ``mean_j [min_k Q_k(x, a_j) - log q_c(a_j|x) +
        prior(a_j|x)]`` over ``value_samples`` fresh ``a_j ~ q_c(.|x)``, with the online Q or (``target``)
        the target copies ``Q'``. The regression target of V, averaged instead of learnt: unbiased for
        the soft value of Q under q_c (V's own error is gone; the estimate's variance falls as
        1 / value_samples). ``chunk``: network rows per pass (states x draws)."""
        flat = obs.reshape(-1, obs.shape[-1])
        rows = max(1, chunk // self.value_samples)
        means = []
        for i in range(0, flat.shape[0], rows):
            states = flat[i : i + rows].expand(self.value_samples, -1, -1)  # [J, n, D]
            means.append(self._soft_value(states, target=target)[0].mean(0))
        return torch.cat(means).reshape(obs.shape[:-1])

    # --- targets ----------------------------------------------------------------------------------

    def _batch(self, td: TensorDictBase) -> dict:
        batch = fv.fetch(td, self._read_keys(), type(self).__name__)
        batch["is_real"] = td.get(self.tensor_keys.is_real, None)  # optional: None means all model rows
        batch["log_ratio"] = td.get(self.tensor_keys.log_ratio, None)  # optional: None means evaluate nu here
        for name in ("reward", "terminated", "is_real", "log_ratio"):  # [*B, 1] -> [*B]
            if batch[name] is not None and batch[name].ndim == td.batch_dims + 1:
                batch[name] = batch[name].squeeze(-1)
        return batch

    @torch.no_grad()
    def q_target(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y_Q, nu)`` of eqs. 22-23 on the batch, each ``[*B]``."""
        return self._q_target(self._batch(td))

    @torch.no_grad()
    def value_target(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y_V, a~, log q_c(a~) - log pi(a~))`` of eq. 24, with a fresh ``a~ ~ q_c(.|x)``."""
        return self._value_target(self._batch(td)["observation"])[:3]

    @torch.no_grad()
    def _q_target(self, b: dict, info: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        log_q_c_next = None
        if self.bootstrap == "value":
            next_value = self.state_value(b["next_observation"], target=True)  # eq. 23: V'(x')
        else:  # SAC-v2: eq. 24's soft value at x' from the target Q copies
            next_value, _, _, log_q_c_next = self._soft_value(b["next_observation"], target=True)
        if self.value_ceiling:
            ceiling = self._value_ceiling(b, log_q_c_next)
            if info is not None:
                info["value_ceiling"] = ceiling
                info["value_clip_fraction"] = (next_value > ceiling).to(next_value.dtype).mean()
            next_value = next_value.clamp_max(ceiling)
        if self.log_ratio_network is None:
            nu = torch.zeros_like(next_value)
        else:
            nu = b.get("log_ratio")  # recorded when the row was imagined (class docstring)
            if nu is None:
                nu = log_ratio_of(self.log_ratio_network, b["observation"], b["action"], b["next_observation"])
            if b.get("is_real") is not None:  # eqs. 22-23 subtract nu on model rows only (class docstring)
                nu = torch.where(b["is_real"].bool(), torch.zeros_like(nu), nu)
        y = fv.q_target(b["reward"], next_value, b["terminated"], nu, eta=self.eta, gamma=self.gamma)
        return y, nu

    @torch.no_grad()
    def _value_ceiling(self, b: dict, log_q_c_next: torch.Tensor | None) -> torch.Tensor:
        """The largest soft value the per-step terms allow, ``(eta r_high + b + c) / (1 - gamma)``.

        Per step, the target adds ``eta r`` (at most ``eta r_high``, the largest real reward the critic's
        batches have shown, this batch's included: :meth:`_real_reward_max`), ``-nu`` (at most ``b``,
        the ratio network's bound) and,
        through V at x' (eq. 24), ``-KL(q_c || prior mix) <= 0`` plus, under an entropy constraint,
        ``alpha_H H(q_c)``: ``c = alpha_H max(0, H)``, with H estimated on the batch (``-mean log q_c`` at
        the x' draws, less ``entropy_log_det``; 0 while q_c's entropy is negative, as the env targets
        hold it). A discounted sum of
        such terms is at most ``(eta r_high + b + c) / (1 - gamma)``: the soft value of every policy under
        every q_d whose nu is so bounded. Clipping the bootstrap there is a projection onto a set that
        holds the fixed point, so eq. 23's operator keeps it and stays a contraction; a critic can no
        longer feed on its own over-estimate (benchmarks/tuning/vmbpo-value-ceiling: Pendulum's Q/eta
        reached +112 reward units with every reward <= 0). ``gamma = 1``: no ceiling (inf)."""
        inf = torch.full((), math.inf, dtype=b["reward"].dtype, device=b["reward"].device)
        if self.gamma >= 1.0:
            return inf
        r_high = torch.maximum(self.reward_high, self._real_reward_max(b))
        per_step = self.eta * r_high + (log_ratio_bound(self.log_ratio_network) or 0.0)  # no network: nu = 0
        if self.target_entropy is not None:
            if log_q_c_next is None:  # the value bootstrap: draw a' ~ q_c(.|x') for the entropy estimate
                q_c = self.variational_policy
                dist_c = q_c.get_dist(fv.module_input(q_c, b["next_observation"]))
                log_q_c_next = fv.rsample_with_preimage(dist_c)[2]
            entropy = -self.constraint_log_prob(log_q_c_next).mean()
            per_step = per_step + self.entropy_weight * entropy.clamp_min(0.0)
        return torch.where(torch.isfinite(r_high), per_step / (1.0 - self.gamma), inf)  # no real reward yet: none

    @staticmethod
    def _real_reward_max(b: dict) -> torch.Tensor:
        """The batch's largest real reward: rows flagged ``is_real``, or every row of an unflagged batch
        (-inf without real rows). Model rewards are not trusted: an early model's error (Pendulum: +3,
        every true reward <= 0) would hold the ceiling high for the rest of the run."""
        if b.get("is_real") is None:
            return b["reward"].max()
        return torch.where(b["is_real"].bool(), b["reward"], torch.full_like(b["reward"], -math.inf)).max()

    @torch.no_grad()
    def _value_target(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._soft_value(obs, target=False)  # eq. 24 uses the online Q

    @torch.no_grad()
    def _soft_value(self, obs: torch.Tensor, *, target: bool) -> tuple[torch.Tensor, ...]:
        """``(min_k Q_k(x, a~) - log q_c(a~|x) + prior(a~|x), a~, log q_c - mixed, log q_c)`` with a
        fresh ``a~ ~ q_c(.|x)``; ``Q`` online or (``target``) the target copies ``Q'``."""
        q_c, pi = self.variational_policy, self.baseline_policy
        dist_c = q_c.get_dist(fv.module_input(q_c, obs))
        preimage, action, log_q_c = fv.rsample_with_preimage(dist_c)  # explicit sample: RANDOM mode
        log_pi = fv.log_prob_at(pi.get_dist(fv.module_input(pi, obs)), action, preimage, dist_c)
        mixed, prior = self.e_step_prior(log_pi, log_q_c, dist_c)
        q = self.action_value(obs, action, target=target)
        # The diagnostic stays log q_c - mixed: the entropy term has its own (entropy_weight).
        return fv.value_target(q, log_q_c, prior), action, log_q_c - mixed, log_q_c

    # --- losses -----------------------------------------------------------------------------------

    def qvalue_loss(self, td: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """``loss_qvalue`` (eq. 23) and its diagnostics."""
        return self._qvalue_loss(self._batch(td))

    def value_loss(self, td: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """``loss_value`` (eq. 24) and its diagnostics (a value network is needed)."""
        if not self.has_value_network:
            raise ValueError(f"{type(self).__name__} was built without a value network: there is no loss_value")
        info = self._value_loss(self._batch(td)["observation"])
        return info.pop("loss_value"), info

    def _qvalue_loss(self, b: dict) -> tuple[torch.Tensor, dict]:
        ceiling_info: dict = {}
        y, nu = self._q_target(b, ceiling_info)
        if self.value_ceiling:  # training batches raise the ceiling's r_high (after this batch's target)
            with torch.no_grad():
                self.reward_high.copy_(torch.maximum(self.reward_high, self._real_reward_max(b)))
        q = self._qvalues(b["observation"], b["action"], self.qvalue_network_params)  # [K, *B]
        loss = distance_loss(q, y.expand_as(q), loss_function=self.loss_function)
        loss = loss.reshape(self.num_qvalue_nets, -1).mean(-1).sum()  # each copy on the whole batch
        info = {"q_value": q.mean(), "q_target": y.mean(), "td_error": (q - y).abs().mean(), "log_ratio": nu.mean()}
        info.update(ceiling_info)
        if (bound := log_ratio_bound(self.log_ratio_network)) is not None:
            model_rows = None if b.get("is_real") is None else ~b["is_real"].bool()
            info["nu_at_bound_fraction"] = fv.at_bound_fraction(nu, bound, mask=model_rows)
        return loss, {name: value.detach() for name, value in info.items()}

    def _value_loss(self, obs: torch.Tensor, sample: SoftValueSample | None = None) -> dict:
        """Eq. 24's ``loss_value`` (with a value network), the entropy dual's loss and their diagnostics."""
        if sample is None:
            y, _, policy_log_ratio, log_q_c = self._value_target(obs)
        else:  # the actor's draw at the same states (forward's ``value_sample``)
            y, policy_log_ratio, log_q_c = sample
        info = {"value_target": y.mean(), "policy_log_ratio": policy_log_ratio.mean()}
        if self.has_value_network:
            v = self._value(obs, self.value_network_params)
            info["loss_value"] = distance_loss(v, y, loss_function=self.loss_function).mean()
            info["value"] = v.mean()
        if self.target_entropy is not None:
            info["loss_entropy_weight"] = fv.entropy_dual_loss(
                self.log_entropy_weight, self.constraint_log_prob(log_q_c), self.target_entropy
            )
            info["entropy_weight"] = self.entropy_weight
        return {name: value if name.startswith("loss_") else value.detach() for name, value in info.items()}

    def forward(self, td: TensorDictBase, value_sample: SoftValueSample | None = None) -> TensorDict:
        """Both losses on ``td``. ``value_sample``: eq. 24's target already drawn at ``td``'s states (the
        actor's, :meth:`VMBPOActorLoss.forward_with_value_sample`); None draws a fresh ``a~`` here."""
        b = self._batch(td)  # read and checked once
        loss_qvalue, q_info = self._qvalue_loss(b)
        if value_sample is not None and value_sample.target.shape != b["observation"].shape[:-1]:
            raise ValueError(
                f"value_sample has {tuple(value_sample.target.shape)} rows, the batch {tuple(td.batch_size)}"
            )
        v_info = self._value_loss(b["observation"], value_sample)
        return TensorDict({"loss_qvalue": loss_qvalue, **q_info, **v_info}, batch_size=[])
