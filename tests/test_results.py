import json
import os

import pytest
import yaml

from poschan.errors import UserError
from poschan.results import RunDir


def test_commit_publishes_only_complete_runs(tmp_path):
    run = RunDir(tmp_path / "out", {"a": 1})
    work = run.open()
    assert work.name == "out.partial" and not (tmp_path / "out").exists()
    assert yaml.safe_load((work / "config.yaml").read_text()) == {"a": 1}  # recorded when the run starts
    run.write_results("x", {"m": 1.0}, [0], "cpu", 0.1)
    run.commit()
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(data) == {"experiment", "config", "metrics", "seeds", "env", "elapsed_s", "date"}
    assert data["config"] == {"a": 1}
    assert not work.exists()


def test_refuses_to_overwrite_and_needs_resume(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        RunDir(tmp_path / "full", {}).open()
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    RunDir(tmp_path / "a", {}).open()
    with pytest.raises(UserError, match="--resume"):
        RunDir(tmp_path / "a", {}).open()
    assert RunDir(tmp_path / "a", {}, resume=True).open().exists()
    with pytest.raises(UserError, match="no interrupted run"):
        RunDir(tmp_path / "b", {}, resume=True).open()


def test_resume_with_a_changed_setting_names_it(tmp_path):
    config = {"lr": 0.001, "betas": (0.5, 0.999), "width": 8, "weights": None}
    RunDir(tmp_path / "a", config).open()
    assert RunDir(tmp_path / "a", dict(config), resume=True).open().exists()  # tuples read back as lists: same
    for key, value in [("lr", 0.5), ("width", 4), ("weights", "w.pt"), ("betas", (0.9, 0.999))]:
        with pytest.raises(UserError, match=f"changed settings: {key} ") as err:
            RunDir(tmp_path / "a", {**config, key: value}, resume=True).check()
        assert len(str(err.value).splitlines()) == 1
    with pytest.raises(UserError, match="changed settings: extra"):
        RunDir(tmp_path / "a", {**config, "extra": 1}, resume=True).check()
    assert yaml.safe_load((tmp_path / "a.partial" / "config.yaml").read_text())["lr"] == 0.001  # not overwritten


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_parent(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(UserError, match="cannot write"):
        RunDir(ro / "out", {}).open()


def test_unwritable_location_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        RunDir(blocker / "out", {}).open()


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import matplotlib.pyplot as plt

    from poschan.report.figures import save_figure
    from poschan.results import atomic_torch_save, atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_torch_save({"x": 1}, tmp_path / "b.pt")
        save_figure(plt.figure(), tmp_path / "c.png")
    finally:
        os.umask(mask)
    assert {oct((tmp_path / n).stat().st_mode & 0o777) for n in ("a.json", "b.pt", "c.png")} == {oct(0o644)}


def test_flat_stats_spreads_each_statistic_over_four_columns_and_keeps_the_rest():
    from poschan.tables import flat_stats

    row = {"layer": "x", "acc": {"mean": 0.5, "ci95": [0.25, 0.75], "n": 3, "values": [0.25, 0.5, 0.75]}, "k": 2}
    assert flat_stats(row) == {"layer": "x", "acc": 0.5, "acc_lo": 0.25, "acc_hi": 0.75, "acc_n": 3, "k": 2}


def test_load_run_reads_a_finished_run_and_refuses_an_unfinished_one(tmp_path):
    from poschan.results import load_run

    run = RunDir(tmp_path / "out", {"lr": 0.1})
    work = run.open()
    (work / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="unfinished run"):
        load_run(work)
    run.write_results("train", {"accuracy": 0.75}, [0, 1], "cpu", 1.5)
    loaded = load_run(run.commit())
    assert (loaded.experiment, loaded.config, loaded.metrics, loaded.seeds) == ("train", {"lr": 0.1},
                                                                                {"accuracy": 0.75}, [0, 1])
    assert loaded.tables == ["table"] and loaded.table() == [{"a": "1", "b": "2"}]
    with pytest.raises(UserError, match="no table 'curves'"):
        loaded.table("curves")
