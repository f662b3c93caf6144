"""``TrainConfig.device``: names checked, a missing GPU refused before anything is written, the real env's
CPU tensors meeting the agent's device in one place, and (where CUDA exists) every preset on a GPU,
checkpoints moving between devices, compiled updates captured as CUDA graphs."""

import json

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from tiny_configs import TINY_STEPS

from torchrl_vmbpo.algorithms import PRESETS, build_agent, default_config, resume, run
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.training.device import PolicyOnDevice, on_device, resolve_device

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
TINY = [*TINY_STEPS, "init_random_steps=100", "eval_episodes=1", "compile=off"]
SMALL_EXTRA = {
    "pets": ["extra.population=8", "extra.elites=2", "extra.planning_horizon=2", "extra.particles=2"],
    "mpo": ["extra.num_samples=4"],
}


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if CUDA else torch.device("cpu"))


@pytest.mark.skipif(CUDA, reason="checks the message where no GPU exists")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_missing_gpu_is_one_line_naming_what_to_use_instead(name, tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    message = str(err.value)
    assert "\n" not in message and name in message and "device=cpu or device=auto" in message
    cfg = default_config("sac", "Pendulum-v1", steps=200, device=name, overrides=TINY)  # a config may name it
    with pytest.raises(ConfigError):
        run(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing written


@needs_cuda
def test_a_gpu_index_beyond_those_present_is_refused():
    with pytest.raises(ConfigError, match="torch sees"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_the_policy_acts_on_its_device_and_the_action_returns_to_the_envs():
    policy = TensorDictModule(lambda obs: obs.sum(-1, keepdim=True), in_keys=["observation"], out_keys=["action"])
    assert on_device(policy, torch.device("cpu")) is policy  # nothing to move on the CPU
    wrapped = PolicyOnDevice(policy, torch.device("cuda" if CUDA else "cpu"))
    td = TensorDict({"observation": torch.ones(2, 3), "other": torch.zeros(2)}, [2])
    out = wrapped(td)
    assert out is td and torch.equal(td["action"], torch.full((2, 1), 3.0)) and td["action"].device.type == "cpu"
    assert "other" in td.keys() and not list(wrapped.parameters())  # the policy is held, not registered


def test_the_summary_records_the_device_auto_resolved_to(tmp_path):
    cfg = default_config("sac", "Pendulum-v1", steps=150, overrides=TINY)
    summary = run(cfg, tmp_path / "run", progress=False)
    assert cfg.device == "auto" and summary["device"] == ("cuda:0" if CUDA else "cpu")
    assert summary["compiled"] == {"updates": False, "model_fit": False}


def _all_tensors_on(agent, device_type):
    tensors = list(agent.state_dict().values())
    for optimizer in agent.optimizers().values():
        for state in optimizer.state.values():
            tensors += [v for k, v in state.items() if torch.is_tensor(v) and k != "step"]
    return all(t.device.type == device_type for t in tensors)


@needs_cuda
@pytest.mark.parametrize("algo", PRESETS)
def test_every_preset_trains_on_a_gpu_with_everything_it_owns_there(algo, tmp_path):
    cfg = default_config(algo, "Pendulum-v1", steps=300, device="cuda", overrides=TINY + SMALL_EXTRA.get(algo, []))
    summary = run(cfg, tmp_path / "run", progress=False)
    assert summary["device"] == "cuda:0" and "gpu" in summary["machine"]
    agent = build_agent(cfg, make_env("Pendulum-v1"))
    from torchrl_vmbpo.training.checkpoint import load_checkpoint

    load_checkpoint(tmp_path / "run" / "checkpoint.pt", agent)
    assert _all_tensors_on(agent, "cuda")


@needs_cuda
def test_a_run_started_on_the_cpu_resumes_on_the_gpu_and_back(tmp_path):
    out = tmp_path / "run"
    cfg = default_config("vmbpo", "Pendulum-v1", steps=200, device="cpu", overrides=TINY)
    run(cfg, out, progress=False)
    on_gpu = resume(out, steps=300, progress=False, overrides=["device=cuda"])
    assert on_gpu["device"] == "cuda:0" and on_gpu["env_steps"] == 300
    back = resume(out, steps=400, progress=False, overrides=["device=cpu"])
    assert back["device"] == "cpu" and back["env_steps"] == 400
    assert json.loads((out / "summary.json").read_text())["resumed_at"] == [200, 300]


@needs_cuda
@pytest.mark.parametrize("algo", ["sac", "vmbpo"])
def test_compiled_updates_replay_as_cuda_graphs_and_learn(algo, tmp_path):
    cfg = default_config(algo, "Pendulum-v1", steps=400, device="cuda", overrides=TINY[:-1] + ["compile=on"])
    summary = run(cfg, tmp_path / "run", progress=False)
    assert summary["compiled"] == {"updates": True, "model_fit": algo != "sac"}
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["final_train_metrics"].values())


@needs_cuda
@pytest.mark.parametrize("compile_", ["off", "on"])
def test_bf16_precision_trains_on_a_gpu_eager_and_as_cuda_graphs(compile_, tmp_path):
    overrides = TINY[:-1] + [f"compile={compile_}", "precision=bf16"]
    cfg = default_config("vmbpo", "Pendulum-v1", steps=400, device="cuda", overrides=overrides)
    summary = run(cfg, tmp_path / "run", progress=False)
    assert summary["config"]["precision"] == "bf16" and summary["device"] == "cuda:0"
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["final_train_metrics"].values())
