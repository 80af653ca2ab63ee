"""One code path: the library called the notebook way (load_segmenters, segmenter_rankings / region_rankings,
compare_rankings / compare_regions) gives exactly the metrics of `poschan ablate` / `poschan attack` on the same
checkpoint and settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.experiments.seg_fixture import SPEC, calibrated_weights

import poschan
from poschan.cli import main

SIDE = 84  # flip ranks halves on rank scenes whose items all lie in one half: 28-px items need room
RUN = ["--preset", "smoke", "--no-progress"]
SIZES = dict(test_size=8, count=8, batch_size=8)
EVAL = ["--test-size", "8", "--rank-scenes", "8", "--batch-size", "8"]


def as_json(value: object) -> object:
    """``value`` as results.json holds it."""
    return json.loads(json.dumps(value))


def metrics(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("checkpoint")
    torch.save(calibrated_weights(SIDE), root / "given.pt")
    assert main(["seg-train", *RUN, "--side", str(SIDE), "--width", str(SPEC.width), "--aspp-channels",
                 str(SPEC.aspp_channels), "--epochs", "0", "--weights", str(root / "given.pt"), "--test-size", "8",
                 "--out", str(root / "train")]) == 0
    return str(root / "train" / "seed0" / "checkpoint.pt")


def test_compare_rankings_is_what_ablate_runs(checkpoint, tmp_path):
    names, n = ["flip", "position-only", "shift", "knockout"], ["10%", "25%"]
    out = tmp_path / "ablate"
    assert main(["ablate", *RUN, *EVAL, "--checkpoint", checkpoint, "--rankings", ",".join(names), "--n", ",".join(n),
                 "--knockout-scenes", "8", "--matched-draws", "2", "--out", str(out)]) == 0
    nets = poschan.load_segmenters(checkpoint=checkpoint, test_size=SIZES["test_size"])
    ranked = [poschan.segmenter_rankings(net, names, count=SIZES["count"], n=n, knockout_count=8,
                                         batch_size=SIZES["batch_size"]) for net in nets]
    found = poschan.compare_rankings(nets, ranked, n, random_draws=5, matched_draws=2, batch_size=SIZES["batch_size"])
    m = metrics(out)
    for key in ("miou_clean", "pixel_accuracy_clean", "reliance", "comparisons", "rankings", "chirality",
                "closest_to_reference", "channels", "layer", "networks"):
        assert as_json(getattr(found, key)) == m[key], key
    assert [r["ranking"] for r in found.reliance] == [name for name in names for _ in n]
    assert json.loads((out / "scores.json").read_text())["knockout"] == ranked[0].scores["knockout"].tolist()


def test_compare_regions_is_what_attack_runs(checkpoint, tmp_path):
    methods, regions = ["flip", "flip-opposite", "shift", "random", "pgd"], ["left", "cell:4"]
    out = tmp_path / "attack"
    assert main(["attack", *RUN, *EVAL, "--checkpoint", checkpoint, "--region", ",".join(regions), "--methods",
                 ",".join(methods), "--pgd-size", "4", "--pgd-steps", "2", "--out", str(out)]) == 0
    nets = poschan.load_segmenters(checkpoint=checkpoint, test_size=SIZES["test_size"])
    rankings = [poschan.region_rankings(net, regions, methods, count=SIZES["count"], batch_size=SIZES["batch_size"])
                for net in nets]
    found = poschan.compare_regions(nets, rankings, regions, "25%", methods=methods, pgd_eps=0.1, pgd_steps=2,
                                    pgd_size=4, batch_size=SIZES["batch_size"])
    m = metrics(out)
    assert as_json(found.rows) == m["attack"] and as_json(found.comparisons) == m["comparisons"]
    assert {(r["region"], r["method"]) for r in found.rows} >= {("left", "flip"), ("cell:4", "shift"), ("left", "pgd")}
    assert sorted(p.name for p in out.glob("ranking_*.json")) == ["ranking_flip_left.json", "ranking_shift.json"]
