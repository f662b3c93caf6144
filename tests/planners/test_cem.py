"""PETS planning: CEM on a known toy model, trajectory sampling (TS1 / TS-inf), post-done masking."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.envs.termination import never_done
from torchrl_vmbpo.envs.world_model import WorldModelEnv
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.planners.cem import cem_search
from torchrl_vmbpo.planners.pets import PETSPlanner
from torchrl_vmbpo.planners.trajectory_sampling import particle_returns


def _linear_model(obs_dim, act_dim, *, action_gain=1.0, member_offsets=None, num_elites=None):
    """A known, (numerically) deterministic model: x' = x + action_gain * a + offset[member], r = 0.

    One linear layer (hidden=()), identity input normaliser, log-variance pinned at -40 (std 2e-9).
    """
    members = 7 if member_offsets is None else len(member_offsets)
    model = DynamicsModel(obs_dim, act_dim, num_members=members, num_elites=num_elites or min(5, members), hidden=())
    layer = model.ensemble.output_layer
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        out = obs_dim + 1
        for i in range(min(obs_dim, act_dim)):
            layer.weight[:, obs_dim + i, i] = action_gain
        if member_offsets is not None:
            layer.bias[:, 0, :obs_dim] = torch.as_tensor(member_offsets, dtype=torch.float32)[:, None]
        layer.bias[:, 0, out:] = -100.0  # raw log-variance -> the lower bound
        model.ensemble.min_logvar.fill_(-40.0)
    return model


def _position_reward(obs, action, next_obs):
    return next_obs[..., :1]


def test_cem_improves_the_planned_return_over_its_iterations_on_a_known_toy_model():
    # Pendulum's specs (3-D observation, action in [-2, 2]) over a known model: x' = x + (a, 0, 0),
    # r = -|x'|^2, x0 = (1.5, 0.3, 0). The best plan is a_0 = -1.5, then 0, with return
    # -H * 0.09; the initial (mid-range, all-zero) plan returns -H |x0|^2 = -H * 2.34.
    model = _linear_model(3, 1)
    env = WorldModelEnv(
        model,
        make_env("Pendulum-v1"),
        termination_fn=never_done,
        reward_fn=lambda o, a, n: -n.pow(2).sum(-1, keepdim=True),
    )
    horizon = 4
    planner = PETSPlanner(env, planning_horizon=horizon, population=200, elites=20, iterations=6, particles=5)
    x0 = torch.tensor([1.5, 0.3, 0.0])
    plan, history = planner.plan(x0)

    elite = history["elite_score"]
    assert elite.shape == (6,)
    assert elite[-1] > elite[0] + 0.5 and bool((elite[1:] >= elite[:-1] - 1e-3).all())  # improves, ~monotone
    assert history["population_score"][-1] > history["population_score"][0] + 1.0
    reward_fn = env.world_model.reward_fn
    initial = particle_returns(model, x0, planner.initial_plan(torch.Size([]))[None], particles=5, reward_fn=reward_fn)
    final = particle_returns(model, x0, plan[None], particles=5, reward_fn=reward_fn)
    torch.testing.assert_close(initial.mean(), torch.tensor(-horizon * 2.34))
    assert final.mean() > -horizon * 0.09 - 0.05
    torch.testing.assert_close(plan[0], torch.tensor([-1.5]), atol=0.2, rtol=0)

    # As a policy module: the first action of the CEM mean, written at "action".
    td = planner(TensorDict({"observation": x0}, []))
    torch.testing.assert_close(td["action"], torch.tensor([-1.5]), atol=0.2, rtol=0)


def test_cem_samples_stay_inside_the_action_bounds():
    lo, hi = torch.tensor([-1.0, 0.0]), torch.tensor([2.0, 0.5])
    seen = []

    def score(seqs):
        seen.append(seqs)
        return ((seqs - lo) / (hi - lo)).sum((-2, -1))  # pushes every action to its upper bound

    start = ((lo + hi) / 2).expand(3, 2)
    plan, _ = cem_search(score, start, lo, hi, population=64, elites=8, iterations=5)
    samples = torch.cat(seen)
    assert bool((samples >= lo).all() and (samples <= hi).all())
    progress = (plan - start) / (hi - start)  # 0 at the start, 1 at the upper bound
    assert bool((progress > 0).all()) and progress.mean() > 0.5


@pytest.mark.parametrize("particles, num_elites", [(20, 5), (7, 3)])
def test_ts_inf_particles_keep_their_member_for_the_whole_rollout(particles, num_elites):
    # Member e moves x by offset[e] per step (action gain 0), reward = x'. A particle that keeps
    # member e returns sum_t (x0 + t offset[e]) = H x0 + offset[e] H (H + 1) / 2 exactly.
    offsets = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    model = _linear_model(1, 1, action_gain=0.0, member_offsets=offsets, num_elites=num_elites)
    model.set_elites(torch.tensor([6, 1, 3, 0, 2][:num_elites]))
    horizon, x0 = 6, 0.5
    actions = torch.zeros(2, 10, horizon, 1)  # two planning problems, 10 candidates each
    returns = particle_returns(
        model, torch.full((2, 1), x0), actions, particles=particles, propagation="ts_inf", reward_fn=_position_reward
    )
    assert returns.shape == (2, 10, particles)
    pure = horizon * x0 + offsets[model.elites] * horizon * (horizon + 1) / 2  # one value per elite
    member = (returns[..., None] - pure).abs().argmin(-1)
    torch.testing.assert_close(returns, pure[member], atol=1e-4, rtol=0)
    # Every candidate spreads its particles evenly over the elites.
    counts = torch.nn.functional.one_hot(member, num_elites).sum(-2)
    assert counts.min() >= particles // num_elites and counts.max() <= -(-particles // num_elites)

    # TS1 re-draws members every step: particles mix members, so most returns are no pure value.
    mixed = particle_returns(
        model, torch.full((2, 1), x0), actions, particles=particles, propagation="ts1", reward_fn=_position_reward
    )
    off_pure = (mixed[..., None] - pure).abs().min(-1).values > 1e-3
    assert off_pure.float().mean() > 0.5


def test_ts_inf_member_assignment_is_random_across_calls():
    offsets = torch.arange(7.0)
    model = _linear_model(1, 1, action_gain=0.0, member_offsets=offsets, num_elites=5)
    pure = offsets[model.elites] * 3.0  # H = 2, x0 = 0: offset * (1 + 2)
    firsts = set()
    for _ in range(20):
        r = particle_returns(model, torch.zeros(1), torch.zeros(1, 2, 1), particles=5, reward_fn=_position_reward)
        firsts.add(int((r[0, 0] - pure).abs().argmin()))
    assert len(firsts) >= 3  # particle 0's member changes between calls


@pytest.mark.parametrize("propagation", ["ts_inf", "ts1"])
def test_rewards_after_the_first_terminal_state_are_masked(propagation):
    # x' = x + a with a = 1: x_t = t; reward 1 per step; terminal once x' >= 3 (at step 3). The
    # reward of the terminating step counts, later ones do not: return 3 for any horizon >= 3.
    model = _linear_model(1, 1)
    returns = particle_returns(
        model,
        torch.zeros(1),
        torch.ones(4, 8, 1),
        particles=6,
        propagation=propagation,
        termination_fn=lambda x: x >= 3.0 - 1e-3,
        reward_fn=lambda o, a, n: torch.ones_like(n),
    )
    torch.testing.assert_close(returns, torch.full((4, 6), 3.0))


def test_planner_warm_start_is_kept_per_episode_and_per_exploration_mode():
    model = _linear_model(1, 1)
    real = make_env("Pendulum-v1")
    env = WorldModelEnv(model, real, termination_fn=never_done, reward_fn=lambda o, a, n: -(n - 1.0).pow(2))
    planner = PETSPlanner(env, planning_horizon=3, population=50, elites=5, iterations=3, particles=2)
    td = TensorDict({"observation": torch.zeros(1), "is_init": torch.ones(1, dtype=torch.bool)}, [])
    with set_exploration_type(ExplorationType.RANDOM):
        planner(td.clone())
    assert set(planner._warm_start) == {"random"}
    warm = planner._warm_start["random"]
    torch.testing.assert_close(warm[-1], planner.initial_plan(torch.Size([]))[-1])  # shifted, padded with mid
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        planner(td.clone())
    assert set(planner._warm_start) == {"random", "deterministic"}
    torch.testing.assert_close(planner._warm_start["random"], warm)  # evaluation left training's plan alone
    planner.reset()
    assert planner._warm_start == {}


def test_planner_on_a_device_plans_with_a_copy_of_the_dynamics_that_follows_sync():
    # The copy path runs whenever a device is named (here the CPU, so CI exercises it without a GPU).
    model = _linear_model(3, 1, action_gain=1.0)
    env = WorldModelEnv(
        model,
        make_env("Pendulum-v1"),
        termination_fn=never_done,
        reward_fn=lambda o, a, n: -n.pow(2).sum(-1, keepdim=True),
    )
    planner = PETSPlanner(env, planning_horizon=2, population=100, elites=10, iterations=4, particles=2, device="cpu")
    assert planner.dynamics is not model and not any(k.startswith("_device") for k in planner.state_dict())
    x0 = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(planner.plan(x0)[0][0], torch.tensor([-1.0]), atol=0.2, rtol=0)
    with torch.no_grad():  # the env's model now moves x by -a: the best first action flips sign
        model.ensemble.output_layer.weight[:, 3, 0] = -1.0
    torch.testing.assert_close(planner.plan(x0)[0][0], torch.tensor([-1.0]), atol=0.2, rtol=0)  # stale copy
    planner.sync_dynamics()
    torch.testing.assert_close(planner.plan(x0)[0][0], torch.tensor([1.0]), atol=0.2, rtol=0)
    td = planner(TensorDict({"observation": x0}, []))
    assert td["action"].device == x0.device


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(propagation="ts2"), "propagation must be one of"),
        (dict(elites=500), "elites must be in"),
        (dict(particles=0), "particles must be an integer"),
        (dict(momentum=1.0), "momentum must be in"),
    ],
)
def test_planner_rejects_bad_settings(kwargs, message):
    real = make_env("Pendulum-v1")
    env = WorldModelEnv(DynamicsModel(3, 1, hidden=(8,)), real, termination_fn=never_done)
    with pytest.raises((ValueError, TypeError), match=message):
        PETSPlanner(env, **kwargs)
    batched = WorldModelEnv(DynamicsModel(3, 1, hidden=(8,)), real, termination_fn=never_done, batch_size=[2])
    with pytest.raises(ValueError, match="batch_size"):
        PETSPlanner(batched)
