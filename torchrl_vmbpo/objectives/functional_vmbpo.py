"""Pure maths of VMBPO's five objectives (paper, Section 5; docs/vmbpo-spec.md).

Shape legend: B batch dims (any number, written ``[*B]``), A action dims. Every function here is
stateless and differentiable; the LossModules only fetch tensors, call these, and reduce.

Discounting follows form (ii) of the spec (the discounted ELBO): the next-state value enters every
target as ``gamma * (1 - terminated) * V(x')`` and the log-ratio ``nu`` is not discounted.
``terminated`` (not ``done``) stops bootstrapping: a time-limit truncation is not the end of the
process, so the value after it still counts.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch
from tensordict import TensorDict, TensorDictBase
from torch import distributions as D
from torch import nn
from torchrl.modules import TanhNormal

from torchrl_vmbpo.objectives.functional import assert_finite, check_feature_shape, effective_sample_size


def q_target(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    log_ratio: torch.Tensor,
    *,
    eta: float,
    gamma: float,
) -> torch.Tensor:
    """Critic target of eqs. 22-23: ``y_Q = eta r + gamma (1 - terminated) V'(x') - nu(x, a, x')``.

    All inputs ``[*B]``; ``terminated`` may be bool. ``nu`` estimates ``log q_d / p`` at the model's
    ``x'`` and is not discounted (it belongs to the step that produced ``x'``).

    Example:
        >>> q_target(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([False]), torch.tensor([0.5]),
        ...          eta=2.0, gamma=0.5)
        tensor([2.5000])
    """
    return eta * reward + gamma * (1.0 - terminated.to(next_value.dtype)) * next_value - log_ratio


def value_target(q_value: torch.Tensor, log_q_c: torch.Tensor, log_pi: torch.Tensor) -> torch.Tensor:
    """Value target of eq. 24: ``y_V = Q(x, a~) - log q_c(a~|x) + log pi(a~|x)`` with ``a~ ~ q_c``.

    Example:
        >>> value_target(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([-0.25]))
        tensor([0.2500])
    """
    return q_value - log_q_c + log_pi


def dynamics_log_weight(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    q_value: torch.Tensor,
    *,
    eta: float,
    gamma: float,
) -> torch.Tensor:
    """Log of eq. 19's weight: ``log w = eta r + gamma (1 - terminated) V'(x') - Q'(x, a)``.

    In exact arithmetic ``E_p[w | x, a] = 1`` (eq. 9), so ``w = q_d* / p``: the exponential twist of
    the true dynamics towards high-value next states (eq. 14).

    Example:
        >>> dynamics_log_weight(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([True]),
        ...                     torch.tensor([0.5]), eta=1.0, gamma=0.9)
        tensor([0.5000])
    """
    return eta * reward + gamma * (1.0 - terminated.to(next_value.dtype)) * next_value - q_value


def model_log_normaliser(
    sampled_next_value: torch.Tensor, terminated: torch.Tensor, *, gamma: float, dim: int = 0
) -> torch.Tensor:
    """Monte Carlo ``log E_{x~}[exp(gamma (1 - terminated) V'(x~))]`` over the sample dim ``dim``.

    ``sampled_next_value`` holds ``V'`` at next states ``x~`` drawn from the dynamics model at the
    same ``(x, a)`` (``[K, *B]`` with ``dim=0``); ``terminated`` (``[*B]``) is the real transition's
    flag, shared by its samples. This is the model's estimate of ``Q'(x, a) - eta r`` (eq. 9), the
    per-``(x, a)`` normaliser of eq. 19's weight (see :class:`VMBPODynamicsLoss`, ``normaliser``).

    Example:
        >>> values = torch.log(torch.tensor([[1.0], [3.0]]))  # exp V' = 1 and 3 at two samples
        >>> model_log_normaliser(values, torch.tensor([False]), gamma=1.0)  # log mean(1, 3) = log 2
        tensor([0.6931])
    """
    alive = 1.0 - terminated.to(sampled_next_value.dtype)
    k = sampled_next_value.shape[dim]
    return torch.logsumexp(gamma * alive * sampled_next_value, dim=dim) - torch.log(torch.tensor(float(k)))


def tempering_exponent(log_weight: torch.Tensor, *, min_ess: float, dim: int = 0, iterations: int = 30) -> torch.Tensor:
    """Largest ``beta`` in ``[0, 1]`` whose weights ``softmax(beta log w)`` keep an ESS of ``min_ess``.

    Adaptive tempering (as in annealed importance sampling / SMC): ``beta = 1`` when the raw weights
    already have a Kish effective sample size of at least ``min_ess * n`` along ``dim`` (``n`` its
    size), else the bisection root of ``ESS(beta) = min_ess * n`` (``ESS(0) = n``). Returns ``beta``
    shaped like ``log_weight`` without ``dim``. Tempering keeps the direction of the twist (the
    order of the weights) and only flattens it to what the batch can estimate.

    Example:
        >>> log_w = torch.tensor([0.0, 0.0, 0.0, 10.0])  # one spike: ESS 1 of 4; exact beta = log(3 + 12 ** 0.5) / 10
        >>> beta = tempering_exponent(log_w, min_ess=0.5)
        >>> round(beta.item(), 3), round(effective_sample_size(torch.softmax(beta * log_w, 0)).item(), 3)
        (0.187, 2.0)
        >>> tempering_exponent(torch.zeros(4), min_ess=0.5).item()  # already uniform: untouched
        1.0
    """
    if not 0.0 < min_ess <= 1.0:
        raise ValueError(f"min_ess must be in (0, 1], got {min_ess}")
    log_w = log_weight.movedim(dim, -1)
    log_w = log_w - log_w.max(-1, keepdim=True).values
    n = log_w.shape[-1]

    def ess_fraction(beta: torch.Tensor) -> torch.Tensor:
        return effective_sample_size(torch.softmax(beta.unsqueeze(-1) * log_w, -1)) / n

    low, high = torch.zeros(log_w.shape[:-1], dtype=log_w.dtype), torch.ones(log_w.shape[:-1], dtype=log_w.dtype)
    enough = ess_fraction(high) >= min_ess
    for _ in range(iterations):  # invariant: ESS(low) >= min_ess > ESS(high)
        mid = 0.5 * (low + high)
        ok = ess_fraction(mid) >= min_ess
        low, high = torch.where(ok, mid, low), torch.where(ok, high, mid)
    return torch.where(enough, torch.ones_like(low), low)


def normalise_weights(
    log_weight: torch.Tensor, *, dim: int = 0, max_weight: float | None = None, mix: float = 0.0
) -> torch.Tensor:
    """Self-normalised, optionally clipped and mixed weights with mean one along ``dim``.

    Steps, in order:

    1. self-normalise: ``w = n * softmax(log_weight, dim)`` (``n`` the size of ``dim``), so the
       weights average to one whatever offset ``log_weight`` carries;
    2. clip: ``w = min(w, max_weight)`` when ``max_weight`` is given. The clipped mass is dropped,
       not redistributed (truncated importance sampling), so the largest weight is at most
       ``max_weight`` and the mean may fall below one;
    3. mix with uniform weights: ``w = (1 - mix) w + mix``. ``mix = 1`` gives all-ones weights,
       i.e. the plain maximum-likelihood loss of MBPO.

    Example:
        >>> normalise_weights(torch.log(torch.tensor([1.0, 3.0])))
        tensor([0.5000, 1.5000])
        >>> normalise_weights(torch.log(torch.tensor([1.0, 3.0])), max_weight=1.2, mix=0.5)
        tensor([0.7500, 1.1000])
    """
    n = log_weight.shape[dim]
    weight = n * torch.softmax(log_weight, dim=dim)
    if max_weight is not None:
        weight = weight.clamp_max(max_weight)
    if mix:
        weight = (1.0 - mix) * weight + mix
    return weight


def prior_log_prob(log_pi: torch.Tensor, dist: D.Distribution, *, uniform_weight: float) -> torch.Tensor:
    """The E-step's prior log-density ``(1 - beta) log pi(a) + beta log U(a)``, ``U`` uniform on the box.

    With it, ``log q_c - prior`` is ``(1 - beta) log(q_c / pi) + beta log(q_c / U)``, i.e. the E-step's
    regulariser becomes ``(1 - beta) KL(q_c || pi) + beta KL(q_c || U)`` (``beta = uniform_weight``):
    ``beta = 0`` is the paper's, ``beta = 1`` is SAC's entropy (``alpha = 1 / eta``). Why: once the
    M-step copies ``pi <- q_c``, ``KL(q_c || pi)`` keeps no entropy, and a tanh-Gaussian ``pi`` centred
    on zero penalises large actions; on Pendulum both left ``q_c`` near-deterministic (pre-tanh scale
    0.01-0.07) at small torques before the swing-up was found (README, "VMBPO defaults"). The box is
    read from ``dist`` (``low``/``high`` of a TanhNormal, ``[*B, A]`` actions -> ``[*B]``).

    Example:
        >>> dist = TanhNormal(torch.zeros(1, 2), torch.ones(1, 2), low=-2.0, high=2.0)
        >>> prior_log_prob(torch.tensor([0.5]), dist, uniform_weight=0.25)  # 0.75 * 0.5 + 0.25 * (-2 log 4)
        tensor([-0.3181])
    """
    if uniform_weight == 0.0:
        return log_pi
    low, high = getattr(dist, "low", None), getattr(dist, "high", None)
    if low is None or high is None:
        raise TypeError(
            f"a uniform prior needs an action box: the policy's distribution {type(dist).__name__} has no low/high"
        )
    width = torch.as_tensor(high, dtype=log_pi.dtype) - torch.as_tensor(low, dtype=log_pi.dtype)
    event = dist.event_shape[-1] if len(dist.event_shape) else 1
    log_uniform = -torch.log(width.expand(*width.shape[:-1], event) if width.ndim else width.expand(event)).sum(-1)
    return (1.0 - uniform_weight) * log_pi + uniform_weight * log_uniform


def entropy_constrained_prior(prior: torch.Tensor, log_q_c: torch.Tensor, entropy_weight) -> torch.Tensor:
    """``prior - alpha_H log q_c(a)``: the E-step regulariser ``E[log q_c - prior]`` gains ``-alpha_H H(q_c)``.

    The Lagrangian term of the constraint ``H(q_c) >= target`` (SAC's temperature, here on top of the
    paper's ``KL(q_c || pi)``, which keeps no entropy once pi follows q_c: on Hopper-v5 the critic then
    diverged; benchmarks/tuning/vmbpo-hopper). ``entropy_weight`` is ``alpha_H`` in the critic's units
    (``eta`` x SAC's alpha), a number or a detached tensor; ``log_q_c`` carries the actor's gradient.

    Example:
        >>> entropy_constrained_prior(torch.tensor([-1.0]), torch.tensor([0.5]), 2.0)  # -1 - 2 * 0.5
        tensor([-2.])
    """
    return prior - entropy_weight * log_q_c


def entropy_dual_loss(log_entropy_weight: torch.Tensor, log_q_c: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC's temperature loss ``-log alpha_H (log q_c(a~) + target)``: descent raises ``alpha_H`` while
    the entropy estimate ``-log q_c`` is below ``target`` and lowers it above.

    Example:
        >>> log_alpha = torch.zeros((), requires_grad=True)
        >>> entropy_dual_loss(log_alpha, torch.tensor([2.0]), target_entropy=-1.0).backward()
        >>> float(log_alpha.grad)  # entropy -2 < -1: a negative gradient, so alpha_H grows
        -1.0
    """
    return -(log_entropy_weight * (log_q_c.detach() + target_entropy)).mean()


def log_ratio_dual(nu_q: torch.Tensor, nu_p: torch.Tensor) -> torch.Tensor:
    """The dual objective of eqs. 20-21: ``mean nu(x'_q) - mean exp nu(x'_p)`` (to be maximised).

    ``nu_q`` is ``nu`` at next states drawn from ``q_d``, ``nu_p`` at real next states (from ``p``).
    The pointwise maximiser is ``nu = log(q_d / p)`` (Nguyen et al., 2008); the maximum equals
    ``KL(q_d || p) - 1``, so ``dual + 1`` is a (lower-bound) estimate of ``KL(q_d || p)``.

    Example:
        >>> log_ratio_dual(torch.zeros(4), torch.zeros(4))  # nu = 0 is optimal when q_d = p: KL = 0
        tensor(-1.)
    """
    return nu_q.mean() - nu_p.exp().mean()


def diag_gaussian_kl(
    loc_p: torch.Tensor, scale_p: torch.Tensor, loc_q: torch.Tensor, scale_q: torch.Tensor
) -> torch.Tensor:
    """``KL(N(loc_p, scale_p^2) || N(loc_q, scale_q^2))`` for diagonal Gaussians: ``[*B, A] -> [*B]``.

    Per dimension ``log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2``, summed over A.

    Example:
        >>> diag_gaussian_kl(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2))
        tensor([1.])
    """
    var_ratio = (scale_p / scale_q).pow(2)
    mean_term = ((loc_p - loc_q) / scale_q).pow(2)
    return 0.5 * (var_ratio + mean_term - 1.0 - var_ratio.log()).sum(-1)


def pre_tanh_gaussian(dist: D.Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` of the Gaussian under a tanh-Gaussian (or plain Gaussian) distribution.

    Walks ``base_dist`` links (``TransformedDistribution`` -> ``Independent`` -> ``Normal``).

    Example:
        >>> loc, scale = pre_tanh_gaussian(TanhNormal(torch.zeros(2), torch.ones(2)))
        >>> loc.tolist(), scale.tolist()
        ([0.0, 0.0], [1.0, 1.0])
    """
    root = dist
    while not isinstance(root, D.Normal):
        if not hasattr(root, "base_dist"):
            raise TypeError(
                f"expected a (tanh-)Gaussian policy distribution (TanhNormal, Normal, or a transformed / "
                f"Independent Normal), got {type(dist).__name__}"
            )
        root = root.base_dist
    return root.loc, root.scale


class PolicyDraw(NamedTuple):
    """One draw ``a = T(u) ~ q(.|x)`` per row and, detached, the pre-tanh Gaussian it came from:
    ``preimage`` ``u`` (None for an untransformed distribution), ``action``, ``loc`` and ``scale``, and
    ``sampler``, the distribution itself (read only for its type and action box by :func:`log_prob_at`).
    The E-step actor's draw of eq. 25, handed to the M-step (``MStepLoss.loss_at``) so that eq. 27 fits
    pi to the same sample of q_c instead of drawing again."""

    preimage: torch.Tensor | None
    action: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor
    sampler: D.Distribution

    @classmethod
    def detached(cls, dist: D.Distribution, preimage: torch.Tensor | None, action: torch.Tensor) -> PolicyDraw:
        loc, scale = pre_tanh_gaussian(dist)
        return cls(None if preimage is None else preimage.detach(), action.detach(), loc.detach(), scale.detach(), dist)


def rsample_with_preimage(dist: D.Distribution) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Reparameterised ``(u, a, log dist(a))`` with ``a = T(u)`` for a transformed distribution.

    For a tanh-Gaussian the log-probability is scored at the exact pre-tanh sample ``u`` (as
    TorchRL's ``TanhNormal.rsample_and_log_prob``): inverting a saturated ``tanh`` would return a
    different ``u`` and a wrong score. ``u`` is returned so that a second policy can be scored at the
    same point (:func:`log_prob_at`). For a non-transformed distribution ``u`` is ``None``.

    Example:
        >>> u, a, log_prob = rsample_with_preimage(TanhNormal(torch.zeros(5, 2), torch.ones(5, 2)))
        >>> u.shape, a.shape, log_prob.shape
        (torch.Size([5, 2]), torch.Size([5, 2]), torch.Size([5]))
    """
    if not isinstance(dist, D.TransformedDistribution):
        action = dist.rsample()
        return None, action, dist.log_prob(action)
    preimage = dist.base_dist.rsample()
    return preimage, *_push_and_score(dist, preimage)


def log_prob_at(
    dist: D.Distribution,
    action: torch.Tensor,
    preimage: torch.Tensor | None = None,
    sampler: D.Distribution | None = None,
) -> torch.Tensor:
    """``log dist(action)``, scored in pre-tanh space when that is exact and safe.

    If ``dist`` and ``sampler`` (the distribution that produced ``action = T(preimage)``) are both
    ``TanhNormal`` over the same box, the two share the bijection ``T`` and ``log dist(a)`` is
    ``log N(u; loc, scale) - log|det dT/du|`` at the sampler's own ``u``: exact, and finite even
    where ``tanh`` saturates in floating point (under ``torch.compile``, TanhNormals whose boxes have one
    shape are taken to share the box, as actors built from one action spec do). Any other ``dist`` (e.g. a uniform baseline policy
    with a constant log-density) is scored on the action with its own ``log_prob``.

    Example:
        >>> sampler, other = TanhNormal(torch.zeros(3, 1), torch.ones(3, 1)), TanhNormal(torch.ones(3, 1), torch.ones(3, 1))
        >>> u, a, _ = rsample_with_preimage(sampler)
        >>> torch.allclose(log_prob_at(other, a, u, sampler), other.log_prob(a), atol=1e-4)
        True
    """
    if preimage is not None and sampler is not None and _same_tanh_box(dist, sampler):
        return _push_and_score(dist, preimage)[1]
    return dist.log_prob(action)


def _same_tanh_box(first: D.Distribution, second: D.Distribution) -> bool:
    if not (isinstance(first, TanhNormal) and isinstance(second, TanhNormal)):
        return False
    if torch.compiler.is_compiling():  # comparing the values would branch on data: trust boxes of one shape
        return torch.broadcast_shapes(first.low.shape, second.low.shape) == first.low.shape == second.low.shape
    try:
        return bool((first.low == second.low).all() and (first.high == second.high).all())
    except RuntimeError:  # shapes that do not broadcast: different boxes
        return False


def _push_and_score(dist: D.TransformedDistribution, preimage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T(u), log p_base(u) - log|det dT/du|)`` summed over the event dims."""
    transform = dist.transforms[0] if len(dist.transforms) == 1 else D.ComposeTransform(dist.transforms)
    action = transform(preimage)
    log_det = transform.log_abs_det_jacobian(preimage, action)
    log_prob = dist.base_dist.log_prob(preimage)
    while log_det.ndim > log_prob.ndim:  # per-dimension Jacobian terms: sum the event dims
        log_det = log_det.sum(-1)
    return action, log_prob - log_det


# --- Batch and module access shared by the VMBPO losses (tensordict plumbing, no maths) ----------


def at_bound_fraction(
    nu: torch.Tensor, bound: float, *, mask: torch.Tensor | None = None, tol: float = 0.01
) -> torch.Tensor:
    """Fraction of the ``nu`` values (those where ``mask``, if given) within ``tol`` (relative) of ``+-bound``:
    where eq. 21's truncated optimum ``clip(log q_d/p, +-bound)`` is active. 0 when no value is selected.

    Example:
        >>> at_bound_fraction(torch.tensor([0.0, 0.499, -0.5, 0.2]), 0.5)
        tensor(0.5000)
    """
    at = (nu.abs() >= (1.0 - tol) * bound).to(nu.dtype)
    if mask is None:
        return at.mean()
    mask = mask.to(nu.dtype)
    return (at * mask).sum() / mask.sum().clamp_min(1.0)


def fetch(td: TensorDictBase, named_keys: dict, where: str) -> dict:
    """``{name: td[key]}`` for every ``name: key``; KeyError naming the missing and accepted keys.

    Also raises ValueError if an entry holds NaN or inf (:func:`assert_finite`) and BatchShapeError if one
    lacks its feature dimension (:func:`check_feature_shape`); under ``torch.compile`` these checks (which
    branch on the data) are skipped.

    Example:
        >>> td = TensorDict({"observation": torch.zeros(2, 3)}, [2])
        >>> fetch(td, {"observation": "observation"}, "MyLoss")["observation"].shape
        torch.Size([2, 3])
    """
    if torch.compiler.is_compiling():  # the checks branch on data; an eager call has made them
        return {name: td.get(key) for name, key in named_keys.items()}
    missing = [key for key in named_keys.values() if td.get(key, None) is None]
    if missing:
        raise KeyError(
            f"{where} needs the batch entries {named_keys} (rename them with the loss's set_keys; next-step "
            f"entries are read under 'next'); missing {missing}; the batch has {list(td.keys(True, True))}"
        )
    assert_finite(td, list(named_keys.values()), where)
    for key in named_keys.values():
        check_feature_shape(td, key, where)
    return {name: td.get(key) for name, key in named_keys.items()}


def module_input(module, *tensors: torch.Tensor) -> TensorDict:
    """A tensordict that fills ``module.in_keys`` by position with ``tensors`` (batch = ``tensors[0]``'s).

    Lets a loss evaluate a network at inputs that are not in the batch (a fresh action, a next state).
    """
    in_keys = list(module.in_keys)
    if len(in_keys) != len(tensors):
        raise ValueError(f"{type(module).__name__} reads in_keys {in_keys}, but {len(tensors)} inputs were given")
    return TensorDict(dict(zip(in_keys, tensors)), batch_size=tensors[0].shape[:-1])


def check_in_keys(module, count: int, argument: str) -> None:
    """Constructor check: ``module`` must have ``count`` in_keys (filled by position by the losses)."""
    in_keys = getattr(module, "in_keys", None)
    if in_keys is None or len(in_keys) != count:
        raise ValueError(f"{argument} must be a TensorDictModule with {count} in_keys, got in_keys={in_keys}")


@contextmanager
def frozen_params(module: nn.Module):
    """Run ``module`` with its parameters detached: gradients reach its inputs, never its weights.

    Used where a loss needs another loss's network inside its own graph (e.g. ``log pi(a)`` with
    ``a`` reparameterised in the actor loss): the other network keeps one owner.
    """
    params = TensorDict.from_module(module).detach()
    # preserve_module_state=False: swap plain tensors in (the default would re-wrap them as Parameters).
    with params.to_module(module, preserve_module_state=False):
        yield module
