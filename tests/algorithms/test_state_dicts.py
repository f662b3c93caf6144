"""Every preset's agent saves each tensor once: no two state-dict keys share storage."""

import pytest
import torch
from tiny_configs import TINY_NETS

from torchrl_vmbpo.algorithms import PRESETS, build_agent, default_config, run
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.training.checkpoint import load_checkpoint

TINY = TINY_NETS


def _aliased(state_dict):
    owners = {}
    for key, value in state_dict.items():
        if value.numel():
            owners.setdefault((value.untyped_storage().data_ptr(), value.storage_offset(), value.shape), []).append(key)
    return [keys for keys in owners.values() if len(keys) > 1]


@pytest.mark.parametrize("algo", PRESETS)
def test_the_agents_state_dict_holds_no_aliased_tensors(algo):
    agent = build_agent(default_config(algo, "Pendulum-v1", overrides=TINY), make_env("Pendulum-v1"))
    assert _aliased(agent.state_dict()) == []
    # The acting policy and q_d are still the trained ones: they share storage with their owners.
    owned = {p.data_ptr() for p in agent.parameters()}
    assert all(p.data_ptr() in owned for p in agent.policy.parameters())


def test_a_checkpoint_without_aliases_restores_the_acting_policy(tmp_path):
    cfg = default_config("sac", "Pendulum-v1", steps=200, overrides=TINY + ["init_random_steps=100", "batch_size=16"])
    run(cfg, tmp_path / "run", progress=False)
    agent = build_agent(cfg, make_env("Pendulum-v1"))
    before = [p.clone() for p in agent.policy.parameters()]
    load_checkpoint(tmp_path / "run" / "checkpoint.pt", agent)
    after = list(agent.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # the policy took the trained weights
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["agent"]
    actor_keys = [k for k in saved if k.startswith("loss.actor_network_params.")]
    assert actor_keys and not any(k.startswith("policy.") for k in saved)
