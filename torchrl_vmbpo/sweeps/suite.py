"""Sweep suites: a TOML file names algorithms x envs x hyper-parameter grids x seeds; each trial is one run folder.

A suite file (``torchrl_vmbpo/sweeps/suites/*.toml``, or any path)::

    name = "smoke"                 # the sweep folder's default name: results/NAME
    description = "..."
    seeds = [0, 1]
    scale = 1.0                    # multiplies every budget (steps, init_random_steps, eval_every, checkpoint_every)
    cpus_per_trial = 1             # torch threads and Ray CPUs of each trial
    gpus_per_trial = 0.25          # Ray GPU fraction of a trial that runs on a GPU (device cuda, or auto
                                   # where the machine starting the sweep has one); 0.125: 8 runs per GPU
    set = ["eval_every=1000"]      # --set entries of every trial
    folder = "{algo}/{env}/{tag}/seed{seed}"  # optional: each trial's folder under the sweep folder

    [envs]                         # env id = env steps at scale 1
    "Pendulum-v1" = 50000

    [algos.sac]                    # one table per algorithm (preset name)
    envs = ["Pendulum-v1"]         # optional: a subset of [envs]
    set = ["utd=1"]                # optional: this algorithm's fixed --set entries
    grid = { tau = [0.005, 0.02] } # optional: every combination is one configuration

A trial is (algo, env, seed, steps, overrides); its folder ``OUT/ALGO/ENV/TAG/seedS`` (TAG: the grid
values, ``preset`` without a grid) is deterministic, so a rerun finds it: ``summary.json`` with the
trial's env steps is finished (skipped), a ``checkpoint.pt`` is a killed run (resumed), anything else
starts afresh (a partial folder without a checkpoint is overwritten).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import tomllib
import torch

from torchrl_vmbpo.algorithms import PRESETS, default_config, resume, run
from torchrl_vmbpo.errors import RunFolderError, SuiteError, VMBPOError
from torchrl_vmbpo.training.checkpoint import read_checkpoint

FOLDER = "{algo}/{env}/{tag}/seed{seed}"
SUITES_DIR = Path(__file__).resolve().parent / "suites"
SCALED = ("init_random_steps", "eval_every", "checkpoint_every")
"""Budgets that ``scale`` multiplies besides ``steps`` (the preset's value, or the suite's ``set``)."""


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


@dataclass(frozen=True)
class AlgoEntry:
    envs: tuple[str, ...] | None = None
    set: tuple[str, ...] = ()
    grid: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: ``vmbpo train --algo ALGO --env ENV --seed SEED --steps STEPS --set ...``."""

    algo: str
    env: str
    seed: int
    steps: int
    tag: str  #: the configuration: its grid values (``preset`` for none)
    overrides: tuple[str, ...]  #: every --set entry (suite, algorithm, grid, scaled budgets, threads)
    folder: str  #: the run folder (absolute)
    cpus: int = 1
    gpus: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.algo}/{self.env}/{self.tag}/seed{self.seed}"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Trial:
        return cls(**{**data, "overrides": tuple(data["overrides"])})

    def config(self):
        return default_config(self.algo, self.env, overrides=list(self.overrides), seed=self.seed, steps=self.steps)

    def state(self) -> str:
        """``finished`` (summary.json at this trial's steps), ``killed`` (a checkpoint to resume) or ``new``."""
        folder = Path(self.folder)
        summary = folder / "summary.json"
        if summary.is_file():
            try:
                if json.loads(summary.read_text()).get("env_steps") == self.steps:
                    return "finished"
            except json.JSONDecodeError:
                pass
        return "killed" if (folder / "checkpoint.pt").is_file() else "new"


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    envs: dict[str, int]
    algos: dict[str, AlgoEntry]
    seeds: tuple[int, ...] = (0,)
    description: str = ""
    scale: float = 1.0
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.25
    set: tuple[str, ...] = ()
    folder: str = FOLDER

    def configurations(self, algo: str) -> list[tuple[str, list[str]]]:
        """``(tag, --set entries)`` of each combination of ``algo``'s grid (``("preset", [])`` without one)."""
        grid = self.algos[algo].grid
        if not grid:
            return [("preset", [])]
        names = sorted(grid)
        out = []
        for values in itertools.product(*(grid[n] for n in names)):
            sets = [f"{n}={json.dumps(v)}" for n, v in zip(names, values)]
            tag = ",".join(f"{n.removeprefix('extra.')}={_tag_value(v)}" for n, v in zip(names, values))
            out.append((tag, sets))
        return out

    def trials(self, out: str | Path) -> list[Trial]:
        """Every trial, its settings checked (a bad one is a SuiteError naming the suite, algorithm and env)."""
        out = Path(out).resolve()
        trials = []
        for algo, entry in self.algos.items():
            for env in entry.envs or tuple(self.envs):
                for tag, grid_sets in self.configurations(algo):
                    sets = [*self.set, *entry.set, *grid_sets]
                    where = f"{self.path}: algos.{algo}, env {env}, configuration {tag}"
                    base = _checked(where, lambda: default_config(algo, env, overrides=sets, steps=self.envs[env]))  # noqa: B023 (called at once)
                    steps = max(1, round(self.envs[env] * self.scale))
                    budgets = (
                        [
                            f"{n}={max(1 if n == 'eval_every' else 0, round(getattr(base, n) * self.scale))}"
                            for n in SCALED
                        ]
                        if self.scale != 1.0
                        else []
                    )
                    overrides = (*sets, *budgets, f"num_threads={self.cpus_per_trial}")
                    on_gpu = base.device.startswith("cuda") or (base.device == "auto" and torch.cuda.is_available())
                    for seed in self.seeds:
                        folder = self.folder.format(algo=algo, env=env.replace("/", "_"), tag=_safe(tag), seed=seed)
                        trial = Trial(
                            algo,
                            env,
                            seed,
                            steps,
                            tag,
                            overrides,
                            str(out / folder),
                            cpus=self.cpus_per_trial,
                            gpus=self.gpus_per_trial if on_gpu else 0.0,
                        )
                        _checked(where, trial.config)
                        trials.append(trial)
        folders = [t.folder for t in trials]
        if len(set(folders)) < len(folders):
            twice = next(f for f in folders if folders.count(f) > 1)
            raise SuiteError(
                f"{self.path}: folder {self.folder!r} gives two trials the same folder ({twice}); "
                "include {tag} (and {algo}, {env}, {seed})"
            )
        return trials


