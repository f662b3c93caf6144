import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch

from torchrl_vmbpo.envs.reacher7dof import (
    ENV_ID,
    Reacher7DoFEnv,
    reacher7dof_end_effector,
    reacher7dof_reward,
    reacher7dof_termination,
    register_envs,
)

# Joint angles with the elbow bent by -pi/2: the forearm then points along +z, so the end effector
# is at shoulder (0, -0.188, 0) + (0.1 + 0.4, 0, 0) + (0, 0, 0.321 + 0.16828).
BENT_ELBOW = [0.0, 0.0, 0.0, -math.pi / 2, 0.0, 0.0, 0.0]
BENT_ELBOW_END_EFFECTOR = (0.5, -0.188, 0.48928)


def _rollout(env, seed, steps, action_seed=0):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    observations, actions, rewards, infos = [obs], [], [], []
    for _ in range(steps):
        action = rng.uniform(-20, 20, size=7).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        assert not terminated and not truncated
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        infos.append(info)
    return np.stack(observations), np.stack(actions), np.array(rewards), infos


def test_spaces_and_physics_match_the_reference_facts():
    env = Reacher7DoFEnv()
    assert env.observation_space.shape == (17,) and env.observation_space.dtype == np.float64
    assert env.action_space.shape == (7,) and env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, -20.0)
    np.testing.assert_array_equal(env.action_space.high, 20.0)
    assert env.model.opt.timestep == 0.01 and env.frame_skip == 2 and env.dt == pytest.approx(0.02)
    assert env.model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
    np.testing.assert_array_equal(env.model.opt.gravity, 0.0)
    assert env.model.nq == env.model.nv == env.model.nu == 7
    obs, _ = env.reset(seed=0)
    assert obs.shape == (17,) and obs.dtype == np.float64 and env.observation_space.contains(obs)
    env.close()


