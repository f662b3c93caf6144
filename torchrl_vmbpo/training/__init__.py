"""Layer 4: the ONE training loop and its phases (model fit, imagination, evaluation, checkpoints)."""

from torchrl_vmbpo.training.agent import Agent
from torchrl_vmbpo.training.checkpoint import load_checkpoint, save_checkpoint
from torchrl_vmbpo.training.config import TrainConfig
from torchrl_vmbpo.training.imagine import imagine
from torchrl_vmbpo.training.loop import train
from torchrl_vmbpo.training.model_fit import fit_dynamics, make_model_optimizer
from torchrl_vmbpo.training.optim import optimize

__all__ = [
    "Agent",
    "TrainConfig",
    "fit_dynamics",
    "imagine",
    "load_checkpoint",
    "make_model_optimizer",
    "optimize",
    "save_checkpoint",
    "train",
]
