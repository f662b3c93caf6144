"""The library's own error classes: what a user did wrong, as opposed to a bug.

The command line turns these (and only these) into one-line messages with exit code 2; any other
exception keeps its traceback. Each subclasses the built-in a caller would have caught before
(``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name if empty), cut at ``limit`` characters:
    what the library's one-line messages quote of an error it wraps."""
    lines = str(err).strip().splitlines()
    line = lines[0] if lines else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class VMBPOError(Exception):
    """Base of every error the library raises about its input (settings, envs, run folders, checkpoints)."""


class ConfigError(VMBPOError, ValueError):
    """A setting has the wrong type or range, or settings contradict each other; nothing was written."""


class EnvError(VMBPOError, ValueError):
    """The env cannot be used (unknown id, missing optional package, unsupported spaces)."""


class UnknownEnvFunction(EnvError, KeyError):
    """No known termination or reward function for an env id (a ``KeyError`` too: a lookup failed)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BatchShapeError(VMBPOError, ValueError):
    """A loss's batch entry has the wrong shape; the message names the entry, its shape and the one expected."""


class RunFolderError(VMBPOError, ValueError):
    """The run folder cannot be used as asked (holds another run, not writable, wrong run's checkpoint)."""


class CheckpointError(VMBPOError, ValueError):
    """A checkpoint is unreadable, unsafe to load, or does not match the agent; the agent is unchanged."""


class CheckpointNotFound(VMBPOError, FileNotFoundError):
    """No checkpoint where one was expected."""


class RunInterrupted(VMBPOError):
    """SIGINT or SIGTERM stopped a run after it wrote a checkpoint at ``env_steps`` (resumable);
    ``exit_code`` is the shell's 128 + signal number (130, 143)."""

    def __init__(self, signal_name: str, env_steps: int, out_dir: str, exit_code: int):
        self.signal_name, self.env_steps, self.out_dir, self.exit_code = signal_name, env_steps, out_dir, exit_code
        super().__init__(
            f"interrupted by {signal_name} at env step {env_steps}; wrote {out_dir}/checkpoint.pt; "
            f"continue with: vmbpo train --resume --out {out_dir}"
        )


class SuiteError(ConfigError):
    """A sweep suite cannot be used: unknown name, unreadable file, or a field with a bad value (named)."""


class CriticDiverged(VMBPOError):
    """``divergence="stop"``: the critic left the range the rewards allow (``training.divergence``); the
    run wrote its checkpoint and summary.json at ``env_steps`` first."""

    def __init__(self, detail: str, env_steps: int, out_dir: str):
        self.env_steps, self.out_dir = env_steps, out_dir
        super().__init__(
            f"{detail}; stopped (divergence=stop) after writing {out_dir}/checkpoint.pt and summary.json "
            "(divergence=warn lets a run go on past it)"
        )
