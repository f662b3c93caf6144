"""The foreach soft target update moves exactly the tensors TorchRL's ``SoftUpdate`` moves, by exactly
the same amounts, for every preset that has target networks."""

import copy

import pytest
import torch
from tiny_configs import TINY_STEPS
from torchrl.objectives import SoftUpdate as TorchRLSoftUpdate

from torchrl_vmbpo.algorithms import PRESETS, build_agent, default_config
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.training.target_update import SoftUpdate

TINY = [*TINY_STEPS, "compile=off"]


# Presets without Polyak-averaged targets: MPO copies its targets every few updates (HardUpdate), PETS
# has no critic. Every other preset must use the foreach SoftUpdate.
NOT_SOFT_UPDATED = {"mpo", "pets"}


@pytest.mark.parametrize("algo", sorted(set(PRESETS) - NOT_SOFT_UPDATED))
def test_foreach_step_equals_torchrls_step_bit_for_bit(algo):
    cfg = default_config(algo, "Pendulum-v1", overrides=TINY)
    agent, tau = build_agent(cfg, make_env(cfg.env)), cfg.tau
    assert type(agent.target_updater) is SoftUpdate  # every such agent uses the foreach one
    loss = agent.target_updater.loss_module
    reference_loss = copy.deepcopy(loss)
    ours, reference = SoftUpdate(loss, tau=tau), TorchRLSoftUpdate(reference_loss, tau=tau)  # targets <- sources
    start = copy.deepcopy(loss.state_dict())
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # the sources move, then both updaters step
        with torch.no_grad():
            for a, b in zip(loss.parameters(), reference_loss.parameters(), strict=True):
                noise = torch.randn(a.shape, generator=generator)
                a.add_(noise), b.add_(noise)
        ours.step()
        reference.step()
    ours_state, reference_state = loss.state_dict(), reference_loss.state_dict()
    assert ours_state.keys() == reference_state.keys()
    for key in ours_state:
        assert torch.equal(ours_state[key], reference_state[key]), key
    moved = [k for k in ours_state if "target" in k and not torch.equal(ours_state[k], start[k])]
    assert moved, "no target tensor moved"


def test_step_before_init_is_refused():
    cfg = default_config("sac", "Pendulum-v1", overrides=TINY)
    updater = build_agent(cfg, make_env(cfg.env)).target_updater
    updater.initialized = False
    with pytest.raises(RuntimeError, match="must be initialized"):
        updater.step()


def test_after_a_move_the_step_updates_the_moved_tensors():
    """``Agent.setup_compute`` moves an agent with ``.to`` after its updater was built; a dtype move
    takes the same path as a device move, so it checks on a CPU that the step follows the move."""
    cfg = default_config("vmbpo", "Pendulum-v1", overrides=TINY)
    agent = build_agent(cfg, make_env(cfg.env)).to(torch.float64)
    loss = agent.target_updater.loss_module
    key = next(iter(loss.qvalue_network_params.keys(True, True)))
    source, target = loss.qvalue_network_params.get(key), loss.target_qvalue_network_params.get(key)
    assert source.dtype == target.dtype == torch.float64
    with torch.no_grad():
        source.add_(1.0)
    expected = torch.lerp(target, source, 1.0 - agent.target_updater.eps)  # tau, as SoftUpdate rounds it
    agent.target_updater.step()
    assert torch.equal(loss.target_qvalue_network_params.get(key), expected)


@pytest.mark.parametrize("algo", sorted(NOT_SOFT_UPDATED))
def test_presets_without_soft_targets_are_the_named_ones(algo):
    cfg = default_config(algo, "Pendulum-v1", overrides=TINY)
    assert not isinstance(getattr(build_agent(cfg, make_env(cfg.env)), "target_updater", None), TorchRLSoftUpdate)
