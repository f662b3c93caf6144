"""What a model-based agent must know of an env beyond its spaces: when a state terminates and,
optionally, the reward; registered per env id so the command line can use them too.

Resolution order for an env id: functions passed to the call, then :func:`register_env_functions`,
then the library's known termination functions (``KNOWN_TERMINATION_FNS``). Without a reward
function the world model predicts rewards with its own head.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchrl_vmbpo.envs.real import import_env_module, split_env_id
from torchrl_vmbpo.envs.termination import KNOWN_TERMINATION_FNS, TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.errors import ConfigError, UnknownEnvFunction

_REGISTERED: dict[str, EnvFunctions] = {}


@dataclass(frozen=True)
class EnvFunctions:
    """Termination ``done(next_obs) -> bool [*B, 1]`` and reward ``r(obs, action, next_obs) -> [*B, 1]``
    of one env; either may be None (unknown)."""

    env_id: str
    termination_fn: TerminationFn | None = None
    reward_fn: RewardFn | None = None

    def termination(self) -> TerminationFn:
        """The termination function; an :class:`UnknownEnvFunction` saying how to supply one otherwise."""
        if self.termination_fn is None:
            raise UnknownEnvFunction(
                f"No known termination function for {self.env_id!r}; known: {sorted({*KNOWN_TERMINATION_FNS, *_REGISTERED})}. "
                "Pass termination_fn=<callable next_obs -> bool[..., 1]> to torchrl_vmbpo.train, or "
                "register one with torchrl_vmbpo.register_env_functions (a module:EnvId id's module may do so)."
            )
        return self.termination_fn


def register_env_functions(env_id: str, *, termination_fn: TerminationFn, reward_fn: RewardFn | None = None) -> None:
    """Make ``termination_fn`` (and ``reward_fn``) the functions of ``env_id`` for every later run in
    this process, the command line's included (``vmbpo train --env mymodule:MyEnv-v0`` imports
    ``mymodule``, which may call this when imported).

    Example:
        >>> import torch
        >>> register_env_functions("MyEnv-v0", termination_fn=lambda next_obs: next_obs[..., :1].abs() > 1)
        >>> env_functions_for("MyEnv-v0").termination()(torch.tensor([[2.0]])).item()
        True
    """
    if not callable(termination_fn) or (reward_fn is not None and not callable(reward_fn)):
        raise ConfigError("termination_fn (and reward_fn, if given) must be callables on tensors")
    _REGISTERED[split_env_id(env_id)[1]] = EnvFunctions(env_id, termination_fn, reward_fn)


def env_functions_for(
    env_id: str, termination_fn: TerminationFn | None = None, reward_fn: RewardFn | None = None
) -> EnvFunctions:
    """The functions of ``env_id``: those given, else registered, else the library's known ones."""
    import_env_module(env_id)  # a module:EnvId id's module may register functions when imported
    name = split_env_id(env_id)[1]
    registered = _REGISTERED.get(name, EnvFunctions(env_id))
    return EnvFunctions(
        env_id,
        termination_fn or registered.termination_fn or KNOWN_TERMINATION_FNS.get(name),
        reward_fn or registered.reward_fn,
    )
