"""Config overrides the tests share (``--set`` strings): agents small enough for one CPU thread.

Importable from every test module because pytest puts this folder (that of the root conftest.py) on
``sys.path``. Later assignments win, so a test adds or changes a setting by appending to a list.
"""

TINY_NETS = ["hidden=[8]", "model_hidden=[8]"]
"""The smallest networks: for tests of single updates, model-fit steps and state dicts."""

TINY_STEPS = [*TINY_NETS, "batch_size=16", "model_batch_size=16"]
"""Tiny networks and batches: for tests that take a few updates or fit steps outside a run."""

SMALL_RUN = [
    "hidden=[32,32]",
    "model_hidden=[32,32]",
    "rollouts_per_step=4",
    "model_max_epochs=3",
    "eval_episodes=1",
    "eval_every=150",
    "init_random_steps=100",
    "model_retrain_every=100",
    "batch_size=32",
    "model_batch_size=64",
]
"""A whole training run of a few hundred steps that goes through every phase of the loop."""


def train_argv(algo: str, out, *, steps: int, seed: int, sets=(), env: str = "Pendulum-v1") -> list[str]:
    """``vmbpo train`` arguments of a short run without a progress bar, each of ``sets`` as a ``--set``."""
    return [
        "train",
        *("--algo", algo, "--env", env, "--steps", str(steps), "--seed", str(seed), "--out", str(out)),
        "--no-progress",
        *(arg for item in sets for arg in ("--set", item)),
    ]
