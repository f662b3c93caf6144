"""A batch entry without its feature dimension is named, not broadcast (issue 19, item 7)."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded

from torchrl_vmbpo.errors import BatchShapeError
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.log_ratio import make_log_ratio_network
from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.ensemble_nll import GaussianEnsembleNLLLoss
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss


def _batch(reward_shape=(5, 1)):
    return TensorDict(
        {
            "observation": torch.randn(5, 3),
            "action": torch.rand(5, 2) * 2 - 1,
            ("next", "observation"): torch.randn(5, 3),
            ("next", "reward"): torch.randn(reward_shape),
            ("next", "done"): torch.zeros(5, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(5, 1, dtype=torch.bool),
        },
        [5],
    )


def test_the_vmbpo_critic_names_a_reward_without_its_feature_dimension():
    spec = Bounded(-1.0, 1.0, shape=(2,))
    critic = VMBPOCriticLoss(
        make_q_value(3, 2, hidden=(8,)),
        make_state_value(3, hidden=(8,)),
        make_tanh_gaussian_actor(3, spec, hidden=(8,)),
        make_tanh_gaussian_actor(3, spec, hidden=(8,)),
        make_log_ratio_network(3, 2, hidden=(8,)),
        eta=2.0,
        gamma=0.99,
    )
    assert torch.isfinite(critic(_batch())["loss_qvalue"])
    with pytest.raises(BatchShapeError, match=r"VMBPOCriticLoss: batch entry \('next', 'reward'\) has shape \(5,\)"):
        critic(_batch(reward_shape=(5,)))  # would broadcast to [5, 5] against [5, 1]


def test_the_model_loss_names_a_reward_without_its_feature_dimension():
    loss = GaussianEnsembleNLLLoss(DynamicsModel(3, 2, num_members=2, num_elites=1, hidden=(8,)))
    assert torch.isfinite(loss(_batch())["loss_dynamics"])
    with pytest.raises(BatchShapeError, match=r"GaussianEnsembleNLLLoss: batch entry \('next', 'reward'\)"):
        loss(_batch(reward_shape=(5,)))
