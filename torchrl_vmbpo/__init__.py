"""torchrl_vmbpo: Variational Model-based Policy Optimization and its baselines on TorchRL."""

__version__ = "0.1.0"
