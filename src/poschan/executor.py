"""Many independent jobs (variants × seeds): one after another here, on local worker processes, or through Ray.

A :class:`Job` is a picklable callable with its arguments, returning plain data. :func:`run_jobs` returns the
results in the order the jobs were given, whichever finished first, so a parallel run returns what the sequential
run returns. A job that still fails after its retries does not stop the others: :class:`JobsFailed` names every
failed job with its error and carries the finished jobs' results. Bad input (``UserError``) is never retried (it
would fail again) and cancels the jobs still waiting.

Threads: whichever executor runs it, a job computes with ``job_threads(workers)`` torch threads, the cores torch
uses here shared out among the workers. So no worker oversubscribes the cores, and a job's numbers do not depend on
the executor: CPU kernels round differently with another thread count, so runs with the same ``workers`` are
identical bit for bit, whatever their executor.

Why Ray rather than submitit: one engine runs the same jobs on a laptop (``ray.init()`` starts a local instance)
and on a cluster of any kind, whether Kubernetes, cloud machines, Slurm or a few machines reachable over ssh
(``ray.init(address=...)``). It places each task by the resources the task asks for (a GPU, or its CPU threads),
and it retries tasks whose worker died or that raised (``max_retries``, ``retry_exceptions``). submitit submits
only to Slurm (its local mode is for debugging), so a researcher without Slurm would need a second path. Ray comes
with the optional ``cluster`` extra; the sequential and local executors need only the standard library. On a
cluster every node needs poschan installed, and the files a job reads (data, weights, a model factory), at the same
paths.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any

import torch
from tqdm.auto import tqdm

from poschan.errors import UserError

EXECUTORS = ("sequential", "local", "ray")


@dataclass(frozen=True)
class Job:
    """``fn(*args)``, a picklable callable returning plain data; ``name`` identifies it in failure reports."""

    name: str
    fn: Callable[..., Any]
    args: tuple = ()


@dataclass(frozen=True)
class Failure:
    """A job that failed after its retries, with the exception of its last attempt."""

    job: str
    exception: BaseException

    @property
    def error(self) -> str:
        """``Type: first line of the message``."""
        lines = str(self.exception).strip().splitlines()
        return f"{type(self.exception).__name__}: {lines[0] if lines else ''}".rstrip(": ")


class JobsFailed(RuntimeError):
    """Some jobs failed after their retries: ``failures`` names them; ``results`` holds every job's result in
    submission order (None for a failed job)."""

    def __init__(self, failures: list[Failure], results: list):
        self.failures, self.results = failures, results
        detail = "; ".join(f"{f.job} ({f.error})" for f in failures)
        super().__init__(f"{len(failures)} of {len(results)} jobs failed: {detail}")


def check_executor(executor: str, workers: int, address: str | None) -> None:
    """Refuse, with one line, an unknown executor, fewer than one worker, or a Ray address without Ray."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    if address is not None and executor != "ray":
        raise UserError(f"address {address!r} names a Ray cluster: give it with executor 'ray', not {executor!r}")
    if executor == "ray" and find_spec("ray") is None:
        raise UserError("executor 'ray' needs the ray package: pip install 'poschan[cluster]'")


