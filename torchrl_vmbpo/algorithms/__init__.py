"""Presets: which components and which phases each algorithm uses (no loops here)."""

from torchrl_vmbpo.algorithms.presets import PRESETS, build_agent, default_config
from torchrl_vmbpo.algorithms.run import resume, run

__all__ = ["PRESETS", "build_agent", "default_config", "resume", "run"]
