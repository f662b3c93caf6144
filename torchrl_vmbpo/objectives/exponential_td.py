"""VMBPO-MFE's E-step critic: Q by exponential TD on REAL transitions (eq. 9), V as VMBPO's (eq. 24)."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule

from torchrl_vmbpo.objectives import functional_mfe as fm
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss


class ExponentialTDLoss(VMBPOCriticLoss):
    r"""Model-free E-step critic of VMBPO-MFE: Q fitted by an exponential TD on real data (eq. 9).

    On REAL transitions ``(x, a, r, x', terminated)`` from D (no model, no log-ratio ``nu``):

    - Q (eq. 9, discounted form ii): target ``y = eta r + gamma (1 - terminated) V'(x')``;
      ``loss_qvalue = sum_k mean tau^2 [exp(u_k) - u_k - 1]`` with ``u_k = (y - Q_k(x, a)) / tau``.
      Up to a factor ``tau`` and a term free of ``Q`` this is ``tau exp((y - Q) / tau) + Q``, whose
      expected derivative vanishes at ``Q = tau log E_p[exp(y / tau)]``: with ``tau = 1``,
      ``Q = eta r + log E_p[exp(gamma V'(x'))]``, eq. 9 (see
      :func:`~torchrl_vmbpo.objectives.functional_mfe.exponential_td_loss`). ``tau -> inf`` gives
      the risk-neutral mean TD (half the squared error); small ``tau`` amplifies the variance of the
      targets, the instability the paper reports for VMBPO-MFE (its Sec. 6 and footnote 3; its own
      temperature appears to be the reciprocal of this ``tau``). ``max_exponent`` continues ``exp``
      linearly above ``u = max_exponent`` (overflow guard; the loss is exact wherever
      ``u <= max_exponent``); ``None`` disables it.
    - V (eq. 24), unchanged from :class:`VMBPOCriticLoss` (inherited, not copied):
      ``y_V = min_k Q_k(x, a~) - log q_c(a~|x) + log pi(a~|x)``, ``a~ ~ q_c(.|x)`` fresh, squared error.

    This is a :class:`VMBPOCriticLoss` with ``nu = 0`` (the target of eqs. 22-23 with ``nu = 0`` is
    exactly ``y`` above) and only the Q regression replaced: it owns Q, V and their targets ``Q'``,
    ``V'`` the same way, so :class:`~torchrl_vmbpo.objectives.vmbpo_actor.VMBPOActorLoss`,
    :class:`~torchrl_vmbpo.objectives.vmbpo_dynamics.VMBPODynamicsLoss` and one
    ``SoftUpdate(loss, tau=...)`` work with it unchanged. Twin Q: each copy minimises its own
    exponential TD on the whole batch; the minimum enters ``y_V`` and the actor, as in VMBPO.

    Args:
        qvalue_network: ``Q(x, a)``, a TensorDictModule with 2 in_keys (x, a).
        value_network: ``V(x)``, a TensorDictModule with 1 in_key.
        variational_policy: ``q_c`` (``get_dist``; owned by the actor loss).
        baseline_policy: ``pi`` (``get_dist``; owned by the M-step loss).

    Keyword Args:
        eta: temperature ``eta > 0`` of ``p(O=1|x,a) = exp(eta r)``.
        gamma: discount in ``[0, 1]``.
        temperature: exponential-TD temperature ``tau > 0`` (default 1: eq. 9 exactly).
        max_exponent: ``u`` above which ``exp`` is linearised (``> 0``, default 5: a sample weighs at
            most ``e^5 ~ 148`` times one at the fixed point), or ``None`` for the exact loss.
        num_qvalue_nets: number of Q copies (>= 1; default 2).
        value_loss_function: distance of the V regression, ``"l2"`` (default), ``"l1"`` or ``"smooth_l1"``.

    Keys read (``set_keys``): as :class:`VMBPOCriticLoss` (``SACLoss``'s contract): ``observation``
    (x, and x' under ``"next"``), ``action``, ``reward`` and ``terminated`` (under ``"next"``).

    Returns ``loss_qvalue`` (steps Q, ``qvalue_network_params``), ``loss_value`` (steps V,
    ``value_network_params``) and detached diagnostics ``q_value``, ``q_target``, ``td_error``
    (mean ``|Q - y|``), ``q_target_std`` and ``td_exponent_std`` (batch standard deviations of ``y``
    and of ``u``: the spread that ``exp`` amplifies), ``exp_td`` (mean ``exp(u)``: the samples' weights in
    ``dl/dQ = tau (1 - exp(u))``, capped at ``exp(max_exponent)``; one at the fixed point, where
    ``E_p[exp((y - Q) / tau)] = 1``), ``exp_td_max`` (the largest weight: the variance
    amplification), ``linearised_fraction`` (share of samples past ``max_exponent``), ``value``,
    ``value_target``, ``policy_log_ratio``.

    Example:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.objectives import SoftUpdate
        >>> from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor, make_q_value, make_state_value
        >>> spec = Bounded(-1.0, 1.0, shape=(1,))
        >>> q_c, pi = make_tanh_gaussian_actor(3, spec, hidden=(8,)), make_tanh_gaussian_actor(3, spec, hidden=(8,))
        >>> loss = ExponentialTDLoss(make_q_value(3, 1, hidden=(8,)), make_state_value(3, hidden=(8,)), q_c, pi,
        ...                          eta=1.0, gamma=0.99, temperature=2.0)
        >>> target_updater = SoftUpdate(loss, tau=0.005)  # the one updater of V' and Q'
        >>> td = TensorDict({"observation": torch.randn(6, 3), "action": torch.rand(6, 1) * 2 - 1,
        ...     ("next", "observation"): torch.randn(6, 3), ("next", "reward"): torch.randn(6, 1),
        ...     ("next", "terminated"): torch.zeros(6, 1, dtype=torch.bool)}, [6])
        >>> out = loss(td)
        >>> sorted(k for k in out.keys() if k.startswith("loss_")), bool(out["loss_qvalue"] >= 0)
        (['loss_qvalue', 'loss_value'], True)
        >>> target_updater.step()
    """

    def __init__(
        self,
        qvalue_network: TensorDictModule,
        value_network: TensorDictModule,
        variational_policy,
        baseline_policy,
        *,
        eta: float,
        gamma: float,
        temperature: float = 1.0,
        max_exponent: float | None = 5.0,
        num_qvalue_nets: int = 2,
        value_loss_function: str = "l2",
    ):
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        if max_exponent is not None and not (isinstance(max_exponent, (int, float)) and max_exponent > 0):
            raise ValueError(f"max_exponent must be None or a number > 0, got {max_exponent!r}")
        # nu = None: model-free, the targets of eqs. 22-23 with nu = 0 are exactly y of eq. 9.
        super().__init__(
            qvalue_network,
            value_network,
            variational_policy,
            baseline_policy,
            None,
            eta=eta,
            gamma=gamma,
            num_qvalue_nets=num_qvalue_nets,
            loss_function=value_loss_function,
        )
        self.temperature = float(temperature)
        self._out_keys_ = (
            "loss_qvalue",
            "loss_value",
            "q_value",
            "q_target",
            "q_target_std",
            "td_error",
            "td_exponent_std",
            "exp_td",
            "exp_td_max",
            "linearised_fraction",
            "value",
            "value_target",
            "policy_log_ratio",
        )
        self.max_exponent = None if max_exponent is None else float(max_exponent)

    def _qvalue_loss(self, b: dict) -> tuple[torch.Tensor, dict]:
        y, _ = self._q_target(b)  # [*B], no gradient: eta r + gamma (1 - terminated) V'(x')
        q = self._qvalues(b["observation"], b["action"], self.qvalue_network_params)  # [K, *B]
        per_sample = fm.exponential_td_loss(q, y, temperature=self.temperature, max_exponent=self.max_exponent)
        loss = per_sample.reshape(self.num_qvalue_nets, -1).mean(-1).sum()  # each copy on the whole batch
        with torch.no_grad():
            u = (y - q) / self.temperature
            # Each sample's weight in dl/dQ = tau (1 - weight): exp(u), capped where exp turns linear.
            weight = (u if self.max_exponent is None else u.clamp_max(self.max_exponent)).exp()
            beyond = u > self.max_exponent if self.max_exponent is not None else torch.zeros_like(u, dtype=torch.bool)
            info = {
                "q_value": q.mean(),
                "q_target": y.mean(),
                # The spread of the targets and of u: what exp() amplifies (the paper's footnote 3).
                "q_target_std": y.std() if y.numel() > 1 else torch.zeros_like(y.mean()),
                "td_error": (q - y).abs().mean(),
                "td_exponent_std": u.std() if u.numel() > 1 else torch.zeros_like(u.mean()),
                "exp_td": weight.mean(),
                "exp_td_max": weight.max(),
                "linearised_fraction": beyond.float().mean(),
            }
        return loss, info
