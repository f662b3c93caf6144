"""The PETS planner's CUDA-graph path: off on the CPU; on a GPU, capture and replay follow the model.

The GPU tests run where CUDA is available (the lent device machine); CI has none and skips them.
"""

import warnings

import pytest
import torch
from test_cem import _linear_model

from torchrl_vmbpo.algorithms.pets import KNOWN_REWARD_FNS
from torchrl_vmbpo.envs.reacher7dof import ENV_ID as REACHER7DOF
from torchrl_vmbpo.envs.real import env_dims, make_env
from torchrl_vmbpo.envs.termination import inverted_pendulum_done, never_done
from torchrl_vmbpo.envs.world_model import WorldModelEnv
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.planners.cuda_graph import CapturedFunction
from torchrl_vmbpo.planners.pets import PETSPlanner

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _quadratic_env(model):
    return WorldModelEnv(
        model,
        make_env("Pendulum-v1"),
        termination_fn=never_done,
        reward_fn=lambda o, a, n: -n.pow(2).sum(-1, keepdim=True),
    )


def test_cuda_graph_setting_changes_nothing_on_the_cpu():
    plans = []
    for cuda_graph in (True, False):
        planner = PETSPlanner(
            _quadratic_env(_linear_model(3, 1)),
            planning_horizon=3,
            population=40,
            elites=5,
            iterations=3,
            particles=2,
            cuda_graph=cuda_graph,
        )
        torch.manual_seed(0)
        plans.append(planner.plan(torch.tensor([1.0, 0.0, 0.0]))[0])
        assert planner._graphs == {}
    torch.testing.assert_close(plans[0], plans[1], rtol=0, atol=0)


def test_the_pets_setting_reaches_the_planner_and_is_checked():
    from torchrl_vmbpo.algorithms.pets import PETSSettings, build_pets
    from torchrl_vmbpo.algorithms.presets import default_config

    for value in (False, True):
        cfg = default_config("pets", "Pendulum-v1", extra=dict(cuda_graph=value, population=8, elites=2))
        assert build_pets(cfg, make_env("Pendulum-v1")).policy.cuda_graph is value
    assert PETSSettings().cuda_graph is True  # on since its tests passed on an H100 (session 7)
    with pytest.raises(ValueError, match="extra.cuda_graph"):
        PETSSettings(cuda_graph="yes")


def test_captured_function_needs_cuda_inputs():
    with pytest.raises(ValueError, match="CUDA tensors"):
        CapturedFunction(lambda x: x + 1, (torch.zeros(2),))


@cuda
def test_captured_function_replays_on_new_inputs_and_rejects_other_shapes():
    captured = CapturedFunction(
        lambda x, y: {"sum": x + y, "noise": torch.randn_like(x)},
        (torch.zeros(3, device="cuda"), torch.ones(3, device="cuda")),
    )
    first = captured(torch.full((3,), 2.0, device="cuda"), torch.ones(3, device="cuda"))
    second = captured(torch.full((3,), 5.0, device="cuda"), torch.ones(3, device="cuda"))
    torch.testing.assert_close(first["sum"], torch.full((3,), 3.0, device="cuda"))  # a clone, not overwritten
    torch.testing.assert_close(second["sum"], torch.full((3,), 6.0, device="cuda"))
    assert not torch.equal(first["noise"], second["noise"])  # each replay draws fresh numbers
    with pytest.raises(ValueError, match="differ in shape"):
        captured(torch.zeros(4, device="cuda"), torch.zeros(4, device="cuda"))


@cuda
def test_captured_plan_replays_the_synced_dynamics():
    model = _linear_model(3, 1, action_gain=1.0)
    planner = PETSPlanner(
        _quadratic_env(model),
        planning_horizon=2,
        population=100,
        elites=10,
        iterations=4,
        particles=2,
        device="cuda",
        cuda_graph=True,
    )
    x0 = torch.tensor([1.0, 0.0, 0.0], device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns: fail instead
        torch.testing.assert_close(planner.plan(x0)[0][0].cpu(), torch.tensor([-1.0]), atol=0.2, rtol=0)
    assert len(planner._graphs) == 1
    with torch.no_grad():  # the env's model now moves x by -a: the best first action flips sign
        model.ensemble.output_layer.weight[:, 3, 0] = -1.0
    planner.sync_dynamics()  # in place: the captured graph reads the new weights
    torch.testing.assert_close(planner.plan(x0)[0][0].cpu(), torch.tensor([1.0]), atol=0.2, rtol=0)
    assert len(planner._graphs) == 1 and planner.cuda_graph


@cuda
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "InvertedPendulum-v5", REACHER7DOF])
def test_plans_with_known_rewards_and_terminations_capture(env_id):
    real = make_env(env_id)
    termination = inverted_pendulum_done if env_id == "InvertedPendulum-v5" else never_done
    env = WorldModelEnv(
        DynamicsModel(*env_dims(real), hidden=(32,)),
        real,
        termination_fn=termination,
        reward_fn=KNOWN_REWARD_FNS[env_id],
    )
    planner = PETSPlanner(
        env, planning_horizon=4, population=32, elites=4, iterations=2, particles=5, device="cuda", cuda_graph=True
    )
    obs = real.reset()["observation"].cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, history = planner.plan(obs)
    assert len(planner._graphs) == 1
    assert mean.shape == (4, env_dims(real)[1]) and torch.isfinite(mean).all()
    assert history["elite_score"].shape == (2,)
