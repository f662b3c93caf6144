"""Layer 1: networks. The dynamics ensemble q_d and the actor / critic / ratio network factories."""

from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.ensemble import EnsembleLinear, GaussianEnsemble
from torchrl_vmbpo.models.log_ratio import make_log_ratio_network
from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.models.normalizer import Normalizer

__all__ = [
    "DynamicsModel",
    "EnsembleLinear",
    "GaussianEnsemble",
    "Normalizer",
    "make_log_ratio_network",
    "make_q_value",
    "make_state_value",
    "make_tanh_gaussian_actor",
]
