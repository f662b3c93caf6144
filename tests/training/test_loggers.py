"""The training-metric logger is chosen per run (``--set logger=...``): CSV by default, TensorBoard, W&B and
MLflow through TorchRL's loggers, each an optional package named in a one-line ConfigError when missing."""

import importlib.util

import pytest
import torchrl.record.loggers.tensorboard as tb

from torchrl_vmbpo.algorithms import default_config
from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.training import loggers


def test_csv_is_the_default_and_keeps_the_scalars_layout(tmp_path):
    cfg = default_config("sac", "Pendulum-v1")
    assert cfg.logger == "csv"
    logger = loggers.make_logger(cfg, tmp_path)
    logger.log_scalar("loss_actor", 1.5, step=10)
    assert (tmp_path / "logs" / "scalars" / "loss_actor.csv").read_text().strip() == "10,1.5"


@pytest.mark.parametrize("kind, package", [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_missing_optional_logger_package_is_a_config_error_naming_it(monkeypatch, kind, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None if name == package else real(name))
    with pytest.raises(ConfigError, match=f"logger={kind} needs the '{package}' package.*pip install {package}"):
        default_config("sac", "Pendulum-v1", overrides=[f"logger={kind}"])


def test_unknown_logger_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="logger must be one of"):
        default_config("sac", "Pendulum-v1", overrides=["logger=neptune"])


def test_tensorboard_choice_makes_torchrl_tensorboard_logger_in_the_run_folder(monkeypatch, tmp_path):
    made = {}

    class Recorder:
        def __init__(self, exp_name, log_dir):
            made.update(exp_name=exp_name, log_dir=log_dir)

    monkeypatch.setattr(loggers, "check_logger", lambda kind: None)
    monkeypatch.setattr(tb, "TensorboardLogger", Recorder)
    cfg = default_config("sac", "Pendulum-v1").replace(logger="csv")
    object.__setattr__(cfg, "logger", "tensorboard")  # skip the package check of the config itself
    assert isinstance(loggers.make_logger(cfg, tmp_path), Recorder)
    assert made == {"exp_name": "logs", "log_dir": str(tmp_path)}
