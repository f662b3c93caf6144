import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded

from torchrl_vmbpo.algorithms.sac import SACAgent
from torchrl_vmbpo.training.config import TrainConfig

SPEC = Bounded(-1.0, 1.0, shape=(2,))


def _batch(b=16):
    return TensorDict({"observation": torch.randn(b, 3), "action": torch.rand(b, 2) * 2 - 1,
                       ("next", "observation"): torch.randn(b, 3), ("next", "reward"): torch.randn(b, 1),
                       ("next", "done"): torch.zeros(b, 1, dtype=torch.bool),
                       ("next", "terminated"): torch.zeros(b, 1, dtype=torch.bool)}, [b])


def test_compile_setting_is_validated():
    with pytest.raises(ValueError, match="extra.compile"):
        SACAgent(TrainConfig(hidden=(8,), extra={"compile": "yes"}), 3, SPEC)


def test_compiled_update_steps_every_group_and_keeps_checkpoint_keys():
    torch.manual_seed(0)
    eager = SACAgent(TrainConfig(hidden=(16,)), 3, SPEC)
    compiled = SACAgent(TrainConfig(hidden=(16,), extra={"compile": True}), 3, SPEC)
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
