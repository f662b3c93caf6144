"""torchrl_vmbpo: Variational Model-based Policy Optimization and its baselines on TorchRL.

Importing the package registers its extra Gymnasium envs (``torchrl_vmbpo/Reacher7DoF-v0``) and
imports the presets (:mod:`torchrl_vmbpo.algorithms`), which register their settings classes; it
patches no dependency (:mod:`torchrl_vmbpo.compat` scopes its workaround to a training run).
"""

from torchrl_vmbpo.envs.reacher7dof import register_envs as _register_envs

__version__ = "0.1.0"

_register_envs()

# The public API. Importing the presets registers their settings classes, so a TrainConfig checks
# its algo and extra when made.
from torchrl_vmbpo.algorithms import PRESETS, build_agent, default_config, resume, run  # noqa: E402
from torchrl_vmbpo.algorithms.mpo import MPOAgent  # noqa: E402
from torchrl_vmbpo.algorithms.pets import PETSAgent  # noqa: E402
from torchrl_vmbpo.algorithms.run import EnvSource  # noqa: E402
from torchrl_vmbpo.algorithms.sac import SACAgent  # noqa: E402
from torchrl_vmbpo.algorithms.steve import STEVEAgent  # noqa: E402
from torchrl_vmbpo.algorithms.vmbpo import VMBPOAgent  # noqa: E402
from torchrl_vmbpo.algorithms.vmbpo_mfe import VMBPOMFEAgent  # noqa: E402
from torchrl_vmbpo.api import train  # noqa: E402
from torchrl_vmbpo.envs.functions import register_env_functions  # noqa: E402
from torchrl_vmbpo.training import TrainConfig, load_checkpoint  # noqa: E402
from torchrl_vmbpo.training.seeding import seed_everything  # noqa: E402

__all__ = [
    "PRESETS",
    "EnvSource",
    "MPOAgent",
    "PETSAgent",
    "SACAgent",
    "STEVEAgent",
    "TrainConfig",
    "VMBPOAgent",
    "VMBPOMFEAgent",
    "build_agent",
    "default_config",
    "load_checkpoint",
    "register_env_functions",
    "resume",
    "run",
    "seed_everything",
    "train",
]
