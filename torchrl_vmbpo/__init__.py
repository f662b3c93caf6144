"""torchrl_vmbpo: Variational Model-based Policy Optimization and its baselines on TorchRL.

Importing the package registers its extra Gymnasium envs (``torchrl_vmbpo/Reacher7DoF-v0``) and
applies the workarounds of :mod:`torchrl_vmbpo.compat`; both are idempotent. It also imports the
presets (:mod:`torchrl_vmbpo.algorithms`), which register their settings classes.
"""

from torchrl_vmbpo.compat import cache_tensordict_find_spec as _cache_tensordict_find_spec
from torchrl_vmbpo.envs.reacher7dof import register_envs as _register_envs

__version__ = "0.1.0"

_register_envs()
_cache_tensordict_find_spec()

# Registers every preset's settings class, so a TrainConfig checks its algo and extra when made.
import torchrl_vmbpo.algorithms  # noqa: E402,F401