def test_end_effector_hand_computed_configurations():
    zero = reacher7dof_end_effector(torch.zeros(7, dtype=torch.float64))
    torch.testing.assert_close(zero, torch.tensor([0.98928, -0.188, 0.0], dtype=torch.float64))
    # Shoulder pan by +pi/2 swings the straight arm onto +y.
    pan = reacher7dof_end_effector(torch.tensor([math.pi / 2, 0, 0, 0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(pan, torch.tensor([0.0, -0.188 + 0.98928, 0.0], dtype=torch.float64))
    bent = reacher7dof_end_effector(torch.tensor(BENT_ELBOW, dtype=torch.float64))
    torch.testing.assert_close(bent, torch.tensor(BENT_ELBOW_END_EFFECTOR, dtype=torch.float64))


def test_end_effector_matches_mujoco_for_random_configurations():
    env = Reacher7DoFEnv()
    site = env.model.site("end_effector").id
    angles = np.random.default_rng(0).uniform(-math.pi, math.pi, size=(4, 25, 7))
    expected = np.empty((4, 25, 3))
    for index in np.ndindex(4, 25):
        env.data.qpos[:] = angles[index]
        mujoco.mj_kinematics(env.model, env.data)
        expected[index] = env.data.site_xpos[site]
    got = reacher7dof_end_effector(torch.as_tensor(angles))  # batched [4, 25, 7] -> [4, 25, 3]
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    # The wrist roll turns about the axis the end effector lies on: it never moves it.
    rolled = torch.as_tensor(angles).clone()
    rolled[..., 6] += 1.0
    torch.testing.assert_close(reacher7dof_end_effector(rolled), got)
    env.close()


def test_reward_function_hand_computed():
    obs = torch.zeros(17, dtype=torch.float64)
    obs[:7] = torch.tensor(BENT_ELBOW, dtype=torch.float64)
    obs[7:10] = torch.tensor([0.0, 0.25, 0.0])
    action = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0, 0.0, -1.0], dtype=torch.float64)
    distance = 0.5**2 + (0.25 + 0.188) ** 2 + 0.48928**2
    expected = -distance - 0.01 * (1 + 4 + 1)
    reward = reacher7dof_reward(obs, action)
    assert reward.shape == (1,)
    assert reward.item() == pytest.approx(expected, abs=1e-12)


def test_env_reward_hand_computed_at_rest():
    # Zero gravity, zero velocity and zero torque: the arm stays put, so the reward is the
    # squared distance of the hand-computed end effector to the goal.
    env = Reacher7DoFEnv()
    env.reset(seed=0)
    env.data.mocap_pos[0] = [0.0, 0.25, 0.0]
    env.set_state(np.array(BENT_ELBOW), np.zeros(7))
    obs, reward, *_ = env.step(np.zeros(7, dtype=np.float32))
    np.testing.assert_allclose(obs[:7], BENT_ELBOW, atol=1e-12)
    expected = -(0.5**2 + (0.25 + 0.188) ** 2 + 0.48928**2)
    assert reward == pytest.approx(expected, abs=1e-12)
    env.close()


def test_known_reward_matches_env_rewards_on_a_rollout():
    env = Reacher7DoFEnv()
    observations, actions, rewards, infos = _rollout(env, seed=1, steps=60)
    assert np.ptp(observations[:, :7], axis=0).min() > 1e-3  # the arm really moves
    known = reacher7dof_reward(torch.as_tensor(observations[1:]), torch.as_tensor(actions, dtype=torch.float64))
    assert known.shape == (60, 1)
    np.testing.assert_allclose(known.squeeze(-1).numpy(), rewards, rtol=0, atol=1e-9)
    # The distance term is measured on the NEXT observation, not on the one the action was taken in.
    on_previous = reacher7dof_reward(torch.as_tensor(observations[:-1]), torch.as_tensor(actions, dtype=torch.float64))
    assert np.abs(on_previous.squeeze(-1).numpy() - rewards).max() > 1e-3
    ctrl = np.array([info["reward_ctrl"] for info in infos])
    np.testing.assert_allclose(ctrl, -0.01 * np.square(actions.astype(np.float64)).sum(-1), rtol=1e-12)
    env.close()


def test_termination_is_never():
    done = reacher7dof_termination(torch.randn(3, 5, 17))
    assert done.shape == (3, 5, 1) and done.dtype == torch.bool and not done.any()


def test_seeded_reset_is_deterministic_and_goal_noise_is_gaussian():
    env_a, env_b = Reacher7DoFEnv(), Reacher7DoFEnv()
    obs_a, _ = env_a.reset(seed=42)
    obs_b, _ = env_b.reset(seed=42)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.array_equal(obs_a, env_b.reset(seed=43)[0])
    # PETS's reset: arm at rest at angles 0, goal (0, 0.25, 0) + N(0, 0.1^2) per coordinate.
    goals = np.stack([env_a.reset(seed=seed)[0] for seed in range(2000)])
    np.testing.assert_array_equal(goals[:, :7], 0.0)
    np.testing.assert_array_equal(goals[:, 10:], 0.0)
    np.testing.assert_allclose(goals[:, 7:10].mean(0), [0.0, 0.25, 0.0], atol=0.01)  # 4.5 sigma
    np.testing.assert_allclose(goals[:, 7:10].std(0), 0.1, atol=0.008)  # 5 sigma
    np.testing.assert_array_equal(env_a.goal, goals[-1, 7:10])
    env_a.close()
    env_b.close()


def test_reset_noise_and_argument_validation():
    env = Reacher7DoFEnv(goal_noise_scale=0.0, reset_noise_scale=0.05)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[7:10], [0.0, 0.25, 0.0])
    assert 0 < np.abs(obs[:7]).max() <= 0.05 and 0 < np.abs(obs[10:]).max() <= 0.05
    env.close()
    with pytest.raises(ValueError, match="goal_noise_scale"):
        Reacher7DoFEnv(goal_noise_scale=-0.1)
    with pytest.raises(ValueError, match="reset_noise_scale"):
        Reacher7DoFEnv(reset_noise_scale=float("nan"))


def test_steps_are_deterministic_and_goal_stays_fixed():
    obs_a, act_a, rew_a, _ = _rollout(Reacher7DoFEnv(), seed=7, steps=40)
    obs_b, act_b, rew_b, _ = _rollout(Reacher7DoFEnv(), seed=7, steps=40)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    np.testing.assert_array_equal(obs_a[:, 7:10], np.broadcast_to(obs_a[0, 7:10], (41, 3)))


def test_registered_env_truncates_at_150_steps():
    register_envs()
    register_envs()  # idempotent
    env = gym.make(ENV_ID)
    assert env.spec.max_episode_steps == 150
    env.reset(seed=0)
    zero = np.zeros(7, dtype=np.float32)
    for step in range(1, 151):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated
        assert truncated == (step == 150)
    env.close()


def test_torchrl_gym_env_rollout():
    from torchrl.envs import GymEnv

    register_envs()
    env = GymEnv(ENV_ID)
    env.set_seed(0)
    assert env.observation_spec["observation"].shape == (17,)
    assert env.action_spec.shape == (7,)
    td = env.rollout(10)
    assert td.batch_size == (10,)
    assert not td["next", "done"].any()
    known = reacher7dof_reward(td["next", "observation"], td["action"].double())
    torch.testing.assert_close(known, td["next", "reward"].double(), rtol=0, atol=1e-5)
    env.close()
