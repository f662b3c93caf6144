"""PETS trajectory sampling: returns of candidate action sequences under the probabilistic ensemble.

Chua et al. (2018), Section 5: each candidate action sequence is scored by ``P`` particles, each
propagated through the learned Gaussian ensemble with a member chosen at random,

  * ``"ts1"``:   every particle re-draws its member at every step (:meth:`DynamicsModel.sample`);
  * ``"ts_inf"``: every particle keeps one member for the whole horizon,

and the particles' returns are averaged. Rewards after the first terminal state are masked out
(the reward of the step that terminates still counts, as TorchRL's planners do).

Cost layout (the planner's hot loop): all ``B x N x P`` rows (batch, candidates, particles) go
through the ensemble in ONE batched matmul per layer. For TS-inf the rows never move: particle
``p`` belongs to member slot ``p % K`` of the ``K`` elites (the slot-to-elite map is a fresh random
permutation per call, so a particle's member is uniform over the elites and the ``P`` particles of
every candidate are spread evenly), and the state is kept member-major, ``[K, B*N*m, D]`` with
``m = ceil(P / K)`` particle slots per member, so each step is
``GaussianEnsemble.forward_members_first`` without any gather. Slots beyond ``P`` (when ``K`` does not
divide ``P``) are computed and ignored.
"""

from __future__ import annotations

import torch

from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.models.dynamics import DynamicsModel

PROPAGATIONS = ("ts1", "ts_inf")


def check_propagation(propagation: str) -> str:
    if propagation not in PROPAGATIONS:
        raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {propagation!r}")
    return propagation


@torch.no_grad()
def particle_returns(
    dynamics: DynamicsModel,
    obs: torch.Tensor,
    actions: torch.Tensor,
    *,
    particles: int,
    propagation: str = "ts_inf",
    termination_fn: TerminationFn | None = None,
    reward_fn: RewardFn | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Undiscounted return of every particle of every candidate: ``[*B, D], [*B, N, H, A] -> [*B, N, P]``.

    Args:
        dynamics: the learned ensemble; particles use its elite members.
        obs: the current (real) observation of each of the ``*B`` planning problems.
        actions: ``N`` candidate action sequences of length ``H`` per problem.
        particles: ``P``, particles per candidate.
        propagation: ``"ts_inf"`` (a particle keeps its member) or ``"ts1"`` (re-drawn every step).
        termination_fn: ``next_obs -> bool [..., 1]``; rewards after the first terminal state are
            masked. ``None``: never terminates.
        reward_fn: known reward ``(obs, action, next_obs) -> [..., 1]``; ``None``: the model's reward.
        generator: optional torch generator for the member assignment and the Gaussian noise.

    Example:
        >>> model = DynamicsModel(3, 1, hidden=(16,))
        >>> returns = particle_returns(model, torch.zeros(3), torch.zeros(8, 10, 1), particles=4)
        >>> returns.shape  # [N candidates, P particles]
        torch.Size([8, 4])
    """
    check_propagation(propagation)
    if particles < 1:
        raise ValueError(f"particles must be >= 1, got {particles}")
    if actions.ndim < 3 or actions.shape[:-3] != obs.shape[:-1]:
        raise ValueError(
            f"actions must be [*B, N, H, A] with *B = obs batch {tuple(obs.shape[:-1])}, got {tuple(actions.shape)}"
        )
    if propagation == "ts_inf":
        return _returns_ts_inf(dynamics, obs, actions, particles, termination_fn, reward_fn, generator)
    return _returns_ts1(dynamics, obs, actions, particles, termination_fn, reward_fn, generator)


def _permutation(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random permutation of ``range(n)`` on ``device``.

    On a GPU it is drawn there (argsort of uniforms), so a CUDA-graph capture of the planner has no
    host-to-device copy in it; on the CPU it is ``randperm`` (the CPU generator's stream).
    """
    if device.type == "cuda":
        return torch.rand(n, device=device, generator=generator).argsort()
    return torch.randperm(n, generator=generator).to(device)


def _accumulate(ret, alive, obs, action, next_obs, reward, termination_fn, reward_fn):
    """Add one step's reward where the particle has not terminated yet; returns the new alive mask."""
    if reward_fn is not None:
        reward = reward_fn(obs, action, next_obs)
    # where, not a product: a terminated particle's state may diverge to inf/NaN.
    ret += torch.where(alive, reward[..., 0], 0.0)
    if termination_fn is not None:
        alive = alive & ~termination_fn(next_obs)[..., 0]
    return alive


def _returns_ts_inf(dynamics, obs, actions, particles, termination_fn, reward_fn, generator):
    batch, (n, horizon, act_dim), obs_dim = obs.shape[:-1], actions.shape[-3:], obs.shape[-1]
    b = batch.numel()
    k = dynamics.num_elites
    m = -(-particles // k)  # particle slots per member
    members = dynamics.elites[_permutation(k, dynamics.elites.device, generator)]  # slot s -> elite members[s]
    rows = b * n * m
    # Member-major layout [K, (b, n, j)]: particle p = j*K + s sits in member slot s, position j.
    state = obs.reshape(1, b, 1, 1, obs_dim).expand(k, b, n, m, obs_dim).reshape(k, rows, obs_dim)
    acts = actions.reshape(1, b, n, 1, horizon, act_dim).expand(k, b, n, m, horizon, act_dim)
    acts = acts.reshape(k, rows, horizon, act_dim)
    normalizer, ensemble = dynamics.input_normalizer, dynamics.ensemble
    weights = ensemble.member_weights(members)  # once per rollout: the assignment is fixed (TS-inf)
    ret = torch.zeros(k, rows, dtype=obs.dtype, device=obs.device)
    alive = torch.ones(k, rows, dtype=torch.bool, device=obs.device)
    for t in range(horizon):
        action = acts[:, :, t]
        mean, logvar = ensemble.forward_members_first(normalizer(dynamics.model_inputs(state, action)), weights=weights)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        step = mean + noise * (0.5 * logvar).exp()
        next_state = state + step[..., :-1]  # the model predicts [x' - x, r]
        alive = _accumulate(ret, alive, state, action, next_state, step[..., -1:], termination_fn, reward_fn)
        state = next_state
    # [K, b, n, m] -> [b, n, m*K] so that index j*K + s is particle p; drop the padding slots.
    per_particle = ret.reshape(k, b, n, m).permute(1, 2, 3, 0).reshape(b, n, m * k)[..., :particles]
    return per_particle.reshape(*batch, n, particles)


def _returns_ts1(dynamics, obs, actions, particles, termination_fn, reward_fn, generator):
    batch, (n, horizon, act_dim), obs_dim = obs.shape[:-1], actions.shape[-3:], obs.shape[-1]
    b = batch.numel()
    rows = b * n * particles
    state = obs.reshape(b, 1, 1, obs_dim).expand(b, n, particles, obs_dim).reshape(rows, obs_dim)
    acts = actions.reshape(b, n, 1, horizon, act_dim).expand(b, n, particles, horizon, act_dim)
    acts = acts.reshape(rows, horizon, act_dim)
    ret = torch.zeros(rows, dtype=obs.dtype, device=obs.device)
    alive = torch.ones(rows, dtype=torch.bool, device=obs.device)
    for t in range(horizon):
        action = acts[:, t]
        # A fresh balanced random elite per row and step: exactly DynamicsModel.sample.
        next_state, reward = dynamics.sample(state, action, generator=generator)
        alive = _accumulate(ret, alive, state, action, next_state, reward, termination_fn, reward_fn)
        state = next_state
    return ret.reshape(*batch, n, particles)
