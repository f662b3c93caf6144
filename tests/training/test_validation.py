"""Settings are checked for type and range when made, from --set and from Python alike (issue 19, item 7)."""

import dataclasses
import json
import typing
from typing import Literal

import pytest

from torchrl_vmbpo.algorithms import PRESETS, default_config
from torchrl_vmbpo.algorithms.presets import ALGORITHMS
from torchrl_vmbpo.cli import main
from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.objectives.vmbpo_critic import BOOTSTRAPS
from torchrl_vmbpo.objectives.vmbpo_dynamics import NORMALISERS
from torchrl_vmbpo.planners.trajectory_sampling import PROPAGATIONS
from torchrl_vmbpo.training import TrainConfig


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("utd=abc", "utd must be a number >= 0, got 'abc'"),
        ("utd=true", "utd must be a number >= 0, got True"),
        ("hidden=64", "hidden must be a list of integers (each >= 1), got 64"),
        ("hidden=[0]", "hidden must be a list of integers (each >= 1), got [0]"),
        ("hidden=[]", "hidden must be a list of integers"),
        ("steps=300.5", "steps must be an integer >= 1, got 300.5"),
        ("batch_size=32.5", "batch_size must be an integer >= 1, got 32.5"),
        ("seed=-1", "seed must be an integer >= 0, got -1"),
        ("gamma=1.5", "gamma must be a number in [0, 1], got 1.5"),
        ("checkpoint=1", "checkpoint must be true or false, got 1"),
        ("rollout_schedule=[1,2,3]", "rollout_schedule must be a list of 4 numbers"),
        ("max_grad_norm=0", "max_grad_norm must be a number > 0 or null, got 0"),
        ("algo=nosuch", "unknown algorithm 'nosuch'; available: ['mbpo'"),  # through with_overrides
        ("extra.eta=0", "unknown SAC/MBPO setting(s) ['eta']; known: none"),
        ("extra.compile=true", "unknown SAC/MBPO setting(s) ['compile']"),  # TrainConfig.compile now
        ("compile=yes", "compile must be one of 'auto', 'on', 'off', got 'yes'"),
        ("device=gpu", "device must be cpu, cuda, cuda:N or auto, got 'gpu'"),
        ("device=cuda:x", "device must be cpu, cuda, cuda:N or auto, got 'cuda:x'"),
        ("num_elites=9", "num_elites (9) must be <= num_members (7)"),
    ],
)
def test_a_bad_setting_is_refused_naming_field_value_and_what_is_accepted(assignment, message):
    with pytest.raises(ConfigError) as err:
        default_config("mbpo", "Pendulum-v1").with_overrides([assignment])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "algo, assignment, message",
    [
        ("vmbpo", "extra.eta=0", "extra.eta must be a number > 0, got 0"),
        ("vmbpo", "extra.m_step_mode=x", "extra.m_step_mode must be one of 'copy', 'weighted_map', got 'x'"),
        ("vmbpo", "extra.max_weight=1", "extra.max_weight must be a number > 1 or null, got 1"),
        ("vmbpo", "extra.weight_min_ess=0", "extra.weight_min_ess must be a number in (0, 1] or null"),
        ("vmbpo-mfe", "extra.num_qvalue_nets=1.5", "extra.num_qvalue_nets must be an integer >= 1, got 1.5"),
        ("mpo", "extra.num_samples=1", "extra.num_samples must be an integer >= 2, got 1"),
        ("pets", "extra.momentum=1", "extra.momentum must be a number in [0, 1), got 1"),
        ("pets", "extra.elites=500", "extra.elites (500) must be <= extra.population (200)"),
        ("pets", "extra.device=cuda", "unknown PETS setting(s) ['device']"),  # TrainConfig.device now
        ("steve", "extra.sample_model=1", "extra.sample_model must be true or false, got 1"),
        ("sac", "extra.horizon=3", "unknown SAC/MBPO setting(s) ['horizon']"),
    ],
)
def test_every_algorithm_checks_its_extra_settings(algo, assignment, message):
    with pytest.raises(ConfigError, match=None) as err:
        default_config(algo, "Pendulum-v1").with_overrides([assignment])
    assert message in str(err.value)


