"""A study: experiment commands run as resumable steps, its independent chains through the executor.

Each step is one command run through the command line (so each keeps the results contract: it works in
``OUT/<step>.partial`` and appears as ``OUT/<step>`` only when complete). A re-run skips the finished steps, resumes
an interrupted one (``--resume``) and starts the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from poschan.executor import Job, run_command_jobs


@dataclass(frozen=True)
class Step:
    name: str  # its folder in OUT
    argv: tuple[str, ...]  # the command and its own flags (preset, out and the common flags are added)
    follows: bool = False  # runs after the previous step in its chain (it or a later step reads that output)


def finished(step: Step, out: Path) -> bool:
    """Whether ``step`` of the study in ``out`` has finished (its ``OUT/<step>/results.json`` exists)."""
    return (out / step.name / "results.json").is_file()


def run_steps(steps: Sequence[Step], preset: str, out: Path, common: Sequence[str], *,
              run_command: Callable[[list[str]], int], progress: bool = True) -> int:
    """Run the unfinished ``steps`` in order (``finished``); stop at the first that fails and return its exit code,
    else 0."""
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(steps, desc="reproduce", unit="step", disable=None if progress else True)
    for step in bar:
        target = out / step.name
        bar.set_postfix_str(step.name)
        if finished(step, out):
            print(f"{step.name}: finished earlier, skipped", flush=True)
            continue
        resume = ["--resume"] if target.with_name(target.name + ".partial").exists() else []
        code = run_command([*step.argv, "--preset", preset, *common, *resume, "--out", str(target)])
        if code != 0:
            return code
    return 0


def chains(steps: Sequence[Step]) -> list[list[Step]]:
    """The study's independent jobs: each step that needs no other alone, and each step that ``follows`` another
    after it in its chain (a segmentation condition's seg-train → ablate → attack; augshift → train →
    debias)."""
    out: list[list[Step]] = []
    for step in steps:
        if step.follows:
            out[-1].append(step)
        else:
            out.append([step])
    return out


def run_chain(steps: Sequence[Step], preset: str, out: Path, common: Sequence[str], progress: bool,
              run_command: Callable[[list[str]], int]) -> int:
    """One job of the study (a chain of steps) run through the command line ``run_command`` in this process; its
    exit code."""
    return run_steps(steps, preset, out, common, run_command=run_command, progress=progress)


def run_study(steps: Sequence[Step], preset: str, out: Path, common: Sequence[str], settings: Any, *,
              run_command: Callable[[list[str]], int], progress: bool = True) -> int:
    """Every chain of ``steps`` through the executor of ``settings``, each step a call of the command line
    ``run_command`` (a module-level function: jobs travel to other processes by its name): the first non-zero exit
    code of a chain, else 0. ``settings``: the executor's (executor, workers, address, device)."""
    parallel = settings.executor != "sequential"
    quiet = [*common, "--no-progress"] if parallel and "--no-progress" not in common else list(common)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [Job(chain[0].name.removeprefix("seg-train-"), run_chain, (chain, preset, out, quiet,
                                                                      progress and not parallel, run_command))
            for chain in chains(steps)]
    codes = run_command_jobs(jobs, settings, out, progress=progress and parallel)
    return next((code for code in codes if code), 0)
