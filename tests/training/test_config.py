import pytest

from torchrl_vmbpo.algorithms import default_config
from torchrl_vmbpo.algorithms.mpo import MPOSettings
from torchrl_vmbpo.algorithms.vmbpo_mfe import VMBPOMFESettings
from torchrl_vmbpo.training.config import TrainConfig


def test_overrides_parse_json_and_tuples():
    cfg = TrainConfig(algo="vmbpo").with_overrides(["utd=10", "hidden=[64,64]", "max_grad_norm=null", "extra.eta=2.5"])
    assert cfg.utd == 10 and cfg.hidden == (64, 64) and cfg.max_grad_norm is None and cfg.extra.eta == 2.5


def test_unknown_field_and_bad_values_are_named():
    with pytest.raises(ValueError, match="unknown config field 'bogus'"):
        TrainConfig().with_overrides(["bogus=1"])
    with pytest.raises(ValueError, match="gamma"):
        TrainConfig(gamma=1.5)
    with pytest.raises(ValueError, match="num_elites"):
        TrainConfig(num_members=3, num_elites=5)


def test_rollout_length_schedule_is_linear_between_epochs():
    cfg = TrainConfig(rollout_schedule=(20, 150, 1, 15))
    assert cfg.rollout_length(5_000) == 1
    assert cfg.rollout_length(20_000) == 1
    assert cfg.rollout_length(85_000) == 8  # halfway: 1 + 0.5 * 14
    assert cfg.rollout_length(150_000) == 15 and cfg.rollout_length(400_000) == 15


def test_presets_take_mbpo_defaults_per_env():
    hopper = default_config("mbpo", "Hopper-v5")
    assert hopper.rollout_schedule == (20, 150, 1, 15) and hopper.utd == 20 and hopper.target_entropy == -1.0
    assert default_config("mbpo", "HalfCheetah-v5").utd == 40 == default_config("vmbpo", "HalfCheetah-v5").utd
    assert default_config("vmbpo-mfe", "HalfCheetah-v5").utd == 1
    assert default_config("sac", "Hopper-v5").utd == 1
    with pytest.raises(ValueError, match="unknown algorithm"):
        default_config("dqn", "Hopper-v5")


def test_per_algorithm_env_defaults_override_the_presets_and_yield_to_changes():
    assert (
        default_config("mpo", "InvertedPendulum-v5").utd == 4 == default_config("vmbpo-mfe", "InvertedPendulum-v5").utd
    )
    assert default_config("mpo", "Pendulum-v1").utd == 1 and default_config("sac", "InvertedPendulum-v5").utd == 1
    assert default_config("mpo", "InvertedPendulum-v5", utd=2.0).utd == 2
    assert default_config("vmbpo-mfe", "InvertedPendulum-v5").extra.temperature == 10.0
    assert default_config("vmbpo-mfe", "Pendulum-v1").extra == VMBPOMFESettings()  # the class's defaults
    # Only MBPO's Pendulum row waits 1,000 random steps; the env's 500 holds for everyone else.
    assert default_config("mbpo", "Pendulum-v1").init_random_steps == 1000
    assert (
        default_config("vmbpo", "Pendulum-v1").init_random_steps
        == 500
        == default_config("sac", "Pendulum-v1").init_random_steps
    )
    assert default_config("mbpo", "Pendulum-v1", init_random_steps=200).init_random_steps == 200


def test_per_env_extra_settings_merge_with_changes_and_overrides(monkeypatch):
    from torchrl_vmbpo.algorithms import presets

    entry = dict(algo="mpo", env="Pendulum-v1", settings=dict(utd=2.0), extra=dict(num_samples=8), reason="", record="")
    monkeypatch.setitem(presets.ENV_DEFAULTS.overrides, ("mpo", "Pendulum-v1"), entry)
    cfg = default_config("mpo", "Pendulum-v1", extra=dict(epsilon=0.2))
    assert cfg.utd == 2 and cfg.extra == MPOSettings(num_samples=8, epsilon=0.2)  # the preset's entry kept
    assert cfg.with_overrides(["extra.num_samples=4"]).extra == MPOSettings(num_samples=4, epsilon=0.2)
    assert default_config("mpo", "Pendulum-v1", extra=dict(num_samples=16)).extra == MPOSettings(num_samples=16)


