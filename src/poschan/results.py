"""The results contract: a run directory that appears complete or not at all.

A run works in ``OUT.partial/`` (checkpoints, logs, tables) and is renamed to ``OUT`` only when it finished,
so ``OUT`` never holds partial results, and an interrupted run can be resumed from ``OUT.partial``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from . import __version__
from .errors import UserError


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
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` through a temporary file, fsync and rename: a kill never leaves a torn checkpoint."""
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


def environment(device: str) -> dict:
    return {"poschan": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": device}


@dataclass
class RunDir:
    """``OUT.partial`` while running, renamed to ``OUT`` by :meth:`commit`."""

    out: Path
    resume: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.work = self.out.with_name(self.out.name + ".partial")
        self._created = False

    def open(self) -> Path:
        """Check the destination and create (or, with resume, reuse) the work directory."""
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise UserError(f"--out {self.out} already exists and is not empty; choose a new directory")
        if self.work.exists() and not self.resume:
            raise UserError(f"{self.work} holds an interrupted run; pass --resume to continue it, or remove it")
        if self.resume and not self.work.exists():
            raise UserError(f"--resume: no interrupted run at {self.work}")
        try:
            self.work.mkdir(parents=True, exist_ok=self.resume)
        except OSError as exc:
            raise UserError(f"cannot write to --out {self.out}: {exc.strerror or exc}") from None
        if not os.access(self.work, os.W_OK):
            raise UserError(f"cannot write to --out {self.out}: permission denied")
        self._created = not self.resume
        return self.work

    def discard_if_new(self) -> None:
        """Remove a work directory this invocation created (used when input turns out to be bad)."""
        if self._created and self.work.exists():
            shutil.rmtree(self.work)

    def write_results(self, experiment: str, config: dict, metrics: dict, seeds: list[int], device: str,
                      elapsed_s: float) -> None:
        payload = {"experiment": experiment, "config": config, "metrics": metrics, "seeds": seeds,
                   "env": environment(device), "elapsed_s": elapsed_s}
        atomic_write_text(self.work / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        atomic_write_text(self.work / "results.json", json.dumps(payload, indent=2) + "\n")

    def commit(self) -> Path:
        """Publish the finished run at ``OUT``."""
        if self.out.is_dir():
            self.out.rmdir()  # only an empty directory can be here (checked in open)
        os.replace(self.work, self.out)
        return self.out
