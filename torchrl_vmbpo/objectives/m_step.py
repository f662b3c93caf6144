"""VMBPO's M-step: improve the baseline policy pi towards the variational policy q_c (eq. 27)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams

from torchrl_vmbpo import keys
from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.objectives.common import KeyedLoss
from torchrl_vmbpo.objectives.functional_mpo import decoupled_kls

_MODES = ("weighted_map", "copy")


class MStepLoss(KeyedLoss):
    r"""Fit ``pi`` to ``q_c``'s actions with a trust region to the previous ``pi`` (eq. 27), or copy.

    ``mode="weighted_map"`` (eq. 27, the weighted-MAP form MPO's M-step also takes): on states x from
    E and fresh ``a ~ q_c(.|x)`` (no gradient into ``q_c``),

    ``loss_policy = -mean log pi(a|x; theta) + kl_coef * mean KL(pi_old(.|x) || pi(.|x; theta))``.

    ``KL`` is the closed form between the pre-tanh diagonal Gaussians: a bijection shared by both
    policies (the tanh squashing to the action box) leaves the KL unchanged. ``log pi(a)`` is scored
    at ``q_c``'s own pre-tanh sample when both are ``TanhNormal`` over one box (exact where tanh
    saturates). ``kl_coef = 0`` is maximum likelihood: ``pi`` is fitted to ``q_c``. For Gaussians
    the minimiser is closed-form: ``mu = (mu_c + kl_coef mu_old) / (1 + kl_coef)``,
    ``s^2 = [s_c^2 + (mu_c - mu)^2 + kl_coef (s_old^2 + (mu_old - mu)^2)] / (1 + kl_coef)``.

    ``mode="copy"`` (the paper's experiments): ``pi <- q_c`` by :meth:`copy_q_c_into_pi` (same
    architecture required, checked at construction); ``forward`` then returns diagnostics only, no
    ``loss_*`` entry to step.

    Protocol for the training loop (this loss holds no counter; :meth:`on_update` is the schedule):
    copy mode calls :meth:`copy_q_c_into_pi` every ``period`` E-step updates and nothing in between;
    weighted_map mode calls :meth:`snapshot_old_policy` (``pi_old <- pi``) every ``period`` updates,
    and the presets' agents take ONE gradient step on ``loss_policy`` after EVERY E-step update, so
    ``period`` is the life of a trust-region centre, not the spacing of pi's updates.

    Ownership: this loss owns ``pi`` (registered as ``baseline_policy``) and the frozen snapshot
    ``pi_old`` (``old_policy_params``, buffers: saved in ``state_dict``, never trained); ``q_c`` is
    borrowed (not registered; sampled without gradient).

    Args:
        baseline_policy: ``pi``, a tanh-Gaussian ProbabilisticActor (1 in_key, ``get_dist``).
        variational_policy: ``q_c``, same interface (owned by the actor loss).

    Keyword Args:
        mode: ``"weighted_map"`` (default) or ``"copy"``.
        kl_coef: ``lambda >= 0`` of eq. 27 (default 1.0).
        kl_coef_std: ``None`` (default: one KL, as eq. 27) or ``lambda_std >= 0``: the trust region
            decoupled as MPO's M-step (Abdolmaleki et al. 2018b), ``kl_coef * KL(pi_old || N(mu,
            s_old)) + kl_coef_std * KL(pi_old || N(mu_old, s))``, so the mean can follow ``q_c``
            while the spread shrinks slowly. Why it matters: ``q_c``'s own objective (eq. 25) keeps
            no entropy once ``pi`` tracks it, and the acting ``pi`` then stops exploring. For
            Gaussians the minimiser solves ``s^2 = [s_c^2 + (mu_c - mu)^2 + kl_coef_std s_old^2] / (1 + kl_coef_std)``,
            ``mu = (mu_c s_old^2 + kl_coef mu_old s^2) / (s_old^2 + kl_coef s^2)``: with the mean
            fitted the spread moves a fraction ``1 / (1 + kl_coef_std)`` of the way per M-step.
        period: E-step updates per period (>= 1; :meth:`on_update`): between two copies pi <- q_c
            (copy), or between two snapshots pi_old <- pi (weighted_map; pi's gradient steps are
            the caller's, one per update in the presets).

    Keys read (``set_keys``): ``observation``.

    Returns ``loss_policy`` (weighted_map only; steps ``pi``) and detached diagnostics
    ``log_prob_policy`` (mean ``log pi(a)``, weighted_map only), ``kl_old_policy`` (mean
    KL(pi_old || pi), weighted_map only) and ``kl_variational_baseline`` (mean pre-tanh
    KL(q_c || pi), both modes).

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor
        >>> spec = Bounded(-1.0, 1.0, shape=(2,))
        >>> pi, q_c = make_tanh_gaussian_actor(3, spec, hidden=(8,)), make_tanh_gaussian_actor(3, spec, hidden=(8,))
        >>> loss = MStepLoss(pi, q_c, kl_coef=0.5, period=10)
        >>> loss.snapshot_old_policy()
        >>> out = loss(TensorDict({"observation": torch.randn(6, 3)}, [6]))
        >>> float(out["kl_old_policy"])  # pi has not moved since the snapshot
        0.0
        >>> copy = MStepLoss(pi, q_c, mode="copy")
        >>> copy.copy_q_c_into_pi()
        >>> float(copy(TensorDict({"observation": torch.randn(6, 3)}, [6]))["kl_variational_baseline"])
        0.0
    """

    @dataclass
    class _AcceptedKeys:
        """Batch entries read by the M-step."""

        observation: str = keys.OBSERVATION

    default_keys = _AcceptedKeys

    def __init__(
        self,
        baseline_policy,
        variational_policy,
        *,
        mode: str = "weighted_map",
        kl_coef: float = 1.0,
        kl_coef_std: float | None = None,
        period: int = 1,
    ):
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if not kl_coef >= 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        if kl_coef_std is not None and not kl_coef_std >= 0:
            raise ValueError(f"kl_coef_std must be None or >= 0, got {kl_coef_std}")
        if not (isinstance(period, int) and period >= 1):
            raise ValueError(f"period must be an int >= 1, got {period!r}")
        fv.check_in_keys(baseline_policy, 1, "baseline_policy")
        fv.check_in_keys(variational_policy, 1, "variational_policy")
        if baseline_policy is variational_policy:
            raise ValueError("baseline_policy and variational_policy must be distinct modules (pi and q_c)")
        self.mode, self.kl_coef, self.period = mode, float(kl_coef), period
        self.kl_coef_std = None if kl_coef_std is None else float(kl_coef_std)
        self.baseline_policy = baseline_policy
        self.__dict__["variational_policy"] = variational_policy  # borrowed: owned by the actor loss
        if mode == "copy":
            self._check_same_architecture()
        # pi_old: a frozen copy of pi's parameters and buffers (TensorDictParams of buffers).
        self.old_policy_params = TensorDictParams(TensorDict.from_module(baseline_policy).data.clone(), no_convert=True)

    def _read_keys(self) -> dict:
        return {"observation": self.tensor_keys.observation}

    @property
    def out_keys(self) -> list[str]:
        if self.mode == "copy":
            return ["kl_variational_baseline"]
        trust = ["kl_old_mean", "kl_old_std"] if self.kl_coef_std is not None else []
        return ["loss_policy", "kl_variational_baseline", *trust, "log_prob_policy", "kl_old_policy"]

    def _check_same_architecture(self) -> None:
        pi = TensorDict.from_module(self.baseline_policy)
        q_c = TensorDict.from_module(self.variational_policy)
        shapes = lambda td: {k: tuple(v.shape) for k, v in td.items(True, True)}  # noqa: E731
        if shapes(pi) != shapes(q_c):
            raise ValueError(
                "mode='copy' needs pi and q_c of the same architecture (same parameter names and shapes); "
                f"got pi: {shapes(pi)} and q_c: {shapes(q_c)}"
            )

    @torch.no_grad()
    def snapshot_old_policy(self) -> None:
        """``pi_old <- pi``: the trust-region centre for the next M-step (eq. 27)."""
        self.old_policy_params.data.update_(TensorDict.from_module(self.baseline_policy).data)

    def on_update(self, num_updates: int) -> bool:
        """The schedule: after E-step update ``num_updates``, every ``period`` updates copy pi <- q_c
        (copy mode) or snapshot pi_old <- pi (weighted-MAP, whose gradient steps then follow, one per
        update in the presets). Returns True when it acted."""
        if num_updates % self.period != 0:
            return False
        if self.mode == "copy":
            self.copy_q_c_into_pi()
        else:
            self.snapshot_old_policy()
        return True

    @torch.no_grad()
    def copy_q_c_into_pi(self) -> None:
        """``pi <- q_c`` in place (parameters and buffers), then ``pi_old <- pi``."""
        self._check_same_architecture()
        TensorDict.from_module(self.baseline_policy).data.update_(TensorDict.from_module(self.variational_policy).data)
        self.snapshot_old_policy()

    def forward(self, td: TensorDictBase) -> TensorDict:
        obs = fv.fetch(td, self._read_keys(), type(self).__name__)["observation"]
        pi, q_c = self.baseline_policy, self.variational_policy
        with torch.no_grad():
            dist_c = q_c.get_dist(fv.module_input(q_c, obs))
            preimage, action, _ = fv.rsample_with_preimage(dist_c)  # a ~ q_c, no gradient into q_c
        return self.loss_at(
            obs, pi.get_dist(fv.module_input(pi, obs)), fv.PolicyDraw.detached(dist_c, preimage, action)
        )

    def loss_at(self, obs: torch.Tensor, dist_pi, draw: fv.PolicyDraw) -> TensorDict:
        """:meth:`forward`'s output given ``dist_pi``, pi's distribution at ``obs`` (with its gradient),
        and ``draw``, one detached draw of q_c at ``obs`` (e.g. the E-step actor's, as
        ``VMBPOAgent`` passes it when it computes the E-step and this loss in one pass)."""
        loc_pi, scale_pi = fv.pre_tanh_gaussian(dist_pi)
        info = {"kl_variational_baseline": fv.diag_gaussian_kl(draw.loc, draw.scale, loc_pi, scale_pi).mean()}
        if self.mode == "copy":
            return TensorDict({n: v.detach() for n, v in info.items()}, batch_size=[])
        pi = self.baseline_policy
        with torch.no_grad(), self.old_policy_params.to_module(pi, preserve_module_state=False):
            loc_old, scale_old = fv.pre_tanh_gaussian(pi.get_dist(fv.module_input(pi, obs)))
        log_pi = fv.log_prob_at(dist_pi, draw.action, draw.preimage, draw.sampler)
        kl_old = fv.diag_gaussian_kl(loc_old, scale_old, loc_pi, scale_pi)
        if self.kl_coef_std is None:
            penalty = self.kl_coef * kl_old.mean()  # eq. 27
        else:  # MPO's decoupled trust region: mean and spread each against pi_old's other half
            kl_mean, kl_std = decoupled_kls(loc_old, scale_old, loc_pi, scale_pi)
            penalty = self.kl_coef * kl_mean.sum(-1).mean() + self.kl_coef_std * kl_std.sum(-1).mean()
            info.update(kl_old_mean=kl_mean.sum(-1).mean(), kl_old_std=kl_std.sum(-1).mean())
        loss = -log_pi.mean() + penalty
        info.update(log_prob_policy=log_pi.mean(), kl_old_policy=kl_old.mean())
        return TensorDict({"loss_policy": loss, **{n: v.detach() for n, v in info.items()}}, batch_size=[])
