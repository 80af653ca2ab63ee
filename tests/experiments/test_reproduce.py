"""`poschan reproduce`: the whole smoke study in one command, ending with its report; killed and re-run, it
skips the finished steps (their results untouched), resumes the interrupted one and completes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from tests.contract import violations

from poschan.cli import main
from poschan.experiments.reproduce import study
from poschan.studies import chains


def test_killed_study_rerun_skips_finished_steps_and_ends_with_the_report(tmp_path, capsys):
    out = tmp_path / "study"
    steps = [s.name for s in study("smoke", out)]
    assert steps[:5] == ["gap-study", "probe", "position-map", "rank", "augshift"]
    assert steps[5:] == ["seg-train-tb-p0.9", "ablate-tb-p0.9", "attack-tb-p0.9"]
    quick = study("quick", out)  # AugShift's chain, then the main setting first; ablate takes every seg-train network
    names = [s.name for s in quick]
    assert names[4:7] == ["augshift", "train-fmnist", "debias-fmnist"]
    assert quick[6].argv[-5:] == (str(out / "train-fmnist" / "seed0" / "checkpoint.pt"), "--crop", "32",
                                  "--retrained", str(out / "augshift"))
    assert names[7:10] == ["seg-train-tb-p0.9", "ablate-tb-p0.9", "attack-tb-p0.9"]
    assert quick[7].argv[1:5] == ("--layout", "top-bottom", "--layout-prior", "0.9")
    assert quick[8].argv == ("ablate", "--checkpoint", str(out / "seg-train-tb-p0.9"))
    assert quick[9].argv[-2:] == ("--region", "top,bottom") and "efficientnet-lite0" in quick[-6].argv
    assert names[-3:] == ["census", "debias-lite0", "budget-response"]  # the longest step last
    found = [[s.name for s in chain] for chain in chains(quick)]
    assert found[4] == ["augshift", "train-fmnist", "debias-fmnist"]
    assert found[-3:] == [["census"], ["debias-lite0"], ["budget-response"]]
    proc = subprocess.Popen([sys.executable, "-m", "poschan", "reproduce", "--preset", "smoke", "--no-progress",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = out / "gap-study" / "results.json"
    deadline = time.monotonic() + 300
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the study dies after its first step
    proc.wait()
    assert first.is_file() and not (out / "report.html").exists()
    before = first.read_bytes()

    assert main(["reproduce", "--preset", "smoke", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gap-study: finished earlier, skipped" in printed and first.read_bytes() == before
    assert all((out / name / "results.json").is_file() for name in steps)
    for name in steps:  # every interval of every command inside its range, of non-zero width, with its method
        assert violations(json.loads((out / name / "results.json").read_text())["metrics"]) == [], name
    assert not any(p.name.endswith(".partial") for p in out.iterdir())
    report = (out / "report.html").read_text()
    experiments = {json.loads((out / name / "results.json").read_text())["experiment"] for name in steps}
    assert report.count("<h2>") == len(experiments) + 1 and "<h2>Findings</h2>" in report  # then one per experiment
    assert all(f"<summary>{json.loads((out / n / 'results.json').read_text())['experiment']} · {n}:" in report
               for n in steps)  # every step's run, folded
    assert "<caption>segmentation sweep</caption>" in report
    assert "poschan reproduce --preset smoke" in report

    assert main(["reproduce", "--preset", "smoke", "--out", str(out)]) == 0  # complete: nothing to do
    assert "every step" in capsys.readouterr().out

    shutil.rmtree(out / "attack-tb-p0.9")  # a step removed after the report: the report is stale
    stale = (out / "report.html").read_text()
    assert main(["reproduce", "--preset", "smoke", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "every step" not in printed and "attack-tb-p0.9: finished earlier" not in printed
    assert (out / "attack-tb-p0.9" / "results.json").is_file() and (out / "report.html").read_text() != stale


def test_reproduce_refuses_an_unknown_preset(tmp_path, capsys):
    assert main(["reproduce", "--preset", "huge", "--out", str(tmp_path / "s")]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_the_study_s_jobs_are_the_lone_steps_and_each_condition_s_chain(tmp_path):
    jobs = chains(study("quick", tmp_path))
    # AugShift → train → debias; prior 0 has no layout: one condition per backbone; census, debias-lite0, budget
    assert [len(j) for j in jobs] == [1] * 4 + [3] + [3] * 14 + [1, 1, 1]
    assert [[s.argv[0] for s in j] for j in jobs[4:-3]] == [["augshift", "train", "debias"]] + [
        ["seg-train", "ablate", "attack"]] * 14
    for seg_train, ablate, attack in jobs[5:-3]:  # each chain reads its own networks
        assert ablate.argv[2] == attack.argv[2] == str(tmp_path / seg_train.name)


def test_reproduce_refuses_an_unknown_executor(tmp_path, capsys):
    assert main(["reproduce", "--preset", "smoke", "--executor", "threads", "--out", str(tmp_path / "s")]) == 2
    assert "executor" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_the_quick_study_trains_five_networks_behind_each_headline_verdict(tmp_path):
    from poschan.experiments.reproduce import MAIN_SEEDS

    steps = {s.name: s.argv for s in study("quick", tmp_path)}
    five = {name for name, argv in steps.items() if ("--seeds", MAIN_SEEDS) == argv[-2:]}
    assert MAIN_SEEDS == "0,1,2,3,4"
    assert five == {"gap-study", "augshift", "seg-train-tb-p0.9", "seg-train-tb-p0.9-lite0", "seg-train-lr-p0.9"}
    assert "seg-train-p0" in steps and "seg-train-tb-p0" not in steps and "seg-train-lr-p0" not in steps
    assert steps["attack-p0"][-2:] == ("--region", "top,bottom,left,right")
    assert all("--seeds" not in argv for argv in (s.argv for s in study("smoke", tmp_path)))
