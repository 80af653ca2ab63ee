import json

import numpy as np
import pytest
import torch
from torch import nn

from poschan.cli import main
from poschan.config import build_config
from poschan.data.sources import load_dataset
from poschan.data.stream import CanvasStream
from poschan.experiments.gap_study import FLAT_SLOPE, Config, Variant, evaluators, plateaus, prepare, trend, variants


def test_subset_design_covers_what_the_quick_preset_promises():
    c = build_config(Config, "gap-study", "quick")
    chosen = variants(c)
    assert {v.padding for v in chosen if v.task == "location" and v.permute == "none" and v.head == "gap-fc"
            and v.grid == 3} == {"zeros", "none", "circular", "reflect", "replicate", "partial"}
    for task in ("location", "semantic"):
        perms = {(v.permute, v.where) for v in chosen if v.task == task and v.padding == "zeros" and v.grid == 3}
        assert {("none", "pooled"), ("per-batch", "pooled"), ("per-sample", "pooled"), ("per-batch", "stage3")} <= perms
    assert any(v.head == "gapnet" for v in chosen) and any(v.grid == 5 for v in chosen)
    assert len(chosen) == len(set(chosen))
    assert len(c.seeds) >= 3


def test_semantic_rows_get_their_own_budget():
    """Each variant trains on its task's first train_size items for its task's epochs (the data loaded once)."""
    c = Config(tasks=["location", "semantic"], heads=["gap-fc"], paddings=["zeros"], grids=[3], permutes=["per-batch"],
               stage=None, design="subset", epochs=1, train_size=40, semantic_epochs=3, semantic_train_size=70,
               test_size=20, width=4, seeds=[0])
    plan = prepare(c)
    assert len(plan.variants) == 4
    for v, tp in plan.plans.items():
        semantic = v.task == "semantic"
        assert (tp.config.epochs, tp.config.train_size) == ((3, 70) if semantic else (1, 40))
        assert len(tp.train_set) == tp.config.train_size
    first = [tp.train_set.images for v, tp in plan.plans.items()]
    assert all(torch.equal(x[:40], first[0][:40]) for x in first)  # the first items of one loaded set


def test_plateaus_fit_a_slope_over_the_last_third_per_seed_then_over_seeds():
    def curve(variant, seed, values):
        return [{"variant": variant, "eval": "accuracy", "seed": seed, "epoch": e + 1, "accuracy": a}
                for e, a in enumerate(values)]

    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # +0.1 per epoch in every seed
    flat = [0.1, 0.5, 0.6, 0.7, 0.7, 0.7]
    noisy = [0.1, 0.5, 0.6, 0.6, 0.8, 0.6]
    curves = [*curve("up", 0, rising), *curve("up", 1, [a + 0.01 for a in rising]),
              *curve("up", 2, [a + 0.03 for a in rising[:4]] + [0.64, 0.66]),
              *curve("flat", 0, flat), *curve("flat", 1, flat[:4] + [0.701, 0.702]), *curve("flat", 2, flat),
              *curve("noisy", 0, noisy), *curve("noisy", 1, noisy[:3] + [0.8, 0.6, 0.62]),
              *curve("noisy", 2, noisy[:3] + [0.62, 0.6, 0.8]), *curve("short", 0, [0.1, 0.2])]
    ends = {e["variant"]: e for e in plateaus(curves)}
    assert set(ends) == {"up", "flat", "noisy"}  # two epochs: no last third to fit
    up = ends["up"]
    assert (up["epochs"], up["since_epoch"]) == (6, 4)  # epochs 4, 5, 6
    third_seed = np.polyfit([4, 5, 6], [0.43, 0.64, 0.66], 1)[0]
    assert up["slope"]["values"] == pytest.approx([0.1, 0.1, third_seed])
    assert up["final"]["values"] == pytest.approx([0.6, 0.61, 0.66])
    assert up["trend"] == "rising"
    assert ends["flat"]["trend"] == f"flat within ±{FLAT_SLOPE} per epoch"
    assert ends["noisy"]["trend"] == "undetermined"  # slopes of both signs: neither rising nor shown flat
    assert trend({"ci95": None}) == "undetermined" and trend({"ci95": [-0.02, -0.01]}) == "falling"


def test_full_design_is_the_cross_product():
    c = Config(tasks=["location"], heads=["gap-fc", "gapnet"], paddings=["zeros", "circular"], grids=[3],
               permutes=["per-batch"], stage=None)
    assert set(variants(c)) == {Variant("location", h, p, 3, perm, "pooled") for p in ("zeros", "circular")
                                for h, perm in (("gap-fc", "none"), ("gapnet", "none"), ("gap-fc", "per-batch"))}


