"""Layer 2: the real env factory, the world-model env around q_d, termination functions, extra envs."""

from torchrl_vmbpo.envs.real import env_dims, make_env
from torchrl_vmbpo.envs.termination import KNOWN_TERMINATION_FNS, termination_fn_for
from torchrl_vmbpo.envs.world_model import WorldModelEnv, buffer_start_states

__all__ = [
    "KNOWN_TERMINATION_FNS",
    "WorldModelEnv",
    "buffer_start_states",
    "env_dims",
    "make_env",
    "termination_fn_for",
]
