"""Where a run computes: ``TrainConfig.device`` resolved to a torch device, and the one place where the
real env's CPU tensors meet the agent's device (:class:`PolicyOnDevice`).

Everything an agent owns (networks, optimizer states, both replay buffers, q_d's fit, imagination)
lives on the run's device; the real env and its MuJoCo simulation stay on the CPU.
"""

from __future__ import annotations

import re

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from torchrl_vmbpo.errors import ConfigError

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(name: str) -> None:
    """ConfigError unless ``name`` is one of :data:`DEVICE_CHOICES` (spelling only: whether a GPU
    exists is checked where the run starts, :func:`resolve_device`, so a config can be written on a
    CPU machine for a GPU one)."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise ConfigError(f"device must be {DEVICE_CHOICES}, got {name!r}")


def resolve_device(name: str) -> torch.device:
    """The torch device of ``TrainConfig.device``: ``auto`` is the first GPU when torch sees one, else
    the CPU; a CUDA device that is not there is a ConfigError (raised before a run writes anything).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r}: torch sees no CUDA GPU here (torch.cuda.is_available() is False, torch "
                f"{torch.__version__}); use device=cpu or device=auto"
            )
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r}: torch sees {torch.cuda.device_count()} GPU(s) (cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1})"
            )
        device = torch.device("cuda", index)
    return device


class PolicyOnDevice(TensorDictModuleBase):
    """A policy on ``device`` acting in a CPU env: the env's tensordict goes to the device (only the
    policy's inputs), the policy's outputs come back to the env's device. The real-env collector and
    the evaluation both act through it; :func:`on_device` returns the policy itself on the CPU.

    Not a registered submodule of anything: it holds the policy by reference (its ``state_dict`` is the
    policy's owner's).
    """

    def __init__(self, policy: TensorDictModuleBase, device: torch.device):
        super().__init__()
        self.__dict__["policy"] = policy  # a reference, not a submodule
        self.device = torch.device(device)
        self.in_keys = list(policy.in_keys)
        self.out_keys = list(policy.out_keys)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        inputs = tensordict.select(*self.in_keys, strict=False).to(self.device, non_blocking=True)
        outputs = self.policy(inputs).select(*self.out_keys, strict=False)
        return tensordict.update(outputs.to(tensordict.device or torch.device("cpu")))


def on_device(policy: TensorDictModuleBase, device: torch.device) -> TensorDictModuleBase:
    """``policy`` itself on the CPU, else :class:`PolicyOnDevice` around it."""
    return policy if torch.device(device).type == "cpu" else PolicyOnDevice(policy, device)
