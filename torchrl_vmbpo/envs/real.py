"""The real environment: a Gymnasium env wrapped for TorchRL collectors, with input validation."""

from __future__ import annotations

import importlib

import gymnasium as gym
import torch
from torchrl.data import Bounded
from torchrl.envs import Compose, DoubleToFloat, EnvBase, GymEnv, InitTracker, RewardSum, StepCounter, TransformedEnv

from torchrl_vmbpo.errors import EnvError, first_line

SUPPORTED = "Pendulum-v1, InvertedPendulum-v5, Hopper-v5, Walker2d-v5, HalfCheetah-v5, Reacher-v5"


def split_env_id(env_id: str) -> tuple[str | None, str]:
    """``"module:EnvId"`` -> ``("module", "EnvId")`` (gymnasium's convention); a plain id -> ``(None, id)``."""
    module, sep, name = env_id.rpartition(":")
    return (module, name) if sep else (None, env_id)


def import_env_module(env_id: str) -> None:
    """Import the module of a ``module:EnvId`` id (it registers the env, and maybe its functions)."""
    module = split_env_id(env_id)[0]
    if module:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise EnvError(f"cannot import module {module!r} of env id {env_id!r}: {err}") from None


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The gymnasium spec of a registered id or of a ``module:EnvId`` id (its module imported first)."""
    import_env_module(env_id)
    return _check_env_id(split_env_id(env_id)[1])


def _check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        close = sorted(k for k in gym.registry if env_id.split("-")[0].lower() in k.lower())[:10]
        hint = f" Similar ids: {close}." if close else ""
        raise EnvError(
            f"Unknown env id {env_id!r}: it is not registered in gymnasium.{hint} "
            f"Supported out of the box: {SUPPORTED} (any gymnasium env with a flat Box observation and a "
            "Box action space works)."
        ) from None


def _open(env_id: str, kwargs: dict) -> GymEnv:
    try:
        return GymEnv(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as err:
        raise EnvError(f"{env_id!r} needs an optional package that is not installed: {first_line(err)}") from None
    except ImportError as err:
        raise EnvError(
            f"{env_id!r} needs a package that is not installed ({err.name or first_line(err)}); install it "
            "(e.g. pip install 'gymnasium[box2d]' for Box2D envs)"
        ) from None


def make_env(env_id: str, *, seed: int | None = None, max_episode_steps: int | None = None) -> TransformedEnv:
    """A TorchRL env around ``gymnasium.make(env_id)`` with float32 observations.

    Transforms: ``InitTracker`` (collectors need it), ``StepCounter`` (episode length),
    ``DoubleToFloat`` (MuJoCo observations are float64), ``RewardSum`` (episode return).

    ``env_id`` is a registered gymnasium id or ``module:EnvId`` (the module is imported first, as
    ``gymnasium.make`` does).

    Raises:
        EnvError: unknown env id or module, a missing optional package, an observation that is not one flat
            vector (dict or image observations), or an action space that is not a continuous box.

    Example:
        >>> env = make_env("Pendulum-v1", seed=0)
        >>> env.rollout(3)["next", "episode_reward"].shape
        torch.Size([3, 1])
    """
    spec = env_spec(env_id)
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    env = wrap_env(_open(spec.id, kwargs), name=env_id, max_episode_steps=max_episode_steps or spec.max_episode_steps)
    if seed is not None:
        env.set_seed(seed)
    return env


def wrap_env(base: EnvBase, *, name: str, max_episode_steps: int | None) -> TransformedEnv:
    """Validate a TorchRL env's spaces (one flat observation, a continuous box of actions) and add the
    transforms :func:`make_env` adds; ``name`` is used in messages. ``base`` is closed when refused.

    Raises:
        EnvError: dict or image observations, or an action space that is not a continuous box.
    """
    if not isinstance(base.action_spec, Bounded) or base.action_spec.dtype not in (torch.float32, torch.float64):
        base.close()
        raise EnvError(
            f"{name!r} has a {type(base.action_spec).__name__} action space of dtype {base.action_spec.dtype}; "
            "torchrl_vmbpo supports continuous, bounded (Box) action spaces only."
        )
    observation = base.observation_spec.get("observation", None)
    if observation is None or observation.ndim != 1:
        keys = sorted(str(k) for k in base.observation_spec.keys(True, True))
        shapes = {k: tuple(base.observation_spec[k].shape) for k in base.observation_spec.keys(True, True)}
        base.close()
        raise EnvError(
            f"{name!r} observes {shapes if len(keys) <= 5 else keys}; torchrl_vmbpo supports one flat Box "
            "observation vector (the key 'observation'), not dict or image observations (flatten them with a "
            "gymnasium wrapper such as FlattenObservation)."
        )
    return TransformedEnv(base, Compose(InitTracker(), StepCounter(max_episode_steps), DoubleToFloat(), RewardSum()))


def env_dims(env: EnvBase) -> tuple[int, int]:
    """(observation size, action size) of a flat-observation env."""
    return env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
