"""Reacher7DoF: PETS's 7-joint reaching task as a Gymnasium MuJoCo env, with its known reward.

The VMBPO paper evaluates on "Reacher7DoF" (Table 1), the PR2-arm reacher of PETS (Chua et al.
2018). Gymnasium ships no such env, so the arm is written here as MJCF (``assets/reacher7dof.xml``)
and simulated by :class:`Reacher7DoFEnv`. Facts taken from PETS: zero gravity, timestep 0.01 with
RK4 and frame skip 2; 7 torque motors in [-20, 20]; observation (17,) = 7 joint angles, the 3 goal
coordinates, 7 joint velocities; reward ``-||ee - goal||^2 - 0.01 ||a||^2``; never terminates;
150-step episodes; on reset the arm is at rest at joint angles 0 and the goal is
``(0, 0.25, 0) + N(0, 0.1^2 I)``.

Reward convention (as PETS's ``step``): the distance term is evaluated on the state AFTER the
step, i.e. on ``next_observation``, and the control term on the action as given (MuJoCo clamps the
applied torque to the control range; the cost does not clip). The end effector is not part of the
observation, so :func:`reacher7dof_end_effector` recomputes it from the 7 joint angles by forward
kinematics that mirror the MJCF; :func:`reacher7dof_reward` is then a pure function of
``(next_observation, action)`` that a world-model env can use in place of a learned reward head
(paper, after eq. 23), and it equals the env's reward (the env measures the end effector with
MuJoCo, so the two are checked against each other by the tests).

Example:
    >>> import gymnasium as gym
    >>> register_envs()
    >>> env = gym.make("torchrl_vmbpo/Reacher7DoF-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.action_space.shape, env.spec.max_episode_steps
    ((17,), (7,), 150)
    >>> action = env.action_space.sample()
    >>> next_obs, reward, terminated, truncated, info = env.step(action)
    >>> known = reacher7dof_reward(torch.as_tensor(next_obs), torch.as_tensor(action, dtype=torch.float64))
    >>> bool(abs(known.item() - reward) < 1e-9), terminated
    (True, False)
    >>> env.close()
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium
import mujoco
import numpy as np
import torch
from gymnasium import utils
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.spaces import Box

ENV_ID = "torchrl_vmbpo/Reacher7DoF-v0"
MAX_EPISODE_STEPS = 150
XML_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "reacher7dof.xml")

NUM_JOINTS = 7
OBSERVATION_DIM = 17  # 7 joint angles + 3 goal coordinates + 7 joint velocities
GOAL_SLICE = slice(NUM_JOINTS, NUM_JOINTS + 3)
GOAL_BASE = (0.0, 0.25, 0.0)
CONTROL_COST_WEIGHT = 0.01
FRAME_SKIP = 2

# Kinematic chain of the MJCF, (axis, offset from the previous joint in the previous joint's frame).
# "x", "y", "z" are the hinge axes of the parent frame; the end effector sits on the wrist-roll axis.
_SHOULDER = (0.0, -0.188, 0.0)
_CHAIN = (
    ("z", _SHOULDER),  # shoulder pan
    ("y", (0.1, 0.0, 0.0)),  # shoulder lift
    ("x", (0.0, 0.0, 0.0)),  # upper-arm roll
    ("y", (0.4, 0.0, 0.0)),  # elbow flex (end of the upper arm)
    ("x", (0.0, 0.0, 0.0)),  # forearm roll
    ("y", (0.321, 0.0, 0.0)),  # wrist flex (end of the forearm)
    ("x", (0.0, 0.0, 0.0)),  # wrist roll
)
_END_EFFECTOR = (0.16828, 0.0, 0.0)  # PETS's wrist-to-end-effector distance


# Rodrigues with a principal axis e: Rot(e, q) = I + sin(q) [e]x + (1 - cos(q)) [e]x^2.
_CROSS = {
    "x": ((0.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "y": ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), (-1.0, 0.0, 0.0)),
    "z": ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
}
_FK_CONSTANTS: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}


def _fk_constants(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """``([e_i]x [7,3,3], [e_i]x^2 [7,3,3], offsets [7,3], end effector [3])`` on ``device``, made once.

    Cached so that the forward kinematics copies nothing from the host per call (the PETS planner
    evaluates it inside a captured CUDA graph, where a host-to-device copy is not allowed).
    """
    key = (device, dtype)
    if key not in _FK_CONSTANTS:
        cross = torch.tensor([_CROSS[axis] for axis, _ in _CHAIN], dtype=dtype)
        offsets = torch.tensor([offset for _, offset in _CHAIN], dtype=dtype)
        _FK_CONSTANTS[key] = tuple(
            t.to(device) for t in (cross, cross @ cross, offsets, torch.tensor(_END_EFFECTOR, dtype=dtype))
        )
    return _FK_CONSTANTS[key]


def reacher7dof_end_effector(joint_angles: torch.Tensor) -> torch.Tensor:
    """World position of the end effector from the 7 joint angles (forward kinematics of the MJCF).

    Composes ``p <- p + R t_i``, ``R <- R Rot(axis_i, q_i)`` along the chain of
    ``assets/reacher7dof.xml``; equals MuJoCo's ``site_xpos`` of the ``end_effector`` site for any
    angles. (Within the joint limits it also equals PETS's closed-form end effector, which assumes a
    strictly negative elbow angle; MuJoCo's limits are soft, so this general form is used.) All seven
    joint rotations are built at once (Rodrigues), so a call is ~25 kernels on a GPU, not ~90.

    Args:
        joint_angles: ``[..., 7]`` joint angles in the MJCF's joint order (radians).

    Returns:
        ``[..., 3]`` end-effector position, same dtype and device.

    Example:
        >>> reacher7dof_end_effector(torch.zeros(7, dtype=torch.float64))  # arm straight along +x
        tensor([ 0.9893, -0.1880,  0.0000], dtype=torch.float64)
    """
    if joint_angles.shape[-1] != NUM_JOINTS:
        raise ValueError(f"joint_angles must end in dimension {NUM_JOINTS}, got shape {tuple(joint_angles.shape)}")
    cross, cross_sq, offsets, end_effector = _fk_constants(joint_angles.device, joint_angles.dtype)
    sin, one_minus_cos = joint_angles.sin()[..., None, None], (1.0 - joint_angles.cos())[..., None, None]
    rotations = torch.eye(3, dtype=joint_angles.dtype, device=joint_angles.device) + sin * cross
    rotations = rotations + one_minus_cos * cross_sq  # [..., 7, 3, 3]: Rot(axis_i, q_i)
    position, rotation = offsets[0], rotations[..., 0, :, :]  # the first joint's frame is the world's
    for i, (_, offset) in enumerate(_CHAIN[1:], start=1):
        if any(offset):  # the roll joints sit where the previous joint is
            position = position + (rotation @ offsets[i, :, None])[..., 0]
        rotation = rotation @ rotations[..., i, :, :]
    return position + (rotation @ end_effector[:, None])[..., 0]


def reacher7dof_reward(next_observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Known reward ``-||ee(x') - goal(x')||^2 - 0.01 ||a||^2`` of :class:`Reacher7DoFEnv`.

    As in PETS, the distance is measured on the observation reached by the step (``x'``), so this
    is a function of ``(next_observation, action)``; pass the world model's predicted next
    observation. It matches the env's reward exactly (up to floating point).

    Args:
        next_observation: ``[..., 17]`` observation after the step.
        action: ``[..., 7]`` action of the step (used as given, not clipped, as the env does).

    Returns:
        ``[..., 1]`` reward (TorchRL's reward shape).

    Example:
        >>> obs = torch.zeros(2, 17)
        >>> obs[:, 7:10] = torch.tensor([0.98928, -0.188, 0.0])  # goal at the end effector
        >>> reacher7dof_reward(obs, torch.ones(2, 7))  # only the control cost, 0.01 * 7
        tensor([[-0.0700],
                [-0.0700]])
    """
    if next_observation.shape[-1] != OBSERVATION_DIM:
        raise ValueError(
            f"next_observation must end in dimension {OBSERVATION_DIM}, got shape {tuple(next_observation.shape)}"
        )
    if action.shape[-1] != NUM_JOINTS:
        raise ValueError(f"action must end in dimension {NUM_JOINTS}, got shape {tuple(action.shape)}")
    end_effector = reacher7dof_end_effector(next_observation[..., :NUM_JOINTS])
    distance = (end_effector - next_observation[..., GOAL_SLICE]).square().sum(-1, keepdim=True)
    return -distance - CONTROL_COST_WEIGHT * action.square().sum(-1, keepdim=True)


def reacher7dof_termination(next_observation: torch.Tensor) -> torch.Tensor:
    """Known termination of :class:`Reacher7DoFEnv`: never (episodes only end by the time limit).

    Args:
        next_observation: ``[..., 17]`` observation after the step.

    Returns:
        ``[..., 1]`` boolean, all False.

    Example:
        >>> reacher7dof_termination(torch.zeros(4, 17)).shape
        torch.Size([4, 1])
    """
    return torch.zeros(*next_observation.shape[:-1], 1, dtype=torch.bool, device=next_observation.device)


class Reacher7DoFEnv(MujocoEnv, utils.EzPickle):
    """PETS's Reacher7DoF: move a 7-joint PR2-like arm's end effector to a goal in 3-D.

    Observation ``(17,)`` float64: joint angles ``qpos[0:7]``, goal position ``(x, y, z)``, joint
    velocities ``qvel[0:7]``. Action ``(7,)`` float32 in ``[-20, 20]``: joint torques. Reward:
    :func:`reacher7dof_reward` on the post-step observation. Never terminates; the registered id
    truncates after 150 steps.

    Args:
        goal_noise_scale: std of the Gaussian noise added to each goal coordinate on reset
            (PETS: 0.1). Must be >= 0.
        reset_noise_scale: half-width of uniform noise added to the initial joint angles and
            velocities (PETS: 0, the arm always starts at rest at angles 0). Must be >= 0.
        **kwargs: passed to :class:`gymnasium.envs.mujoco.MujocoEnv` (``render_mode``, ``width``...).

    Example:
        >>> env = Reacher7DoFEnv()
        >>> obs, _ = env.reset(seed=3)
        >>> bool((obs[:7] == 0).all() and (obs[10:] == 0).all())  # the arm starts at rest
        True
        >>> env.close()
    """

    metadata: dict[str, Any] = {
        "render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"],
        "render_fps": 50,  # 1 / (0.01 s * frame skip 2)
    }

    def __init__(self, goal_noise_scale: float = 0.1, reset_noise_scale: float = 0.0, **kwargs: Any):
        for name, value in (("goal_noise_scale", goal_noise_scale), ("reset_noise_scale", reset_noise_scale)):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        utils.EzPickle.__init__(self, goal_noise_scale, reset_noise_scale, **kwargs)
        self._goal_noise_scale = float(goal_noise_scale)
        self._reset_noise_scale = float(reset_noise_scale)
        observation_space = Box(low=-np.inf, high=np.inf, shape=(OBSERVATION_DIM,), dtype=np.float64)
        kwargs.setdefault("default_camera_config", {"trackbodyid": 0, "distance": 2.5, "elevation": -30.0})
        MujocoEnv.__init__(self, XML_PATH, FRAME_SKIP, observation_space=observation_space, **kwargs)
        self._end_effector_id = self.model.site("end_effector").id

    @property
    def goal(self) -> np.ndarray:
        """Current goal position ``(3,)`` (the mocap body's position)."""
        return self.data.mocap_pos[0].copy()

    def end_effector(self) -> np.ndarray:
        """End-effector position ``(3,)`` as computed by MuJoCo for the current joint angles."""
        return self.data.site_xpos[self._end_effector_id].copy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, float]]:
        action = np.asarray(action, dtype=np.float64)
        self.do_simulation(action, self.frame_skip)
        # After mj_step, site_xpos belongs to an intermediate state of the last substep, not to the
        # state reached; recompute it so the reward is measured on the next observation (as PETS).
        mujoco.mj_kinematics(self.model, self.data)
        observation = self._get_obs()
        reward_dist = -float(np.sum(np.square(self.end_effector() - self.goal)))
        reward_ctrl = -CONTROL_COST_WEIGHT * float(np.sum(np.square(action)))
        if self.render_mode == "human":
            self.render()
        # No termination; the TimeLimit wrapper added by gymnasium.make truncates.
        info = {"reward_dist": reward_dist, "reward_ctrl": reward_ctrl}
        return observation, reward_dist + reward_ctrl, False, False, info

    def reset_model(self) -> np.ndarray:
        noise = self._reset_noise_scale
        qpos = self.init_qpos + self.np_random.uniform(-noise, noise, size=self.model.nq)
        qvel = self.init_qvel + self.np_random.uniform(-noise, noise, size=self.model.nv)
        self.data.mocap_pos[0] = np.asarray(GOAL_BASE) + self.np_random.normal(0.0, self._goal_noise_scale, size=3)
        self.set_state(qpos, qvel)  # also runs mj_forward, so the goal and site positions are current
        return self._get_obs()

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.mocap_pos[0], self.data.qvel]).astype(np.float64)


def register_envs() -> None:
    """Register ``torchrl_vmbpo/Reacher7DoF-v0`` (150-step episodes) with Gymnasium; idempotent.

    Example:
        >>> register_envs(); register_envs()  # a second call is a no-op
        >>> ENV_ID in gymnasium.registry
        True
    """
    if ENV_ID in gymnasium.registry:
        return
    gymnasium.register(
        id=ENV_ID,
        entry_point=f"{__name__}:Reacher7DoFEnv",
        max_episode_steps=MAX_EPISODE_STEPS,
    )
