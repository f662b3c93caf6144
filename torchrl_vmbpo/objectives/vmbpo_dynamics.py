"""VMBPO's E-step dynamics fit: the value-weighted ensemble NLL of eq. 19."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase

from torchrl_vmbpo import keys
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.objectives.common import KeyedLoss, TransitionKeys, next_key
from torchrl_vmbpo.objectives.ensemble_nll import GaussianEnsembleNLLLoss
from torchrl_vmbpo.objectives.functional import effective_sample_size
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss

NORMALISERS = ("critic", "model")


class VMBPODynamicsLoss(KeyedLoss):
    r"""Fit ``q_d`` to the exponentially twisted dynamics ``p exp(gamma V') / exp(Q' - eta r)`` (eq. 19).

    On real transitions ``(x, a, r, x', terminated)`` from D:

    1. ``log w = eta r + gamma (1 - terminated) V'(x') - Q'(x, a)`` with the critic's TARGET
       networks ``V'``, ``Q'`` (no gradient). ``E_p[w | x, a] = 1`` exactly (eq. 9), so ``w`` is the
       likelihood ratio ``q_d* / p`` (eq. 14) and the weighted NLL is the forward KL to ``q_d*``.
       ``Q'(x, a) - eta r`` is only a normaliser, ``log E_p[exp(gamma V'(x'))]``: with
       ``normaliser="critic"`` (eq. 19 verbatim) it is read from ``Q'``; with ``normaliser="model"``
       it is estimated per row as ``log mean_k exp(gamma (1 - terminated) V'(x~_k))`` over
       ``normaliser_samples`` next states ``x~_k`` drawn from the model's own Gaussian prediction at
       ``(x, a)`` (each member's for a bootstrapped ``[B, E]`` batch; all members pooled for ``[B]``;
       no gradient). The twist within one ``(x, a)`` is the same; what changes is the spread ACROSS
       rows: with the critic normaliser every row's weight carries ``exp`` of its TD error
       ``eta r + gamma V' - Q'``, which early in training is tens of nats wide and leaves one row
       holding the whole batch (Pendulum: ESS 0.4-1% of 256, see README "VMBPO defaults"); with the
       model normaliser a row's weight says only how much better its real ``x'`` is than the model's
       own samples (``w = 1`` where the model is exact and the environment deterministic). But where
       the model is unsure, ``log w ~ -sigma^2 / 2`` with ``sigma`` the spread of ``gamma V'`` over its
       samples, so on a deterministic task the batch's weight moves from the rows the model fits worst
       to those it fits best, and fit after fit the model loses the former (HalfCheetah-v5: holdout MSE
       17 against MBPO's 0.6; benchmarks/tuning/vmbpo-weight-normaliser); tempering (step 2) is the
       critic normaliser's answer to its spread, and VMBPO's default since 2026-12-06. The real
       row's ``terminated`` is used for its samples (termination functions are the env's, not the
       loss's). A batch that already holds ``log w`` under the ``log_weight`` key skips this step:
       the model fit computes it once for all of D (:meth:`with_log_weights`);
    2. optionally (``min_ess``) temper: ``log w <- beta log w`` with the largest ``beta <= 1`` whose
       weights keep a Kish effective sample size of ``min_ess * B``
       (:func:`~torchrl_vmbpo.objectives.functional_vmbpo.tempering_exponent`; per member for
       ``[B, E]``). ``beta = 1`` is eq. 19; a smaller ``beta`` fits the twist ``p exp(beta gamma V')``,
       milder but in the same direction, where the batch cannot support the full one;
       then ``w = B softmax(log w)`` over the batch (self-normalised: ``mean w = 1``), then optionally
       ``w = min(w, max_weight)`` (clipped mass dropped, not redistributed), then
       ``w = (1 - mix) w + mix``. ``mix = 1`` makes every weight one: the plain maximum-likelihood
       loss of MBPO, so MBPO and VMBPO share this class (``critic=None`` is then allowed);
    3. ``w`` is written under the NLL loss's weight key and :class:`GaussianEnsembleNLLLoss`
       (reused, not copied) returns ``loss_dynamics``: the next-state NLL weighted by ``w``, the
       reward head unweighted (the twist acts on ``x'`` only), plus the log-variance bound penalty.

    Batch layouts: ``[B]`` (every member sees the same rows; weights normalised over B) or
    ``[B, E]`` (bootstrapped rows per member; weights normalised over B within each member).

    Held-out data: :meth:`holdout_loss` is each member's weighted NLL ``[E]`` (the objective above
    without the penalty), the score early stopping and the elite choice should use while the twist
    is on (:meth:`GaussianEnsembleNLLLoss.holdout_loss` is MBPO's per-member MSE).

    Ownership: this loss owns the dynamics model (through its inner NLL loss). ``V'`` and ``Q'``
    belong to the critic loss, which is the single owner of V, Q and their targets; this loss holds
    a non-registered reference to it and reads ``critic.state_value(x', target=True)`` and
    ``critic.action_value(x, a, target=True)`` (twin minimum, as the critic uses). One
    ``SoftUpdate(critic)`` therefore updates each target exactly once per step, and an optimizer on
    ``this_loss.parameters()`` sees the dynamics model only. ``eta`` and ``gamma`` are the critic's.

    Args:
        dynamics_model: the Gaussian ensemble ``q_d``.
        critic: the :class:`VMBPOCriticLoss` owning ``V'`` and ``Q'``; ``None`` only with ``mix=1``.

    Keyword Args:
        max_weight: clip for the normalised weights (``> 1``), or ``None`` (default) for no clip.
        mix: weight of the uniform mixture in ``[0, 1]`` (default 0: pure eq. 19; 1: MBPO's MLE).
        min_ess: ``None`` (default: no tempering) or the smallest effective sample size, as a
            fraction of the batch in ``(0, 1]``, that tempering keeps (step 2).
        normaliser: ``"critic"`` (default; ``Q'(x, a) - eta r`` as eq. 19 writes it) or ``"model"``
            (a Monte Carlo estimate under the model; step 1).
        normaliser_samples: next states per row for ``normaliser="model"`` (``>= 1``; default 4).
        logvar_penalty: coefficient of the ensemble's log-variance bound penalty (MBPO: 0.01).

    Keys read (``set_keys``, ``SACLoss``'s contract): ``observation`` (x, and x' under ``"next"``),
    ``action``, ``reward`` and ``terminated`` (under ``"next"``); ``log_weight`` (default
    ``("model", "log_weight")``) if present, step 1's result; ``weight`` (default ``("model", "weight")``) is where the weights are written
    for the NLL loss (on a shallow copy: the caller's batch is not modified).

    Returns ``loss_dynamics`` (steps the dynamics model), ``model_nll``, ``model_mse`` (from the
    NLL loss) and the weight diagnostics: ``weight_ess`` (Kish effective sample size of the final
    weights as a fraction of B), ``weight_max``, ``weight_beta`` (the tempering exponent, mean over
    members; 1 without ``min_ess``), ``log_weight_mean`` (mean raw ``log w``) and
    ``log_mean_weight`` (``log mean exp log w``, zero when the critic is consistent with p, eq. 9).

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor, make_q_value, make_state_value
        >>> spec = Bounded(-1.0, 1.0, shape=(1,))
        >>> q_c, pi = make_tanh_gaussian_actor(3, spec, hidden=(8,)), make_tanh_gaussian_actor(3, spec, hidden=(8,))
        >>> critic = VMBPOCriticLoss(make_q_value(3, 1, hidden=(8,)), make_state_value(3, hidden=(8,)), q_c, pi,
        ...                          eta=1.0, gamma=0.99)
        >>> from torchrl.objectives import SoftUpdate
        >>> target_updater = SoftUpdate(critic, tau=0.005)  # also moves the V', Q' this loss reads
        >>> loss = VMBPODynamicsLoss(DynamicsModel(3, 1, hidden=(16,)), critic, max_weight=10.0, mix=0.1)
        >>> td = TensorDict({"observation": torch.randn(8, 3), "action": torch.rand(8, 1) * 2 - 1,
        ...     ("next", "observation"): torch.randn(8, 3), ("next", "reward"): torch.randn(8, 1),
        ...     ("next", "terminated"): torch.zeros(8, 1, dtype=torch.bool)}, [8])
        >>> out = loss(td)
        >>> 0 < out["weight_ess"] <= 1, out["loss_dynamics"].requires_grad
        (tensor(True), True)
    """

    @dataclass
    class _AcceptedKeys(TransitionKeys):
        """Batch entries read (real transitions) and the weight entry written for the NLL loss."""

        weight: tuple = keys.WEIGHT
        log_weight: tuple = keys.LOG_WEIGHT

    default_keys = _AcceptedKeys
    _out_keys_ = (
        "loss_dynamics",
        "model_nll",
        "model_mse",
        "weight_ess",
        "weight_max",
        "weight_beta",
        "log_weight_mean",
        "log_mean_weight",
    )

    def __init__(
        self,
        dynamics_model: DynamicsModel,
        critic: VMBPOCriticLoss | None,
        *,
        max_weight: float | None = None,
        mix: float = 0.0,
        min_ess: float | None = None,
        normaliser: str = "critic",
        normaliser_samples: int = 4,
        logvar_penalty: float = 0.01,
    ):
        super().__init__()
        if critic is not None and not isinstance(critic, VMBPOCriticLoss):
            raise TypeError(
                f"critic must be a VMBPOCriticLoss (owner of V' and Q') or None, got {type(critic).__name__}"
            )
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix must be in [0, 1], got {mix}")
        if critic is None and mix != 1.0:
            raise ValueError("critic=None is only allowed with mix=1.0 (plain MLE, MBPO); eq. 19 needs V' and Q'")
        if max_weight is not None and not max_weight > 1.0:
            raise ValueError(f"max_weight must be None or > 1 (the weights average to one), got {max_weight}")
        if min_ess is not None and not 0.0 < min_ess <= 1.0:
            raise ValueError(f"min_ess must be None or in (0, 1], got {min_ess}")
        if normaliser not in NORMALISERS:
            raise ValueError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")
        if not (isinstance(normaliser_samples, int) and normaliser_samples >= 1):
            raise ValueError(f"normaliser_samples must be an int >= 1, got {normaliser_samples!r}")
        self.nll_loss = GaussianEnsembleNLLLoss(dynamics_model, logvar_penalty=logvar_penalty)
        self.max_weight, self.mix = max_weight, float(mix)
        self.normaliser, self.normaliser_samples = normaliser, normaliser_samples
        self.min_ess = min_ess
        self.__dict__["critic"] = critic  # borrowed: not a submodule, its parameters are not ours

    @property
    def dynamics_model(self) -> DynamicsModel:
        return self.nll_loss.dynamics_model

    def _read_keys(self) -> dict:
        k = self.tensor_keys
        return {
            "observation": k.observation,
            "action": k.action,
            "next_observation": next_key(k.observation),
            "reward": next_key(k.reward),
            "terminated": next_key(k.terminated),
        }

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        # The inner NLL loss reads the same batch (with absolute keys): keep its keys in step with ours.
        read = self._read_keys()
        self.nll_loss.set_keys(
            observation=read["observation"],
            action=read["action"],
            next_observation=read["next_observation"],
            reward=read["reward"],
            weight=self.tensor_keys.weight,
        )

    @torch.no_grad()
    def log_weight(self, td: TensorDictBase) -> torch.Tensor:
        """Raw ``log w`` of eq. 19, shaped like the batch (``[B]`` or ``[B, E]``)."""
        b = fv.fetch(td, self._read_keys(), type(self).__name__)
        reward, terminated = (
            b[n].squeeze(-1) if b[n].ndim == td.batch_dims + 1 else b[n] for n in ("reward", "terminated")
        )
        eta, gamma = self.critic.eta, self.critic.gamma
        next_value = self.critic.state_value(b["next_observation"], target=True)
        if self.normaliser == "critic":
            q_value = self.critic.action_value(b["observation"], b["action"], target=True)
        else:  # the model's estimate of Q'(x, a) = eta r + log E_p[exp(gamma V'(x'))] (eq. 9)
            q_value = eta * reward + self._model_log_normaliser(b["observation"], b["action"], terminated)
        return fv.dynamics_log_weight(reward, next_value, terminated, q_value, eta=eta, gamma=gamma)

    @torch.no_grad()
    def with_log_weights(self, data: TensorDictBase, *, chunk: int = 4096) -> TensorDictBase:
        """``data`` (real transitions, batch ``[N]``) with each row's raw ``log w`` (step 1) under the
        ``log_weight`` key, for one whole model fit: a shallow copy, ``data`` is not modified.

        ``V'`` and ``Q'`` do not move during a fit, so step 1 is done once per fit instead of at every
        step and every holdout scoring (the fit then costs about what MBPO's does, and minimises one
        fixed objective, which its early stopping assumes). With ``normaliser="model"`` the estimate of
        ``log E_p[exp(gamma V'(x'))]`` is the model's as the fit starts, from all members' samples
        pooled (``normaliser_samples`` per member). Batches that carry the key skip step 1 (:meth:`forward`,
        :meth:`holdout_loss`); steps 2-3 still normalise and temper within each batch.
        ``mix=1`` needs no weights: ``data`` is returned as it is. Rows are scored ``chunk`` at a time."""
        if self.mix == 1.0:
            return data
        if data.batch_dims != 1:
            raise ValueError(f"with_log_weights takes a [N] batch of transitions, got shape {tuple(data.shape)}")
        read = self._read_keys()
        rows = data.select(*read.values())
        log_w = torch.cat([self.log_weight(rows[i : i + chunk]) for i in range(0, data.shape[0], chunk)])
        out = data.copy()
        out.set(self.tensor_keys.log_weight, log_w)
        return out

    def _model_log_normaliser(self, obs: torch.Tensor, action: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        """``log mean exp(gamma (1 - terminated) V'(x~))`` over model samples ``x~``: ``[*B]``."""
        values = self.sampled_next_values(obs, action)
        return fv.model_log_normaliser(values, terminated, gamma=self.critic.gamma, dim=0)

    @torch.no_grad()
    def sampled_next_values(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``V'(x~)`` (target network) at ``normaliser_samples`` next states ``x~`` per member, drawn from
        each member's Gaussian at ``(x, a)``: ``[K, B, E]`` for ``[B, E]`` rows (each member's own),
        ``[K E, B]`` for ``[B]`` rows (the members' samples pooled). Sample dim first."""
        model = self.dynamics_model
        per_member = obs.ndim == 3  # [B, E, D]: each member's own rows
        mean, logvar = model.predict_per_member(obs, action) if per_member else model.predict(obs, action)
        base = obs if per_member else obs.unsqueeze(-2)  # [B, E, D] or [B, 1, D]
        delta, std = mean[..., :-1], (0.5 * logvar[..., :-1]).exp()  # [B, E, D]: x' - x, reward dropped
        samples = base + delta + std * torch.randn(self.normaliser_samples, *delta.shape, dtype=delta.dtype)
        values = self.critic.state_value(samples, target=True)  # [K, B, E]
        if not per_member:  # [B] rows: pool the members' samples, [K, B, E] -> [K E, B]
            values = values.movedim(-1, 1).reshape(-1, values.shape[1])
        return values

    def _check_layout(self, td: TensorDictBase) -> None:
        members = self.dynamics_model.num_members
        if td.batch_dims == 1 or (td.batch_dims == 2 and td.shape[-1] == members):
            return
        raise ValueError(
            f"{type(self).__name__} takes a [B] batch or a [B, E={members}] bootstrapped batch, got shape {tuple(td.shape)}"
        )

    def _weights(self, td: TensorDictBase) -> tuple[torch.Tensor | None, dict]:
        """The final eq.-19 weights of step 2 (``None`` for ``mix=1``: all one) and their diagnostics."""
        if self.mix == 1.0:
            weight = None  # plain MLE: every weight is one, the critic is not needed
            info = {"weight_ess": torch.ones(()), "weight_max": torch.ones(())}
        else:
            log_w = td.get(self.tensor_keys.log_weight, None)  # once per fit (with_log_weights), or now
            if log_w is None:
                log_w = self.log_weight(td)  # [B] or [B, E]; normalised over B (dim 0)
            beta = torch.ones(()) if self.min_ess is None else fv.tempering_exponent(log_w, min_ess=self.min_ess, dim=0)
            weight = fv.normalise_weights(beta * log_w, dim=0, max_weight=self.max_weight, mix=self.mix)
            batch = log_w.shape[0]
            info = {
                "weight_ess": (effective_sample_size(weight.transpose(0, -1)) / batch).mean(),
                "weight_max": weight.max(),
                "weight_beta": beta.mean(),
                "log_weight_mean": log_w.mean(),
                "log_mean_weight": (torch.logsumexp(log_w, dim=0) - torch.log(torch.tensor(float(batch)))).mean(),
            }
        return weight, info

    def _nll_batch(self, td: TensorDictBase, weight: torch.Tensor | None) -> TensorDictBase:
        """The entries the NLL loss reads (shared tensors), with ``weight`` under its weight key."""
        read = self._read_keys()
        nll_batch = td.select(
            *(read[n] for n in ("observation", "action", "next_observation", "reward"))
        )  # shared tensors
        if weight is not None:
            nll_batch.set(self.tensor_keys.weight, weight)
        return nll_batch

    @torch.no_grad()
    def holdout_loss(self, td: TensorDictBase) -> torch.Tensor:
        """Each member's eq.-19 objective on held-out real transitions, ``[E]``: the Gaussian NLL with
        the next-state part weighted by the batch's final weights (step 2, normalised over the holdout
        batch), the reward part unweighted, averaged over rows and target dimensions as ``loss_dynamics``
        (without the log-variance penalty). With ``mix=1`` it is each member's plain NLL. What early
        stopping and the elite choice should rank members by while the twist is on: the unweighted MSE
        scores the fit to p, not to the twisted q_d* (for the model fit to call; no gradient).
        """
        self._check_layout(td)
        weight, _ = self._weights(td)
        return self.nll_loss.per_member_nll(self._nll_batch(td, weight))

    def forward(self, td: TensorDictBase) -> TensorDict:
        self._check_layout(td)
        weight, info = self._weights(td)
        out = self.nll_loss(self._nll_batch(td, weight))
        out.update({n: v.detach() for n, v in info.items()})
        return out