def test_the_algorithm_and_env_are_chosen_by_name_not_as_settings(capsys):
    assert main(["config", "--algo", "mbpo", "--set", "algo=nosuch"]) == 2
    assert "algo is the preset's ('mbpo'); to use 'nosuch', choose it with --algo" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown algorithm 'nosuch'; available"):
        default_config("nosuch", "Pendulum-v1")


def test_python_construction_is_checked_like_the_command_line():
    with pytest.raises(ConfigError, match="steps must be an integer"):
        TrainConfig(steps=300.5)
    with pytest.raises(ConfigError, match="unknown SAC/MBPO setting"):
        TrainConfig(algo="sac", extra={"eta": 1.0})
    with pytest.raises(ConfigError, match="unknown config field"):
        default_config("sac", "Pendulum-v1").replace(nonsense=1)
    cfg = TrainConfig(utd=2, hidden=[64, 64], gamma=1)  # ints for numbers and lists for tuples are taken
    assert cfg.utd == 2.0 and isinstance(cfg.utd, float) and cfg.hidden == (64, 64) and cfg.gamma == 1.0


def test_steps_not_above_the_random_steps_is_an_error_saying_no_learning_would_happen(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["train", "--algo", "mbpo", "--env", "Pendulum-v1", "--steps", "300", "--out", str(out), "--no-progress"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "steps (300) must be more than init_random_steps (1000)" in err and "no learning would happen" in err
    assert err.count("\n") == 1 and not out.exists()
    with pytest.raises(ConfigError, match="no learning would happen"):
        default_config("sac", "Pendulum-v1", steps=500)  # the preset waits 500 random steps


def test_vmbpo_config_refuses_a_bad_setting_too(capsys):
    assert main(["config", "--set", "hidden=256"]) == 2
    assert "hidden must be a list of integers" in capsys.readouterr().err
    assert main(["config", "--algo", "sac", "--set", "extra.eta=2"]) == 2
    assert "unknown SAC/MBPO setting(s) ['eta']" in capsys.readouterr().err


def test_every_preset_registers_settings_and_every_field_is_annotated_with_a_checked_type():
    assert set(ALGORITHMS) == set(PRESETS)
    for settings in {*(a.settings for a in ALGORITHMS.values()), TrainConfig}:
        hints = typing.get_type_hints(settings, include_extras=True)
        for field in dataclasses.fields(settings):
            assert hints[field.name] not in (typing.Any, object), f"{settings.__name__}.{field.name}"
        settings() if settings is not TrainConfig else TrainConfig()  # defaults pass their own checks


def test_literal_choices_match_the_constants_the_losses_accept():
    from torchrl_vmbpo.algorithms.pets import PETSSettings
    from torchrl_vmbpo.algorithms.vmbpo import VMBPOSettings

    hints = typing.get_type_hints(VMBPOSettings)
    assert typing.get_origin(hints["bootstrap"]) is Literal
    assert set(typing.get_args(hints["bootstrap"])) == set(BOOTSTRAPS)
    assert set(typing.get_args(hints["weight_normaliser"])) == set(NORMALISERS)
    assert set(typing.get_args(typing.get_type_hints(PETSSettings)["propagation"])) == set(PROPAGATIONS)


def test_every_setting_is_documented_and_vmbpo_config_shows_each_with_its_value_and_range(capsys):
    from torchrl_vmbpo.training.validation import field_docs

    for settings in {*(a.settings for a in ALGORITHMS.values()), TrainConfig}:
        docs = field_docs(settings)
        undocumented = [f.name for f in dataclasses.fields(settings) if not docs.get(f.name)]
        assert not undocumented, f"{settings.__name__}: {undocumented}"
    assert main(["config", "--algo", "vmbpo", "--env", "Hopper-v5", "--set", "extra.eta=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "extra.eta = 2.0" in lines
    assert lines[lines.index("extra.eta = 2.0") + 1].startswith("    a number > 0. Temperature of p(O=1|x,a)")
    assert "steps = 20000" in lines and "extra.entropy_constraint = true" in lines  # the preset's entry
    assert main(["config", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["algo"] == "mbpo"
