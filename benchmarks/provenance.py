"""Provenance recorded by the benchmark scripts: the commit that ran and the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine(device: torch.device | None = None) -> dict:
    """CPU model and count, platform, torch version and threads, and the GPU's name on a CUDA device."""
    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu_model"] = fields.get("Model name", "?").strip()
        info["cores_per_socket"] = fields.get("Core(s) per socket", "?").strip()
    except (OSError, subprocess.CalledProcessError):
        info["cpu_model"] = platform.processor() or "?"
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def commit(*paths: str) -> str:
    """``git rev-parse HEAD``, marked when the package or ``paths`` have uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "torchrl_vmbpo", *paths],
                               cwd=ROOT, capture_output=True, text=True, check=True)
        return head.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
