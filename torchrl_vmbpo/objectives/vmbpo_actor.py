"""VMBPO's E-step actor: the variational policy q_c against pi and Q (eq. 25)."""

from __future__ import annotations

from dataclasses import dataclass

from tensordict import TensorDict, TensorDictBase
from torch import distributions as D

from torchrl_vmbpo import keys
from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.objectives.common import KeyedLoss
from torchrl_vmbpo.objectives.vmbpo_critic import SoftValueSample, VMBPOCriticLoss


class VMBPOActorLoss(KeyedLoss):
    r"""Reverse-KL update of ``q_c`` towards ``pi(a|x) exp(Q(x, a)) / Z(x)`` (eq. 25).

    ``loss_actor = mean_x [log q_c(a|x) - log pi(a|x) - Q(x, a)]`` with ``a = f(x, eps)``
    reparameterised (drawn explicitly, whatever the exploration mode). Its minimiser over all
    policies is ``q_c* = pi exp(Q) / Z`` (eq. 15). ``Q`` is the critic's ``min_k Q_k`` (its twin
    minimum; see :class:`VMBPOCriticLoss`). With ``pi`` uniform (a constant log-density) this is
    ``eta`` times SAC's actor loss with ``alpha = 1 / eta`` (VMBPO's Q is ``eta`` times SAC's).

    ``log q_c - log pi`` is scored in pre-tanh space at the sample's own ``u`` when both are
    ``TanhNormal`` over one box (exact; the tanh Jacobians cancel), else ``pi`` is scored on the
    action with its own ``log_prob``. The prior is the critic's: with its ``uniform_prior_weight``
    ``beta``, ``log pi`` becomes ``(1 - beta) log pi + beta log U`` as in the V target (eq. 24).

    Ownership: this loss owns ``q_c`` (registered as ``variational_policy``); ``pi`` (owned by the
    M-step loss) and the critic (owner of Q) are borrowed: not registered, evaluated with their
    parameters detached, so ``loss_actor`` sends gradients to ``q_c`` only (through ``a`` into
    ``log pi`` and ``Q`` as well as directly).

    Args:
        variational_policy: ``q_c``, with ``in_keys`` (1: x) and ``get_dist(td)`` (a ProbabilisticActor).
        critic: the :class:`VMBPOCriticLoss` that owns Q.
        baseline_policy: ``pi``, with ``in_keys`` (1) and ``get_dist(td)``.

    Keys read (``set_keys``): ``observation``.

    Returns ``loss_actor`` (steps ``q_c``) and detached diagnostics ``policy_log_ratio`` (mean
    ``log q_c/pi``, a KL(q_c || pi) estimate), ``entropy`` (``-mean log q_c``), ``q_value``.

    Example:
        >>> import torch
        >>> from torchrl.data import Bounded
        >>> from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor, make_q_value, make_state_value
        >>> spec = Bounded(-1.0, 1.0, shape=(1,))
        >>> q_c, pi = make_tanh_gaussian_actor(3, spec, hidden=(8,)), make_tanh_gaussian_actor(3, spec, hidden=(8,))
        >>> critic = VMBPOCriticLoss(make_q_value(3, 1, hidden=(8,)), make_state_value(3, hidden=(8,)), q_c, pi,
        ...                          eta=1.0, gamma=0.99)
        >>> loss = VMBPOActorLoss(q_c, critic, pi)
        >>> out = loss(TensorDict({"observation": torch.randn(6, 3)}, [6]))
        >>> out["loss_actor"].shape, sorted(out.keys())
        (torch.Size([]), ['entropy', 'loss_actor', 'policy_log_ratio', 'q_value'])
    """

    @dataclass
    class _AcceptedKeys:
        """Batch entries read by the actor loss."""

        observation: str = keys.OBSERVATION

    default_keys = _AcceptedKeys
    _out_keys_ = ("loss_actor", "policy_log_ratio", "entropy", "q_value")

    def __init__(self, variational_policy, critic: VMBPOCriticLoss, baseline_policy):
        super().__init__()
        if not isinstance(critic, VMBPOCriticLoss):
            raise TypeError(f"critic must be a VMBPOCriticLoss (the owner of Q), got {type(critic).__name__}")
        fv.check_in_keys(variational_policy, 1, "variational_policy")
        fv.check_in_keys(baseline_policy, 1, "baseline_policy")
        for name, policy in (("variational_policy", variational_policy), ("baseline_policy", baseline_policy)):
            if not callable(getattr(policy, "get_dist", None)):
                raise TypeError(f"{name} must have a get_dist(td) method (e.g. a ProbabilisticActor)")
        if variational_policy is baseline_policy:
            raise ValueError("variational_policy and baseline_policy must be distinct modules (q_c and pi)")
        self.variational_policy = variational_policy
        self.__dict__["critic"] = critic  # borrowed: not a submodule
        self.__dict__["baseline_policy"] = baseline_policy

    def _read_keys(self) -> dict:
        return {"observation": self.tensor_keys.observation}

    def forward(self, td: TensorDictBase) -> TensorDict:
        return self.forward_with_value_sample(td)[0]

    def forward_with_value_sample(self, td: TensorDictBase) -> tuple[TensorDict, SoftValueSample]:
        """``forward``'s output and, detached, eq. 24's V target at the same draw: the reparameterised
        ``a ~ q_c(.|x)`` is a sample of q_c, and Q (online, parameters detached) and the prior are the
        critic's, so ``critic(td, value_sample=...)`` can regress V on it instead of drawing again."""
        return self.forward_with_draw(td)[:2]

    def forward_with_draw(
        self, td: TensorDictBase, baseline_dist: D.Distribution | None = None
    ) -> tuple[TensorDict, SoftValueSample, fv.PolicyDraw]:
        """:meth:`forward_with_value_sample`'s output and the draw ``a ~ q_c(.|x)`` itself, detached (for
        the M-step: ``MStepLoss.loss_at``). ``baseline_dist``: pi's distribution at ``td``'s observation
        built from DETACHED parameters (the caller's pass of pi, shared with the M-step); None evaluates
        pi here with its parameters detached."""
        obs = fv.fetch(td, self._read_keys(), type(self).__name__)["observation"]
        q_c = self.variational_policy
        dist_c = q_c.get_dist(fv.module_input(q_c, obs))
        preimage, action, log_q_c = fv.rsample_with_preimage(dist_c)  # a = f(x, eps; theta_c)
        if baseline_dist is None:
            with fv.frozen_params(self.baseline_policy) as pi:
                baseline_dist = pi.get_dist(fv.module_input(pi, obs))
        log_pi = fv.log_prob_at(baseline_dist, action, preimage, dist_c)
        mixed, prior = self.critic.e_step_prior(log_pi, log_q_c, dist_c)  # log pi (+ the critic's options)
        q = self.critic.action_value(obs, action)
        loss = (log_q_c - prior - q).mean()  # eq. 25
        policy_log_ratio = (log_q_c - mixed).detach()
        info = {"policy_log_ratio": policy_log_ratio.mean(), "entropy": -log_q_c.mean(), "q_value": q.mean()}
        out = TensorDict({"loss_actor": loss, **{n: v.detach() for n, v in info.items()}}, batch_size=[])
        value_target = fv.value_target(q, log_q_c, prior).detach()  # eq. 24's y_V at this a
        value_sample = SoftValueSample(value_target, policy_log_ratio, log_q_c.detach())
        return out, value_sample, fv.PolicyDraw.detached(dist_c, preimage, action)
