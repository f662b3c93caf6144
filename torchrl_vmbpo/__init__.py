"""torchrl_vmbpo: Variational Model-based Policy Optimization and its baselines on TorchRL.

Importing the package registers its extra Gymnasium envs (``torchrl_vmbpo/Reacher7DoF-v0``);
registration is idempotent.
"""

from torchrl_vmbpo.envs.reacher7dof import register_envs as _register_envs

__version__ = "0.1.0"

_register_envs()
