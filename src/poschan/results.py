"""The results contract: a run directory that appears complete or not at all.

A run works in ``OUT.partial/`` (checkpoints, logs, tables) and is renamed to ``OUT`` only when it finished,
so ``OUT`` never holds partial results, and an interrupted run can be resumed from ``OUT.partial``.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from poschan import __version__
from poschan.distributed import is_main
from poschan.errors import UserError
from poschan.execution import cpu_capability, resolve_precision
from poschan.runtime import resolve_device
from poschan.stats import METHOD_VERSION


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """A temporary file (fd, name) in ``path``'s folder, to be renamed onto ``path``; with the permissions a
    plainly created file would get (mkstemp's own are owner-only)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (rank 0 only under torchrun)."""
    if not is_main():
        return
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` through a temporary file, fsync and rename: a kill never leaves a torn checkpoint (rank 0
    only under torchrun)."""
    if not is_main():
        return
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_tensor_file(path: str | Path, what: str) -> object:
    """``torch.load(path, weights_only=True)`` with poschan's own refusal: a file holding pickled Python objects
    (which could run code) is never loaded, and the message never suggests loading it unsafely."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise UserError(f"cannot read {what} {str(path)!r}: {err.strerror or err}") from None
    except Exception:  # torch raises several types for foreign or unsafe files
        if zipfile.is_zipfile(path):
            raise UserError(f"{what} {str(path)!r} refused: it holds pickled Python objects, which poschan never "
                            "loads because they can run code; save tensors only, e.g. "
                            "torch.save(model.state_dict(), path)") from None
        raise UserError(f"{what} {str(path)!r} is not a file written by torch.save (expected a state dict of "
                        "tensors)") from None


def environment(device: str, precision: str | None = None) -> dict:
    """Versions (of the statistics' method too), the device and what its CPU computes natively; with a run's configured training ``precision``,
    the precision it resolved to there (evaluation, rankings and ablations always run in fp32)."""
    env = {"poschan": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "device": device, "cpu": cpu_capability(), "stats": METHOD_VERSION}
    if precision is not None:
        env["training_precision"] = resolve_precision(precision, resolve_device(device))
    return env


CONFIG_FILE = "config.yaml"
# Settings of where and how many of a run's jobs run at once (poschan.executor) and of its torchrun world size: a
# resume may change them. Only the float rounding of the work still to do can change with them (``workers`` sets
# each job's torch threads; the ranks split every batch, poschan.distributed).
SCHEDULING_KEYS = frozenset({"executor", "workers", "address", "world_size"})


def _plain(config: dict) -> dict:
    """``config`` as YAML reads it back (tuples become lists, and so on), for comparing settings."""
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=False))


@dataclass
class RunDir:
    """``OUT.partial`` while running, renamed to ``OUT`` by :meth:`commit`.

    The resolved ``config`` is written into ``OUT.partial`` when the run starts; a resume with any other
    setting (``SCHEDULING_KEYS`` excepted) is refused, so a finished run's results always describe the settings
    every epoch used.
    """

    out: Path
    config: dict
    resume: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.work = self.out.with_name(self.out.name + ".partial")
        self._created = False

    def check(self) -> None:
        """Refuse a taken destination, a stray interrupted run, or a resume whose recorded settings differ.
        Writes nothing."""
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise UserError(f"--out {self.out} already exists and is not empty; choose a new directory")
        if self.work.exists() and not self.resume:
            raise UserError(f"{self.work} holds an interrupted run; pass --resume to continue it, or remove it")
        if not self.resume:
            return
        recorded_file = self.work / CONFIG_FILE
        if not recorded_file.is_file():
            raise UserError(f"--resume: no interrupted run with recorded settings at {self.work}")
        try:
            recorded = yaml.safe_load(recorded_file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"--resume: cannot read the recorded settings {recorded_file}: {exc}") from None
        current = _plain(self.config)
        recorded = recorded if isinstance(recorded, dict) else {}
        keys = (set(current) | set(recorded)) - SCHEDULING_KEYS
        changed = sorted(k for k in keys if current.get(k) != recorded.get(k))
        if changed:
            detail = ", ".join(f"{k} ({recorded.get(k)!r} -> {current.get(k)!r})" for k in changed)
            raise UserError(f"--resume with changed settings: {detail}; resume with the recorded settings of "
                            f"{recorded_file}, or start a new --out")

    def open(self) -> Path:
        """Check, then create (or, with resume, reuse) the work directory and record the settings in it."""
        self.check()
        try:
            self.work.mkdir(parents=True, exist_ok=self.resume)
        except OSError as exc:
            raise UserError(f"cannot write to --out {self.out}: {exc.strerror or exc}") from None
        if not os.access(self.work, os.W_OK):
            raise UserError(f"cannot write to --out {self.out}: permission denied")
        self._created = not self.resume
        if self._created:
            atomic_write_text(self.work / CONFIG_FILE, yaml.safe_dump(self.config, sort_keys=False))
        return self.work

    def discard_if_new(self) -> None:
        """Remove a work directory this invocation created (used when input turns out to be bad)."""
        if self._created and self.work.exists():
            shutil.rmtree(self.work)

    def write_results(self, experiment: str, metrics: dict, seeds: list[int], device: str, elapsed_s: float,
                      command: str | None = None) -> None:
        """``results.json``: the contract's keys, the command line that ran (when given) and the UTC date."""
        payload = {"experiment": experiment, "config": self.config, "metrics": metrics, "seeds": seeds,
                   "env": environment(device, self.config.get("precision")), "elapsed_s": elapsed_s,
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if command is not None:
            payload["command"] = command
        atomic_write_text(self.work / "results.json", json.dumps(payload, indent=2) + "\n")

    def commit(self) -> Path:
        """Publish the finished run at ``OUT``."""
        if self.out.is_dir():
            self.out.rmdir()  # only an empty directory can be here (checked in open)
        os.replace(self.work, self.out)
        return self.out


@dataclass(frozen=True)
class Run:
    """A finished run as ``load_run`` reads it: ``results.json``'s fields, and the tables and figures beside it."""

    path: Path
    experiment: str
    config: dict
    metrics: dict
    seeds: list[int]
    env: dict
    elapsed_s: float
    command: str | None = None
    date: str | None = None

    @property
    def tables(self) -> list[str]:
        """Names of the CSV tables of the run (``table``, ``curves``, ...), for :meth:`table`."""
        return sorted(p.stem for p in self.path.glob("*.csv"))

    @property
    def figures(self) -> list[Path]:
        return sorted(self.path.glob("*.png"))

    def table(self, name: str = "table") -> list[dict[str, str]]:
        """The rows of ``<name>.csv`` as dicts of strings (columns as written)."""
        path = self.path / f"{name}.csv"
        if not path.is_file():
            raise UserError(f"run {self.path} has no table {name!r}; tables: {', '.join(self.tables) or 'none'}")
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))


def load_run(path: str | Path) -> Run:
    """The results of the finished run in directory ``path`` (one-line UserError when it is not one)."""
    path = Path(path)
    file = path / "results.json"
    try:
        data = json.loads(file.read_text())
        return Run(path, str(data["experiment"]), dict(data["config"]), dict(data["metrics"]), list(data["seeds"]),
                   dict(data.get("env") or {}), float(data.get("elapsed_s", 0.0)), data.get("command"),
                   data.get("date"))
    except OSError as err:
        partial = " (an unfinished run: resume it)" if path.name.endswith(".partial") else ""
        raise UserError(f"{path} is not a finished poschan run: cannot read {file.name}: "
                        f"{err.strerror or err}{partial}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{file} is not a poschan results file ({type(err).__name__}: {err})") from None
