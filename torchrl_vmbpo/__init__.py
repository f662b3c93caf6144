"""torchrl_vmbpo: Variational Model-based Policy Optimization and its baselines on TorchRL.

Importing the package registers its extra Gymnasium envs (``torchrl_vmbpo/Reacher7DoF-v0``) and
applies the workarounds of :mod:`torchrl_vmbpo.compat`; both are idempotent.
"""

from torchrl_vmbpo.compat import cache_tensordict_find_spec as _cache_tensordict_find_spec
from torchrl_vmbpo.envs.reacher7dof import register_envs as _register_envs

__version__ = "0.1.0"

_register_envs()
_cache_tensordict_find_spec()
