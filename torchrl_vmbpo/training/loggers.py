"""The run's training-metric logger, chosen by ``TrainConfig.logger``: TorchRL's CSV (default), TensorBoard,
Weights & Biases or MLflow logger.

CSV writes ``DIR/logs/scalars/NAME.csv`` (``step,value`` rows; a resumed run truncates them at its
checkpoint). The others are optional packages (``pip install 'torchrl_vmbpo[tensorboard]'`` etc.);
choosing one that is not installed is a :class:`ConfigError` naming the package, raised when the config
is made. TensorBoard writes ``DIR/logs/`` (``tensorboard --logdir DIR``); W&B takes its project and
mode from its own variables (``WANDB_PROJECT``, default ``torchrl_vmbpo``; ``WANDB_MODE=offline``) and
keeps its files in ``DIR/logs/``; MLflow logs to ``MLFLOW_TRACKING_URI`` or else ``DIR/logs/mlruns``.
metrics.csv and summary.json are written whichever logger runs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from torchrl_vmbpo.errors import ConfigError

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
"""The pip package each optional logger needs (TensorBoard: torch.utils.tensorboard needs ``tensorboard``)."""


def check_logger(kind: str) -> None:
    """ConfigError unless ``kind``'s package is importable (``kind`` itself is checked by TrainConfig)."""
    package = PACKAGES.get(kind)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"logger={kind} needs the {package!r} package, which is not installed: "
            f"pip install {package} (or 'torchrl_vmbpo[{kind}]'); logger=csv needs nothing"
        )


def make_logger(cfg, out: Path):
    """TorchRL's logger of ``cfg.logger`` for the run folder ``out``."""
    check_logger(cfg.logger)
    name = f"{cfg.algo}-{cfg.env.replace('/', '_')}-seed{cfg.seed}"
    if cfg.logger == "tensorboard":
        from torchrl.record.loggers.tensorboard import TensorboardLogger

        return TensorboardLogger(exp_name="logs", log_dir=str(out))
    if cfg.logger == "wandb":
        from torchrl.record.loggers.wandb import WandbLogger

        (out / "logs").mkdir(parents=True, exist_ok=True)
        return WandbLogger(
            exp_name=name,
            save_dir=str(out / "logs"),
            project=os.environ.get("WANDB_PROJECT", "torchrl_vmbpo"),
            offline=os.environ.get("WANDB_MODE") == "offline",
        )
    if cfg.logger == "mlflow":
        from torchrl.record.loggers.mlflow import MLFlowLogger

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (out / "logs" / "mlruns").resolve().as_uri()
        return MLFlowLogger(exp_name=name, tracking_uri=uri)
    from torchrl.record.loggers.csv import CSVLogger

    return CSVLogger(exp_name="logs", log_dir=str(out))