def job_threads(workers: int) -> int:
    """The torch threads of each job: the cores torch uses in this process, shared out among ``workers``."""
    return max(1, torch.get_num_threads() // workers)


def run_jobs(jobs: Sequence[Job], *, executor: str = "sequential", workers: int = 1, address: str | None = None,
             gpu: bool = False, retries: int = 0, progress: bool = False) -> list:
    """Each job's result, in the order of ``jobs``.

    ``executor``: ``sequential`` (in this process), ``local`` (``workers`` spawned worker processes) or ``ray``
    (a Ray instance started here for ``workers`` jobs at once, or the cluster at ``address``; each task asks for a
    GPU when ``gpu``, else for its CPU threads). A failed job is run again up to ``retries`` times (Ray's
    ``max_retries`` and ``retry_exceptions``); one that still fails is reported by :class:`JobsFailed`, raised once
    the other jobs have finished. A job refused as bad input (``UserError``) stops the run: the jobs still waiting
    are cancelled (their results None). ``progress``: a bar over the finished jobs.
    """
    check_executor(executor, workers, address)
    tally = _Tally(len(jobs), retries, tqdm(total=len(jobs), desc="jobs", unit="job",
                                            disable=None if progress else True))
    threads = job_threads(workers)
    with tally.bar:
        if executor == "sequential":
            _sequential(jobs, threads, tally)
        elif executor == "local":
            _local(jobs, threads, workers, tally)
        else:
            _ray(jobs, threads, workers, address, gpu, tally)
    if tally.failures:
        raise JobsFailed([Failure(jobs[i].name, e) for i, e in sorted(tally.failures.items())], tally.results)
    return tally.results


@dataclass(frozen=True)
class _Refused:
    """A job's bad input, returned rather than raised so that no executor retries it."""

    error: UserError


def _attempt(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """One attempt at ``fn(*args)`` with ``threads`` torch threads (the caller's count restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args)
    except UserError as err:
        return _Refused(err)
    finally:
        torch.set_num_threads(before)


@dataclass
class _Tally:
    """The results and failures so far, the attempts each job has had, and whether a refusal stopped the run."""

    size: int
    retries: int
    bar: tqdm
    results: list = field(init=False)
    failures: dict[int, BaseException] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    stopped: bool = False

    def __post_init__(self) -> None:
        self.results = [None] * self.size

    def settle(self, i: int, value: Any = None, error: BaseException | None = None, *, retry: bool = True) -> bool:
        """Record an attempt of job ``i`` (its value, or the error it raised); True when it is to run again
        (``retry`` False: the executor has retried it already)."""
        if isinstance(value, _Refused):
            self.failures[i], self.stopped = value.error, True
        elif error is None:
            self.results[i] = value
        else:
            self.attempts[i] = self.attempts.get(i, 0) + 1
            if retry and self.attempts[i] <= self.retries and not self.stopped:
                return True
            self.failures[i] = error
        self.bar.update()
        return False


def _sequential(jobs: Sequence[Job], threads: int, tally: _Tally) -> None:
    for i, job in enumerate(jobs):
        again = not tally.stopped
        while again:
            try:
                again = tally.settle(i, _attempt(threads, job.fn, *job.args))
            except Exception as err:
                again = tally.settle(i, error=err)


def _exit_with(parent: int) -> None:
    """In a worker: end this process when ``parent`` is gone. A pool's worker notices a dead parent only between
    jobs, and a training job runs for minutes; killed mid-run, the command must not leave trainings behind writing
    into its ``OUT.partial`` (nothing in the standard library or torch does this, so a thread watches)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="poschan-parent-watch").start()


def _local(jobs: Sequence[Job], threads: int, workers: int, tally: _Tally) -> None:
    """Rounds of a fresh pool of spawned workers (safe with CUDA and torch's thread pools; a pool broken by a
    crashed worker is replaced; each worker ends when this process does) over the jobs still to run."""
    todo = list(range(len(jobs)))
    while todo and not tally.stopped:
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_exit_with, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_attempt, threads, jobs[i].fn, *jobs[i].args): i for i in todo}
            todo = []
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                try:
                    again = tally.settle(futures[future], future.result())
                except Exception as err:
                    again = tally.settle(futures[future], error=err)
                if again:
                    todo.append(futures[future])
                if tally.stopped:  # cancel what has not started
                    for other in futures:
                        other.cancel()
        todo.sort()


def _ray(jobs: Sequence[Job], threads: int, workers: int, address: str | None, gpu: bool, tally: _Tally) -> None:
    """Ray tasks, retried by Ray itself; an argument object that several jobs share (a config, the data sets) goes
    into Ray's object store once. A Ray instance started here (``workers × threads`` CPUs, so ``workers`` CPU tasks at
    once) is shut down after."""
    import ray

    started = not ray.is_initialized()
    if started:
        local = {} if address else {"num_cpus": workers * threads,  # and the workers import what this process can
                                    "job_config": ray.job_config.JobConfig(code_search_path=[p for p in sys.path if p])}
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, **local)
    try:
        resources = {"num_gpus": 1} if gpu else {"num_cpus": threads}
        task = ray.remote(_attempt).options(max_retries=tally.retries, retry_exceptions=True, **resources)
        stored: dict[int, Any] = {}  # id of an argument -> its object ref (the jobs keep the arguments alive)

        def store(arg: Any) -> Any:
            if id(arg) not in stored:
                stored[id(arg)] = ray.put(arg)
            return stored[id(arg)]

        index = {task.remote(threads, job.fn, *map(store, job.args)): i for i, job in enumerate(jobs)}
        pending = list(index)
        while pending and not tally.stopped:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    tally.settle(index[ref], ray.get(ref))
                except ray.exceptions.RayError as err:
                    tally.settle(index[ref], error=getattr(err, "cause", None) or err, retry=False)
        for ref in pending:  # after a refusal
            ray.cancel(ref)
    finally:
        if started:
            ray.shutdown()


JOB_RETRIES = 2  # another attempt or two for a job whose worker died (a node lost, memory) or that raised


def run_command_jobs(jobs: Sequence[Job], settings: Any, work: Any, *, progress: bool = False) -> list:
    """A command's jobs through the executor of its ``settings`` (executor, workers, address, device), with
    ``JOB_RETRIES`` retries. Failed jobs (their finished siblings kept in ``work``) end the command with one line
    and exit 1; bad input (every failure a UserError) with exit 2."""
    try:
        return run_jobs(jobs, executor=settings.executor, workers=settings.workers, address=settings.address,
                        gpu=torch.device(settings.device).type == "cuda", retries=JOB_RETRIES, progress=progress)
    except JobsFailed as failed:
        detail = "; ".join(f"{f.job} ({f.error})" for f in failed.failures)
        if all(isinstance(f.exception, UserError) for f in failed.failures):
            raise UserError(f"{len(failed.failures)} of {len(jobs)} jobs refused: {detail}") from None
        raise SystemExit(f"poschan: error: {len(failed.failures)} of {len(jobs)} jobs failed after "
                         f"{JOB_RETRIES} retries: {detail}; the finished jobs are kept in {work}: re-run the same "
                         "command with --resume to redo only the failed ones") from None