class OrderNet(nn.Module):
    """Pooled features: channel c lights up for cell c (order-coded position); fc reads channel c -> class c."""

    stages = {"stage3": "body"}

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid
        self.backbone = nn.Module()
        self.backbone.body = nn.Identity()
        self.head = nn.Module()
        self.head.fc = nn.Linear(grid * grid, grid * grid)
        with torch.no_grad():
            self.head.fc.weight.copy_(torch.eye(grid * grid) * 10)
            self.head.fc.bias.zero_()

    def forward(self, x):
        cell = nn.functional.adaptive_avg_pool2d(x.abs().sum(1, keepdim=True), self.grid).flatten(1)
        return self.head.fc(self.backbone.body(cell[:, :, None, None]).mean((2, 3)))


def test_test_only_permutation_destroys_order_coded_position():
    data = load_dataset("fashion-mnist", "test", limit=600)
    test = CanvasStream(data, "location", 3, 100, seed=0, background="mean", shuffle=False)
    net = OrderNet(3)
    scores = evaluators(Config(stage="stage3"), Variant("location", "gap-fc", "zeros", 3))
    torch.manual_seed(0)
    results = {name: float(score(net, test, 2, torch.device("cpu")).mean()) for name, score in scores.items()}
    assert results["accuracy"] == 1.0
    assert results["test-only@pooled"] < 0.3 and results["test-only@stage3"] < 0.3


def test_smoke_run_has_a_row_for_every_combination(tmp_path):
    assert main(["gap-study", "--preset", "smoke", "--no-progress", "--out", str(tmp_path / "g")]) == 0
    data = json.loads((tmp_path / "g" / "results.json").read_text())
    c = build_config(Config, "gap-study", "smoke")
    expected = set()
    for v in variants(c):
        for name in evaluators(c, v):
            perm, where = (v.permute, v.where) if name == "accuracy" else name.split("@")
            expected.add((v.task, v.head, perm, where if perm != "none" else "-", v.padding, v.grid))
    rows = data["metrics"]["rows"]
    assert {(r["task"], r["head"], r["permute"], r["where"], r["padding"], r["grid"]) for r in rows} == expected
    for r in rows:
        s = r["accuracy"]
        assert s["n"] == len(s["values"]) and 0 <= s["ci95"][0] <= s["mean"] <= s["ci95"][1] <= 1
        assert s["ci95"][0] < s["ci95"][1] and "test canvases" in s["method"]
        assert 0 < r["vs_chance"]["p_value"] <= 1
        assert r["chance"] == pytest.approx(1 / r["grid"] ** 2 if r["task"] == "location" else 0.1)
    by_key = {(r["task"], r["head"], r["permute"], r["where"], r["padding"], r["grid"]): r for r in rows}
    assert len(by_key) == len(rows)
    paired = data["metrics"]["comparisons"]
    key = ("task", "head", "permute", "where", "padding", "grid")
    assert {tuple(p[k] for k in key) for p in paired} == {k for k in by_key if k[2] != "none"}
    for p in paired:
        permuted = by_key[tuple(p[k] for k in key)]["accuracy"]
        plain = by_key[p["task"], p["head"], "none", "-", p["padding"], p["grid"]]["accuracy"]
        assert p["values"] == pytest.approx([a - b for a, b in zip(permuted["values"], plain["values"])])
        assert -1 <= p["ci95"][0] <= p["mean"] <= p["ci95"][1] <= 1 and p["ci95"][0] < p["ci95"][1]
        assert 0 < p["p_value"] <= 1 and p["method"]
    assert data["metrics"]["plateaus"] == []  # one epoch: no curve to judge
    for name in ("table.csv", "comparisons.csv", "curves.csv", "accuracy_by_padding.png", "permutation.png",
                 "learning_curves.png"):
        assert (tmp_path / "g" / name).exists()
    assert set(data["metrics"]["permute_meanings"]) == {"none", "test-only", "per-batch", "per-sample"}


@pytest.mark.parametrize("extra, match", [
    (["--paddings", "zeros,mirror"], "padding"),
    (["--seeds", ""], "seed"),
    (["--stage", "stage9"], "stage"),
    (["--permutes", "sometimes"], "permutation"),
    (["--design", "half"], "design"),
])
def test_bad_input(tmp_path, capsys, extra, match):
    assert main(["gap-study", "--preset", "smoke", *extra, "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.partial").exists()