def execute_trial(trial: Trial, *, progress: bool = False) -> tuple[str, dict]:
    """Bring ``trial``'s folder to a finished run: ``("skipped", summary)`` when it is finished already,
    ``("resumed", ...)`` from its checkpoint when it was killed, ``("started", ...)`` otherwise (a partial
    folder without a usable checkpoint is overwritten, never a finished run of another length; a run killed
    after its last checkpoint but before its summary.json starts again). Raises what :func:`run` /
    :func:`resume` raise."""
    folder = Path(trial.folder)
    state = trial.state()
    if state == "finished":
        return "skipped", json.loads((folder / "summary.json").read_text())
    if state == "killed" and read_checkpoint(folder / "checkpoint.pt")["env_steps"] < trial.steps:
        return "resumed", resume(folder, steps=trial.steps, progress=progress, overrides=list(trial.overrides))
    if (folder / "summary.json").is_file():
        raise RunFolderError(
            f"{folder} holds a finished run of another length than the {trial.steps} steps of "
            f"{trial.name}, which it cannot be extended to; move it away to run this trial"
        )
    return "started", run(trial.config(), folder, overwrite=True, progress=progress)


def _checked(where: str, make):
    try:
        return make()
    except VMBPOError as err:
        raise SuiteError(f"{where}: {err}") from None


def _tag_value(value) -> str:
    return ",".join(map(_tag_value, value)) if isinstance(value, list) else str(value)


