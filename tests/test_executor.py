"""Many independent jobs: results in submission order whatever finishes first, failures reported with the others'
results kept, retries, and a gap study that gives the same numbers on every executor (and resumes across them)."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from poschan.cli import main
from poschan.errors import UserError
from poschan.executor import Job, JobsFailed, job_threads, run_jobs
from poschan.results import RunDir

EXECUTORS = ["sequential", "local", "ray"]
PARALLEL = ["local", "ray"]
ROOT = Path(__file__).resolve().parents[1]


def _attempts(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def square(i: int, wait_for: str | None = None) -> tuple[int, int, float]:
    """``i * i`` and the torch threads it ran with; with ``wait_for``, only once that file exists (so a job submitted
    first finishes last) and the time it finished."""
    deadline = time.monotonic() + 60
    while wait_for and not Path(wait_for).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return i * i, torch.get_num_threads(), time.monotonic()


def square_then_signal(i: int, signal: str) -> tuple[int, int, float]:
    result = square(i)
    Path(signal).touch()
    return result


def broken(i: int, log: str, error: type[Exception] = ValueError) -> int:
    """Fails every attempt, logging it."""
    with open(log, "a") as fh:
        fh.write("attempt\n")
    raise error(f"job {i} is broken")


def fails_first(i: int, log: str) -> int:
    """Fails its first attempt, then returns ``i``."""
    if _attempts(Path(log)) == 0:
        broken(i, log, RuntimeError)
    return i


@pytest.mark.parametrize("executor", EXECUTORS)
def test_results_come_in_submission_order_whatever_finishes_first(tmp_path, executor):
    signal = str(tmp_path / "job1-done")
    jobs = [Job(f"job{i}", square, (i,)) for i in range(6)]
    if executor != "sequential":  # job 0 waits until job 1 (running beside it) has finished
        jobs[0] = Job("job0", square, (0, signal))
        jobs[1] = Job("job1", square_then_signal, (1, signal))
    results = run_jobs(jobs, executor=executor, workers=2)
    assert [r[0] for r in results] == [i * i for i in range(6)]
    assert {r[1] for r in results} == {job_threads(2)}  # every job computed with the same threads
    if executor != "sequential":
        assert results[0][2] > results[1][2]  # finished out of order, returned in order


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_failing_job_is_reported_after_its_retries_with_the_others_results_kept(tmp_path, executor):
    log = tmp_path / "attempts"
    jobs = [Job(f"job{i}", square, (i,)) for i in range(4)]
    jobs[2] = Job("job2", broken, (2, str(log)))
    with pytest.raises(JobsFailed) as failed:
        run_jobs(jobs, executor=executor, workers=2, retries=1)
    assert [(f.job, f.error) for f in failed.value.failures] == [("job2", "ValueError: job 2 is broken")]
    assert [r and r[0] for r in failed.value.results] == [0, 1, None, 9]
    assert _attempts(log) == 2  # the first attempt and one retry
    assert "job2 (ValueError: job 2 is broken)" in str(failed.value)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_job_that_fails_once_succeeds_when_the_executor_retries(tmp_path, executor):
    jobs = [Job("first", fails_first, (7, str(tmp_path / "a"))), Job("second", square, (3,))]
    assert [run_jobs(jobs, executor=executor, workers=2, retries=1)[0], _attempts(tmp_path / "a")] == [7, 1]
    jobs[0] = Job("first", fails_first, (7, str(tmp_path / "b")))
    with pytest.raises(JobsFailed) as failed:
        run_jobs(jobs, executor=executor, workers=2, retries=0)
    assert failed.value.failures[0].job == "first" and failed.value.results[1][0] == 9


@pytest.mark.parametrize("executor", ["sequential", "local"])
def test_bad_input_is_not_retried(tmp_path, executor):
    log = tmp_path / "attempts"
    with pytest.raises(JobsFailed) as failed:
        run_jobs([Job("refused", broken, (0, str(log), UserError))], executor=executor, workers=2, retries=2)
    assert isinstance(failed.value.failures[0].exception, UserError) and _attempts(log) == 1


def test_a_resume_may_change_where_the_jobs_run(tmp_path):
    config = {"lr": 0.1, "executor": "local", "workers": 2, "address": None}
    RunDir(tmp_path / "a", config).open()
    RunDir(tmp_path / "a", {**config, "executor": "ray", "workers": 8, "address": "ray://h:10001"}, resume=True).check()
    with pytest.raises(UserError, match="changed settings: lr "):
        RunDir(tmp_path / "a", {**config, "lr": 0.2}, resume=True).check()
    RunDir(tmp_path / "b", {"lr": 0.1}).open()  # a run recorded before the executor settings existed
    RunDir(tmp_path / "b", config, resume=True).check()


@pytest.mark.parametrize("executor, workers, address, match", [
    ("threads", 1, None, "unknown executor"), ("local", 0, None, "workers"), ("local", 2, "ray://h:10001", "ray")])
def test_run_jobs_refuses_bad_settings(executor, workers, address, match):
    with pytest.raises(UserError, match=match):
        run_jobs([Job("a", square, (1,))], executor=executor, workers=workers, address=address)


# -- the gap study on each executor ----------------------------------------------------------------------------------

STUDY = ["gap-study", "--preset", "smoke", "--no-progress", "--tasks", "location", "--paddings", "zeros",
         "--grids", "3", "--seeds", "0,1", "--workers", "2"]  # 5 variants × 2 seeds = 10 jobs


def _metrics(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["metrics"]


def _epochs(out: Path) -> dict[str, list[dict]]:
    """Each job's per-epoch training loss and accuracies as written (timings left out)."""
    return {str(p.relative_to(out)): [{k: v for k, v in row.items() if k != "seconds"}
                                      for row in csv.DictReader(p.open())] for p in out.glob("*/seed*/metrics.csv")}


