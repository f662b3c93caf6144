import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded

from torchrl_vmbpo.algorithms.sac import SACAgent
from torchrl_vmbpo.training.config import TrainConfig

SPEC = Bounded(-1.0, 1.0, shape=(2,))


def _batch(b=16):
    return TensorDict(
        {
            "observation": torch.randn(b, 3),
            "action": torch.rand(b, 2) * 2 - 1,
            ("next", "observation"): torch.randn(b, 3),
            ("next", "reward"): torch.randn(b, 1),
            ("next", "done"): torch.zeros(b, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(b, 1, dtype=torch.bool),
        },
        [b],
    )


def test_compiled_update_steps_every_group_and_keeps_checkpoint_keys():
    torch.manual_seed(0)
    eager = SACAgent(TrainConfig(hidden=(16,)), 3, SPEC)
    compiled = SACAgent(TrainConfig(hidden=(16,)), 3, SPEC).setup_compute("cpu", compile_updates=True)  # Inductor
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints interchange
    compiled.load_state_dict(eager.state_dict())
    loss = compiled.loss
    groups = {
        "actor": loss.actor_network_params,
        "critic": loss.qvalue_network_params,
        "target critic": loss.target_qvalue_network_params,
    }
    before = {name: [t.clone() for t in p.values(True, True)] for name, p in groups.items()}
    alpha_before = loss.log_alpha.detach().clone()
    out = compiled.update(_batch())
    assert out.keys() == eager.update(_batch()).keys()
    assert all(torch.isfinite(v).all() for v in out.values())
    for name, params in groups.items():
        after = list(params.values(True, True))
        assert any(not torch.equal(a, b) for a, b in zip(before[name], after)), f"{name} did not move"
    assert not torch.equal(alpha_before, loss.log_alpha.detach())


def test_logged_q_value_is_the_twin_minimum_at_the_actors_fresh_actions():
    # Q_1 = 1.5 and Q_2 = -0.5 everywhere (zero weights, constant output biases): min_k Q = -0.5 for
    # any sampled action, so the value recovered from loss_actor, alpha and entropy must be -0.5.
    agent = SACAgent(TrainConfig(hidden=(16,), alpha_init=0.7), 3, SPEC)
    with torch.no_grad():
        for key, value in agent.loss.qvalue_network_params.items(True, True):
            value.zero_()
            if key[-1] == "bias" and value.shape[-1] == 1:
                value.copy_(torch.tensor([[1.5], [-0.5]]))
    out = agent.update(_batch())
    assert out["q_value"].item() == pytest.approx(-0.5, abs=1e-5)
    assert out["alpha"].item() == pytest.approx(0.7, rel=1e-5) and out["entropy"].abs().item() > 0.1
