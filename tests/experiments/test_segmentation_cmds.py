"""`poschan seg-train`, `ablate`, `attack`: smoke runs of the results contract, and bad input (exit 2, no output)."""

import json
from pathlib import Path

import pytest
import torch
from tests.contract import statistic_ok, violations

from poschan.cli import main

SMALL = ["--preset", "smoke", "--no-progress"]


def comparison_ok(entry: dict, bounds: tuple[float, float]) -> bool:
    return (statistic_ok(entry, *bounds) and 0 <= entry["p_value"] <= 1 and bool(entry["test"])
            and all(entry[k] for k in ("name", "a", "b", "question")))


def ratio_ok(entry: dict) -> bool:
    return entry.get("estimable") is False and bool(entry["reason"]) or statistic_ok(entry)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "train"
    assert main(["seg-train", *SMALL, "--layout-prior", "0.9", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def ablated(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablate") / "run"
    assert main(["ablate", *SMALL, "--checkpoint", str(trained / "seed0/checkpoint.pt"), "--out", str(out)]) == 0
    return out


def test_seg_train_contract(trained):
    data = json.loads((trained / "results.json").read_text())
    assert data["experiment"] == "seg-train" and data["config"]["layout_prior"] == 0.9
    m = data["metrics"]
    assert statistic_ok(m["miou"]) and statistic_ok(m["pixel_accuracy"])
    assert "training seeds" in m["miou"]["method"] and "test images" in m["miou"]["method"]
    assert len(m["train_loss"]) == 1 and isinstance(m["train_loss"][0], float)  # per seed, no interval
    assert (trained / "seed0/checkpoint.pt").is_file() and (trained / "curves.csv").is_file()
    state = torch.load(trained / "seed0/checkpoint.pt", weights_only=True)
    assert state["meta"]["scenes"]["layout_prior"] == 0.9 and state["meta"]["segmentation"]["width"] == 4


def test_ablate_contract(ablated):
    m = json.loads((ablated / "results.json").read_text())["metrics"]
    assert statistic_ok(m["miou_clean"]) and statistic_ok(m["pixel_accuracy_clean"])
    assert violations(m) == []  # every statistic inside the range it records, with its method
    names = list(dict.fromkeys(row["ranking"] for row in m["reliance"]))
    assert names == ["flip", "flip-normalised", "position-only", "shift", "dimest", "probe", "knockout"]
    ns = sorted({row["n"] for row in m["reliance"]})
    assert all(1 <= n <= m["channels"] for n in ns) and len(m["reliance"]) == len(names) * len(ns)
    for row in m["reliance"]:
        for name in ("ranked", "random", "matched"):
            assert statistic_ok(row[name]) and row[name]["n"] == 1  # one network: units are networks
            assert comparison_ok({**row[f"{name}_drop"], "name": "-", "a": "-", "b": "-", "question": "-"}, (-1, 1))
            assert "one trained network" in row[name]["method"]
    expected = [f"{name}_vs_{control}_drop_n{n}" for name in names for n in ns for control in ("random", "matched")]
    assert [c["name"] for c in m["comparisons"]] == expected
    assert all(comparison_ok(entry, (-1, 1)) for entry in m["comparisons"])
    assert [v["ranking"] for v in m["rankings"]] == names[:-1] and m["closest_to_reference"] in names[:-1]
    pairs = {(r["a"], r["b"]) for r in m["chirality"]}
    assert pairs == {("canvas", "mirror-in-place"), ("canvas", "position-only"), ("mirror-in-place", "position-only")}
    assert all(r["chance"] == r["n"] ** 2 / m["channels"] for r in m["chirality"])
    ranking = json.loads((ablated / "ranking.json").read_text())
    assert ranking["schema"] == "poschan-ranking/1" and ranking["layer"] == m["layer"] == "backbone"
    assert ranking["data"]["split"] == "rank" and ranking["channels"] == m["channels"]
    scores = json.loads((ablated / "scores.json").read_text())
    assert scores["flip"] == ranking["keys"]["overall"]["scores"]  # the flip ranking is the paper's score
    for name in ("reliance.png", "overlays.png", "table.csv", "comparisons.csv", "rankings.csv", "chirality.csv"):
        assert (ablated / name).is_file()


def test_ablate_and_attack_over_the_networks_of_a_run(trained, tmp_path):
    """A seg-train run of two seeds: every network is a unit of the intervals."""
    run = tmp_path / "two"
    assert main(["seg-train", *SMALL, "--seeds", "0,1", "--out", str(run)]) == 0
    out = tmp_path / "ablate"
    assert main(["ablate", *SMALL, "--checkpoint", str(run), "--rankings", "flip,knockout", "--out", str(out)]) == 0
    m = json.loads((out / "results.json").read_text())["metrics"]
    checkpoints = [str(run / "seed0/checkpoint.pt"), str(run / "seed1/checkpoint.pt")]
    assert m["networks"] == 2 and m["checkpoints"] == checkpoints
    assert all(row["ranked"]["n"] == 2 and "trained networks" in row["ranked"]["method"] for row in m["reliance"])
    assert (out / "network0/ranking.json").is_file() and (out / "network1/scores.json").is_file()
    assert violations(m) == []
    drawn = [row["random_channels"] for row in m["reliance"] if row["n"] > 1]
    assert drawn and all(len(d) == 2 and d[0] != d[1] for d in drawn)  # each network draws its own random channels
    attacked = tmp_path / "attack"
    assert main(["attack", *SMALL, "--checkpoint", str(run), "--region", "left", "--n", "25%", "--methods",
                 "flip,random", "--seeds", "0,1", "--out", str(attacked)]) == 0
    a = json.loads((attacked / "results.json").read_text())["metrics"]
    assert a["networks"] == 2 and a["checkpoints"] == checkpoints and violations(a) == []
    for row in a["attack"]:
        for key in ("miou_in", "drop_in", "selectivity"):
            assert row[key]["n"] == 2 and "trained networks" in row[key]["method"]
        assert len(row["channels"]) == 2 and len(row["channels"][0]) == (2 if row["method"] == "flip" else 5)
        if row["method"] == "random":
            assert row["channels"][0] != row["channels"][1]  # each network's own draws
    assert (attacked / "network1/ranking_flip_left.json").is_file()
    alone = tmp_path / "alone"  # the first network by itself: its own numbers are the first unit's
    assert main(["attack", *SMALL, "--checkpoint", checkpoints[0], "--region", "left", "--n", "25%", "--methods",
                 "flip,random", "--seeds", "0,1", "--out", str(alone)]) == 0
    one = json.loads((alone / "results.json").read_text())["metrics"]
    assert [r["miou_in_clean"]["mean"] for r in one["attack"]] == pytest.approx(
        [r["miou_in_clean"]["values"][0] for r in a["attack"]])


def test_ablate_reuses_a_ranking_of_the_same_model(trained, ablated, tmp_path):
    out = tmp_path / "again"
    assert main(["ablate", *SMALL, "--checkpoint", str(trained / "seed0/checkpoint.pt"),
                 "--ranking", str(ablated / "ranking.json"), "--out", str(out)]) == 0
    first = json.loads((ablated / "results.json").read_text())["metrics"]["reliance"]
    again = json.loads((out / "results.json").read_text())["metrics"]["reliance"]
    assert [r["ranked"]["mean"] for r in first] == [r["ranked"]["mean"] for r in again]
    assert not (out / "ranking.json").exists()


def test_attack_contract(trained, tmp_path):
    out = tmp_path / "attack"
    assert main(["attack", *SMALL, "--checkpoint", str(trained / "seed0/checkpoint.pt"), "--region", "left,cell:4",
                 "--out", str(out)]) == 0
    m = json.loads((out / "results.json").read_text())["metrics"]
    methods = {(r["region"], r["method"]) for r in m["attack"]}
    assert {("left", "flip"), ("left", "shift"), ("left", "flip-opposite"), ("left", "random"), ("left", "pgd"),
            ("cell:4", "shift"), ("cell:4", "random")} <= methods
    assert ("cell:4", "flip") not in methods  # flip ranks halves only
    assert ("cell:4", "shift-opposite") not in methods  # the centre cell is its own mirror: no opposite control
    for r in m["attack"]:
        for metric, prefix in (("miou", ""), ("pixel_accuracy", "pixel_accuracy_"), ("fw_iou", "fw_iou_")):
            for key in ("in", "out", "in_clean", "out_clean"):
                assert statistic_ok(r[f"{metric}_{key}"], 0, 1)
            for key, bounds in (("drop_in", (-1, 1)), ("drop_out", (-1, 1)), ("selectivity", (-2, 2))):
                assert comparison_ok({**r[prefix + key], "name": "-", "a": "-", "b": "-", "question": "-"}, bounds)
        assert ratio_ok(r["drop_ratio"])
    assert violations(m) == []  # every statistic inside the range it records, with its method
    names = {c["name"] for c in m["comparisons"]}
    assert {"left_n8_flip_vs_random_drop_in", "left_n8_flip_vs_random_selectivity", "left_n8_shift_vs_opposite_selectivity",
            "cell:4_n8_shift_vs_random_selectivity"} <= names and len(names) == len(m["comparisons"])
    assert "cell:4_n8_shift_vs_opposite_selectivity" not in names
    assert all(comparison_ok(c, (-1, 1) if c["name"].endswith("drop_in") else (-2, 2)) for c in m["comparisons"])
    assert (out / "regions.png").is_file() and (out / "overlays_left.png").is_file()


def run_bad(tmp_path: Path, args: list[str], capsys) -> str:
    out = tmp_path / "bad"
    assert main([*args, *SMALL, "--out", str(out)]) == 2
    assert not out.exists() and not Path(f"{out}.partial").exists()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    return err


def test_bad_checkpoints(tmp_path, capsys):
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(2, 2), "epoch": 1}, pickled)
    assert "pickled Python objects" in run_bad(tmp_path, ["ablate", "--checkpoint", str(pickled)], capsys)
    foreign = tmp_path / "classifier.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 1}, foreign)
    assert "not a poschan segmentation checkpoint" in run_bad(tmp_path, ["attack", "--checkpoint", str(foreign)], capsys)
    assert "not found" in run_bad(tmp_path, ["ablate", "--checkpoint", str(tmp_path / "nope.pt")], capsys)


def test_bad_rankings_regions_and_counts(trained, ablated, tmp_path, capsys):
    ckpt = ["--checkpoint", str(trained / "seed0/checkpoint.pt")]
    ranking = json.loads((ablated / "ranking.json").read_text())
    seven = {"keys": {k: {"scores": v["scores"][:7]} for k, v in ranking["keys"].items()},
             "per_seed": {s: {k: v[:7] for k, v in group.items()} for s, group in ranking["per_seed"].items()}}
    for change, message in (({"weights": "0" * 16}, "other weights"), (seven, "7 channels"),
                            ({"layer": "backbone.layer4"}, "layer 'backbone.layer4'"),
                            ({"data": {**ranking["data"], "split": "test"}}, "evaluation split"),
                            ({"schema": None}, "not a poschan ranking file")):
        path = tmp_path / f"ranking-{message.split()[-1]}.json"
        path.write_text(json.dumps({**ranking, **change}))
        assert message in run_bad(tmp_path, ["ablate", *ckpt, "--ranking", str(path)], capsys)
    assert "outside the image" in run_bad(tmp_path, ["attack", *ckpt, "--region", "cell:9"], capsys)
    assert "unknown region" in run_bad(tmp_path, ["attack", *ckpt, "--region", "middle"], capsys)
    assert "outside 1..32" in run_bad(tmp_path, ["ablate", *ckpt, "--n", "33"], capsys)
    assert "outside 1..32" in run_bad(tmp_path, ["attack", *ckpt, "--n", "150%"], capsys)
    assert "random_seeds" in run_bad(tmp_path, ["ablate", *ckpt, "--random-seeds", "2"], capsys)


def test_real_dataset_by_path_end_to_end(tmp_path):
    """A tiny VOC-layout tree: seg-train on its train split, ablate and attack evaluate on val, rank on train."""
    import numpy as np
    from tests.data.test_segsets import _voc

    rng = np.random.default_rng(0)

    def samples(prefix: str, n: int):
        out = []
        for i in range(n):
            ids = np.zeros((40, 48), dtype=np.uint8)
            ids[5:25, 4 + i:30 + i] = 1 + i % 20
            ids[0, :] = 255
            out.append((f"{prefix}{i}", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), ids))
        return out

    spec = _voc(tmp_path / "voc", "train", samples("a", 12))
    _voc(tmp_path / "voc", "val", samples("b", 6))
    train = tmp_path / "train"
    assert main(["seg-train", *SMALL, "--data", spec, "--side", "32", "--out", str(train)]) == 0
    m = json.loads((train / "results.json").read_text())["metrics"]
    assert m["test_images"] == 6 and statistic_ok(m["miou"])
    state = torch.load(train / "seed0/checkpoint.pt", weights_only=True)
    assert state["meta"]["data"] == spec and state["meta"]["segmentation"]["num_classes"] == 21
    ckpt = ["--checkpoint", str(train / "seed0/checkpoint.pt")]
    assert main(["ablate", *SMALL, *ckpt, "--rank-scenes", "8", "--test-size", "6", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a/ranking.json").read_text())["data"]["split"] == "train"
    assert main(["attack", *SMALL, *ckpt, "--region", "left", "--rank-scenes", "8", "--test-size", "6",
                 "--out", str(tmp_path / "b")]) == 0
    methods = {r["method"] for r in json.loads((tmp_path / "b/results.json").read_text())["metrics"]["attack"]}
    assert {"flip", "random", "pgd"} <= methods and "shift" not in methods  # no items to paste in real images


def test_given_weights_evaluated_as_they_are(trained, tmp_path, capsys):
    out = tmp_path / "as-is"
    weights = str(trained / "seed0/checkpoint.pt")
    assert main(["seg-train", *SMALL, "--layout-prior", "0.9", "--epochs", "0", "--weights", weights,
                 "--out", str(out)]) == 0
    again = json.loads((out / "results.json").read_text())["metrics"]["miou"]["mean"]
    assert again == json.loads((trained / "results.json").read_text())["metrics"]["miou"]["mean"]
    assert "needs --weights" in run_bad(tmp_path, ["seg-train", "--epochs", "0"], capsys)


VOC_FACTORY = '''
from torch import nn


def make():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 21, 1))
'''


def test_a_user_segmenter_on_a_real_dataset_by_path(tmp_path):
    """--model FILE.py:factory --layer on a VOC-layout tree: evaluated on val, ranked on train, 21 classes."""
    import numpy as np
    from tests.data.test_segsets import _voc

    rng = np.random.default_rng(1)
    samples = [(f"s{i}", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8),
                np.where(np.arange(48)[None, :] < 24, 1 + i, 0).repeat(40, 0).astype(np.uint8)) for i in range(8)]
    spec = _voc(tmp_path / "voc", "train", samples[:5])
    _voc(tmp_path / "voc", "val", samples[5:])
    (tmp_path / "net.py").write_text(VOC_FACTORY)
    model = ["--model", f"{tmp_path / 'net.py'}:make", "--layer", "1", "--data", spec, "--side", "32"]
    assert main(["ablate", *SMALL, *model, "--rank-scenes", "5", "--test-size", "3", "--n", "2",
                 "--out", str(tmp_path / "a")]) == 0
    m = json.loads((tmp_path / "a/results.json").read_text())["metrics"]
    assert (m["layer"], m["channels"], m["test_images"]) == ("1", 8, 3)
    ranking = json.loads((tmp_path / "a/ranking.json").read_text())
    assert ranking["data"]["split"] == "train" and ranking["n_images"] == 5