@pytest.fixture(scope="module")
def sequential_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("executor") / "sequential"
    assert main([*STUDY, "--executor", "sequential", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("executor", PARALLEL)
def test_parallel_gap_study_gives_the_sequential_numbers(sequential_run, tmp_path, executor):
    assert main([*STUDY, "--executor", executor, "--out", str(tmp_path / executor)]) == 0
    reference = _metrics(sequential_run)
    values = [r["accuracy"]["values"] for r in reference["rows"]]
    assert len(values) == 8 and len({tuple(v) for v in values}) > 1  # rows a mix-up of jobs would change
    assert _metrics(tmp_path / executor) == reference
    assert _epochs(tmp_path / executor) == _epochs(sequential_run) and len(_epochs(sequential_run)) == 10
    config = json.loads((tmp_path / executor / "results.json").read_text())["config"]
    assert (config["executor"], config["workers"], config["address"]) == (executor, 2, None)


def test_failed_jobs_end_the_study_with_one_line_and_resume_redo_only_them(sequential_run, tmp_path, monkeypatch):
    import poschan.measure.gap_study as gap_study

    real = gap_study.train_job
    failing = "location_gap-fc_zeros_g3_per-batch@pooled"

    def train_job(c, v, sets, seed, work, progress, after=None):
        if v.key == failing and seed == 1:
            raise RuntimeError("worker lost")
        return real(c, v, sets, seed, work, progress, after)

    out = tmp_path / "g"
    monkeypatch.setattr(gap_study, "train_job", train_job)
    with pytest.raises(SystemExit) as exit:
        main([*STUDY, "--out", str(out)])
    message = str(exit.value.code)
    assert len(message.splitlines()) == 1 and f"1 of 10 jobs failed after 2 retries: {failing} seed 1 " in message
    assert "RuntimeError: worker lost" in message and "--resume" in message
    partial = Path(f"{out}.partial")
    finished = {p.relative_to(partial): p.stat().st_mtime_ns for p in partial.glob("*/seed*/checkpoint.pt")}
    assert len(finished) == 9 and not (partial / failing / "seed1" / "checkpoint.pt").exists()
    monkeypatch.undo()

    (partial / failing / "seed1").write_text("in the way")  # the failed job fails again, now in a worker
    with pytest.raises(SystemExit, match=f"1 of 10 jobs failed after 2 retries: {failing} seed 1 "):
        main([*STUDY, "--executor", "local", "--out", str(out), "--resume"])
    (partial / failing / "seed1").unlink()
    assert main([*STUDY, "--executor", "ray", "--out", str(out), "--resume"]) == 0  # another executor: allowed
    assert {p: (out / p).stat().st_mtime_ns for p in finished} == finished  # not trained again
    assert _metrics(out) == _metrics(sequential_run)


@pytest.mark.parametrize("flags, match", [
    (["--executor", "threads"], "executor"), (["--workers", "0"], "workers"),
    (["--address", "ray://head:10001"], "executor 'ray'")])
def test_bad_executor_settings_exit_2_with_one_line(tmp_path, capsys, flags, match):
    assert main([*STUDY, *flags, "--out", str(tmp_path / "g")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and match in captured.err
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.partial").exists()


def test_an_unknown_executor_in_a_config_file_exits_2(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("executor: threads\n")
    assert main([*STUDY, "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'executor'" in err and "'threads' is not one of sequential, local, ray" in err


def test_parallel_augshift_gives_the_sequential_numbers(tmp_path):
    """augshift's (method, seed) jobs on local workers: the numbers of the same jobs one after another."""
    args = ["augshift", "--preset", "smoke", "--no-progress", "--methods", "baseline,augshift", "--seeds", "0,1",
            "--workers", "2"]
    assert main([*args, "--out", str(tmp_path / "sequential")]) == 0
    assert main([*args, "--executor", "local", "--out", str(tmp_path / "local")]) == 0
    reference = _metrics(tmp_path / "sequential")
    assert reference["methods"]["baseline"] != reference["methods"]["augshift"]  # a mix-up of jobs would show
    assert _metrics(tmp_path / "local") == reference


def linger(pidfile: str) -> None:
    """Writes its process id, then runs far longer than the test waits."""
    Path(pidfile).write_text(str(os.getpid()))
    time.sleep(120)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for a container's init to reap has ended)."""
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_killed_command_leaves_no_worker_training_behind(tmp_path):
    """The parent killed outright (no handler runs): its local worker, mid-job, ends within seconds."""
    pidfile = tmp_path / "worker.pid"
    code = ("from poschan.executor import Job, run_jobs; from tests.test_executor import linger; "
            f"run_jobs([Job('long', linger, ({str(pidfile)!r},))], executor='local', workers=1)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = int(pidfile.read_text())
        assert _alive(worker)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker)
    finally:
        parent.kill()