def _safe(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", tag)


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite by name (``smoke``, ``paper-table1``, ... in ``SUITES_DIR``) or by path to a ``.toml`` file.

    Raises:
        SuiteError: unknown name, unreadable or malformed file, or a field with a bad value (one line, naming it).
    """
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        if not (SUITES_DIR / f"{name_or_path}.toml").is_file():
            raise SuiteError(
                f"unknown suite {str(name_or_path)!r}; available: {', '.join(available_suites())} "
                "(or a path to a .toml suite file)"
            )
        path = SUITES_DIR / f"{name_or_path}.toml"
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise SuiteError(f"cannot read suite file {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path} is not valid TOML: {err}") from None
    return _parse(path, data)


_TOP = {
    "folder": str,
    "name": str,
    "description": str,
    "seeds": list,
    "scale": (int, float),
    "cpus_per_trial": int,
    "gpus_per_trial": (int, float),
    "set": list,
    "envs": dict,
    "algos": dict,
}


def _parse(path: Path, data: dict) -> Suite:
    def bad(name: str, what: str, value) -> SuiteError:
        return SuiteError(f"{path}: {name} must be {what}, got {value!r}")

    if unknown := sorted(set(data) - set(_TOP)):
        raise SuiteError(f"{path}: unknown field(s) {unknown}; known: {sorted(_TOP)}")
    for name in ("envs", "algos"):
        if name not in data:
            raise SuiteError(f"{path}: missing field {name!r}")
    for name, kind in _TOP.items():
        if name in data and (not isinstance(data[name], kind) or isinstance(data[name], bool)):
            raise bad(name, f"a {kind.__name__ if isinstance(kind, type) else 'number'}", data[name])
    seeds = data.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise bad("seeds", "a non-empty list of integers >= 0", seeds)
    if not data["envs"] or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in data["envs"].values()
    ):
        raise bad("envs", "a table of env id = steps (integers > 0)", data["envs"])
    if not data.get("scale", 1.0) > 0:
        raise bad("scale", "a number > 0", data["scale"])
    if data.get("cpus_per_trial", 1) < 1:
        raise bad("cpus_per_trial", "an integer >= 1", data["cpus_per_trial"])
    if not 0 < data.get("gpus_per_trial", 0.25) <= 1:
        raise bad("gpus_per_trial", "a fraction in (0, 1]", data["gpus_per_trial"])
    _check_sets("set", data.get("set", []), bad)
    try:
        data.get("folder", FOLDER).format(algo="a", env="e", tag="t", seed=0)
    except (KeyError, IndexError, ValueError):
        raise bad("folder", "a path template of {algo}, {env}, {tag} and {seed}", data["folder"]) from None
    if not data["algos"]:
        raise bad("algos", "a table with one table per algorithm", data["algos"])
    algos = {}
    for algo, entry in data["algos"].items():
        where = f"algos.{algo}"
        if algo not in PRESETS:
            raise SuiteError(f"{path}: {where}: unknown algorithm {algo!r}; available: {', '.join(PRESETS)}")
        if not isinstance(entry, dict):
            raise bad(where, "a table (envs, set, grid)", entry)
        if unknown := sorted(set(entry) - {"envs", "set", "grid"}):
            raise SuiteError(f"{path}: {where}: unknown field(s) {unknown}; known: ['envs', 'grid', 'set']")
        envs = entry.get("envs")
        if envs is not None and (not isinstance(envs, list) or not envs or not set(envs) <= set(data["envs"])):
            raise bad(f"{where}.envs", f"a non-empty list of the suite's envs {sorted(data['envs'])}", envs)
        _check_sets(f"{where}.set", entry.get("set", []), bad)
        grid = entry.get("grid", {})
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise bad(f"{where}.grid", "a table of setting = [values, ...] (non-empty lists)", grid)
        algos[algo] = AlgoEntry(tuple(envs) if envs else None, tuple(entry.get("set", [])), dict(grid))
    return Suite(
        name=data.get("name", path.stem),
        path=path,
        envs=dict(data["envs"]),
        algos=algos,
        seeds=tuple(seeds),
        description=data.get("description", ""),
        scale=float(data.get("scale", 1.0)),
        cpus_per_trial=data.get("cpus_per_trial", 1),
        gpus_per_trial=float(data.get("gpus_per_trial", 0.25)),
        set=tuple(data.get("set", [])),
        folder=data.get("folder", FOLDER),
    )


def _check_sets(name: str, sets, bad) -> None:
    if not isinstance(sets, list) or not all(isinstance(s, str) and "=" in s for s in sets):
        raise bad(name, 'a list of "NAME=VALUE" strings', sets)
    if reserved := [s for s in sets if s.partition("=")[0] in ("seed", "steps", "algo", "env")]:
        raise bad(name, "free of seed, steps, algo and env (the suite's seeds, envs and algos set them)", reserved)