@pytest.mark.parametrize("env", ["Pendulum-v1", "InvertedPendulum-v5", "Hopper-v5", "HalfCheetah-v5"])
def test_every_presets_extra_defaults_parse_into_its_settings(env):
    from torchrl_vmbpo.algorithms.presets import ALGORITHMS

    for algo, settings_type in {name: a.settings for name, a in ALGORITHMS.items()}.items():
        settings = settings_type.from_extra(default_config(algo, env).extra)  # raises on an unknown entry
        assert isinstance(settings, settings_type)


def test_every_override_in_the_presets_file_says_why_and_links_an_existing_record():
    from pathlib import Path

    from torchrl_vmbpo.algorithms import presets

    root = Path(presets.__file__).parents[2]
    assert presets.ENV_DEFAULTS.overrides
    for (algo, env), entry in presets.ENV_DEFAULTS.overrides.items():
        assert entry["reason"].strip() and "\n" not in entry["reason"], (algo, env)
        assert (root / entry["record"]).is_dir(), entry["record"]
        default_config(algo, env)  # each override is a valid config


def test_vmbpo_takes_the_same_settings_on_every_env():
    """Issue 24's bar: no per-env VMBPO entry chosen by tuning; only env facts ([env.ENV], MBPO's model
    schedule and UTD) differ between envs."""
    from torchrl_vmbpo.algorithms import presets

    assert not [key for key in presets.ENV_DEFAULTS.overrides if key[0].startswith("vmbpo") and key[0] != "vmbpo-mfe"]
    envs = ["Pendulum-v1", "InvertedPendulum-v5", "Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Reacher-v5"]
    assert len({default_config("vmbpo", env).extra for env in envs}) == 1
    assert {default_config("vmbpo", env).real_ratio for env in envs} == {0.05}
    s = default_config("vmbpo", "Hopper-v5").extra
    assert (s.weight_mix, s.entropy_constraint, s.bootstrap, s.acting_policy) == (0.0, True, "action_value", "q_c")
    assert default_config("vmbpo-twist-off", "Hopper-v5").extra.weight_mix == 1.0
    assert default_config("vmbpo-paper", "Hopper-v5").real_ratio == 0.0


def test_a_malformed_presets_file_is_named(tmp_path):
    from torchrl_vmbpo.algorithms.presets import EnvDefaults
    from torchrl_vmbpo.errors import ConfigError

    (tmp_path / "bad.toml").write_text('[[override]]\nalgo = "mbpo"\nenv = "Pendulum-v1"\n')
    with pytest.raises(ConfigError, match="lacks \\['reason', 'record'\\]"):
        EnvDefaults.load(tmp_path / "bad.toml")
    (tmp_path / "broken.toml").write_text("[env\n")
    with pytest.raises(ConfigError, match="not a readable presets file"):
        EnvDefaults.load(tmp_path / "broken.toml")


def test_extra_is_the_algorithms_typed_settings_and_round_trips_through_json():
    import json

    from torchrl_vmbpo.algorithms.vmbpo import VMBPOSettings
    from torchrl_vmbpo.errors import ConfigError

    cfg = default_config("vmbpo", "Hopper-v5", overrides=["extra.eta=2"])
    assert isinstance(cfg.extra, VMBPOSettings) and cfg.extra.eta == 2.0 and cfg.extra.bootstrap == "action_value"
    assert TrainConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig(algo="vmbpo", extra=VMBPOSettings(eta=4.0)).extra.eta == 4.0
    with pytest.raises(ConfigError, match="extra holds VMBPOSettings, but MPO takes MPOSettings"):
        cfg.replace(algo="mpo")
