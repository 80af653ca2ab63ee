"""`poschan rank`: the results contract of the three methods, checkpoints, the split guard and bad input.

This file doubles as the user-model file (``--model THIS_FILE.py:tiny_net``).
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.contract import statistic_ok
from torch import nn

from poschan.cli import main
from poschan.data.fingerprint import image_fingerprint
from poschan.data.sources import load_dataset
from poschan.locate.ranking import ChannelRanking
from poschan.models.registry import build_model
from poschan.stats import proportion, summarize

THIS = Path(__file__).as_posix()
TINY = ["--model", f"{THIS}:tiny_net", "--layer", "backbone.2", "--split", "test", "--eval-split", "train"]
KEYS = {"flip": {"overall", "left", "right", "top", "bottom"},
        "shift": {"overall", "left", "right", "top", "bottom", "center", "q1", "q2", "q3", "q4",
                  *(f"cell:{j}" for j in range(9))},
        "dimest": {"position", "semantic"}}


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))


def tiny_rgb_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))


def rank(tmp_path: Path, name: str, *args: str) -> tuple[Path, dict]:
    out = tmp_path / name
    assert main(["rank", "--preset", "smoke", "--no-progress", "--out", str(out), *args]) == 0
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("method", ["flip", "shift", "dimest"])
def test_smoke_contract(tmp_path, method):
    out, data = rank(tmp_path, method, *TINY, "--method", method, "--limit", "12")
    assert set(data) >= {"experiment", "config", "metrics", "seeds", "env", "elapsed_s"}
    assert data["experiment"] == "rank" and data["config"]["method"] == method
    m = data["metrics"]
    assert (m["n_images"], m["split"], m["eval_split"], m["channels"]) == (12, "test", "train", 6)
    ranking = json.loads((out / "ranking.json").read_text())
    assert {k: ranking[k] for k in ("schema", "layer", "channels", "method", "n_images", "seeds")} == {
        "schema": "poschan-ranking/1", "layer": "backbone.2", "channels": 6, "method": method, "n_images": 12,
        "seeds": [0]}
    assert {k: ranking["data"][k] for k in ("source", "split", "eval_split")} == {
        "source": "fashion-mnist", "split": "test", "eval_split": "train"}
    assert ranking["data"]["images"] == image_fingerprint(load_dataset("fashion-mnist", "test", limit=12).images)
    loaded = ChannelRanking.load(out / "ranking.json")
    assert loaded.top("overall" if method != "dimest" else "position", 6).tolist() == m["top"][
        "overall" if method != "dimest" else "position"]
    assert set(ranking["keys"]) == KEYS[method] == set(m["top"]) == set(m["null"])
    for key, entry in ranking["keys"].items():
        order, scores = entry["order"], entry["scores"]
        assert sorted(order) == list(range(6)) and len(scores) == 6
        assert all(scores[a] >= scores[b] for a, b in zip(order, order[1:])), key
        assert m["top"][key] == order[:6]
        assert 0 <= m["null"][key]["top_overlap"] <= 6
    with open(out / "table.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["channel"]) for r in rows] == list(range(6)) and set(rows[0]) == {"channel", *KEYS[method]}
    assert float(rows[3]["overall" if method != "dimest" else "position"]) == pytest.approx(
        ranking["keys"]["overall" if method != "dimest" else "position"]["scores"][3])
    assert (out / "scores.png").is_file() and (out / "cells.png").is_file() is (method == "shift")
    if method == "dimest":
        dims = m["dims"]
        assert dims["position"] + dims["semantic"] + dims["residual"] == 6
        assert statistic_ok(m["position_percent"], 0, 100)
        assert m["position_percent"]["values"] == [dims["percent"]["position"]]
        assert m["position_percent"]["ci95"] is None  # one seed: no interval (stated)


def test_seeds_are_merged_and_compared(tmp_path):
    out, data = rank(tmp_path, "seeds", *TINY, "--method", "dimest", "--limit", "9", "--seeds", "0,1,2",
                     "--top-n", "3")
    m = data["metrics"]
    percent = m["position_percent"]
    assert percent["n"] == 3 and statistic_ok(percent, 0, 100)
    assert percent == summarize(percent["values"], bounds=(0, 100), unit="ranking seeds")
    assert set(m["seed_overlap"]) == {"position", "semantic"} and m["seed_overlap_chance"] == 3 / 6
    per_seed = json.loads((out / "ranking.json").read_text())["per_seed"]
    for key, s in m["seed_overlap"].items():
        assert statistic_ok(s, 0, 1) and "pairs of ranking seeds" in s["method"]
        top = {seed: sorted(range(6), key=lambda c: (-scores[key][c], c))[:3] for seed, scores in per_seed.items()}
        shared = [[float(c in top[j]) for c in top[i]] for i, j in (("0", "1"), ("0", "2"), ("1", "2"))]
        assert s["values"] == pytest.approx([sum(h) / 3 for h in shared])  # recomputed from the per-seed scores
        assert s == proportion(shared, unit="pairs of ranking seeds (sharing seeds)", item="top-3 channels")


def test_training_checkpoint_weights_are_used(tmp_path):
    model = build_model(f"{THIS}:tiny_net", 10, 1)
    for p in model.backbone.parameters():
        p.data.mul_(-2)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    args = [*TINY, "--method", "flip", "--limit", "8"]
    plain, _ = rank(tmp_path, "plain", *args)
    loaded, _ = rank(tmp_path, "loaded", *args, "--weights", str(tmp_path / "ckpt.pt"))
    scores = [json.loads((d / "ranking.json").read_text())["keys"]["overall"]["scores"] for d in (plain, loaded)]
    assert scores[0] != pytest.approx(scores[1])


def test_pretrained_efficientnet_lite0_last_stage(tmp_path):
    _, data = rank(tmp_path, "lite0", "--model", "efficientnet-lite0", "--pretrained", "--layer", "stage4",
                   "--method", "flip", "--limit", "3", "--split", "test")
    m = data["metrics"]
    assert (m["layer"], m["channels"], m["n_images"]) == ("backbone.net._blocks.15", 320, 3)


def test_photos_are_flipped_as_they_are(tmp_path):
    _, data = rank(tmp_path, "photos", "--model", f"{THIS}:tiny_rgb_net", "--layer", "backbone.2", "--data", "photos",
                   "--split", "train", "--eval-split", "test", "--method", "flip")
    assert data["config"]["flip_input"] == "auto" and data["metrics"]["design"]["flip_input"] == "image"
    assert data["metrics"]["n_images"] == 11


def test_image_folder_ranked_on_its_train_split_for_its_test_split(tmp_path):
    folder = tmp_path / "imgs"
    for split, seed in (("train", 0), ("test", 1)):
        rng = np.random.default_rng(seed)
        for i in range(4):
            (folder / split / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / split / f"c{i % 2}/{i}.png")
    out, data = rank(tmp_path, "folder", "--model", f"{THIS}:tiny_rgb_net", "--layer", "backbone.2",
                     "--data", f"folder:{folder}", "--split", "train", "--eval-split", "test", "--method", "flip")
    assert (data["metrics"]["n_images"], data["metrics"]["split"]) == (4, "train")
    train = load_dataset(f"folder:{folder}", "train", image_size=32)
    assert json.loads((out / "ranking.json").read_text())["data"]["images"] == image_fingerprint(train.images)


def _empty_folder(tmp_path: Path) -> str:
    (tmp_path / "imgs" / "test" / "cat").mkdir(parents=True)
    return f"folder:{tmp_path / 'imgs'}"


@pytest.mark.parametrize("extra, match", [
    (["--layer", "bakbone"], "closest: backbone"),
    (["--layer", "head.fc"], "not a (B, C, H, W) feature map"),
    (["--limit", "0"], "empty"),
    (["--data", "EMPTY_FOLDER"], "no image folder"),
    (["--eval-split", "test"], "images of split 'test' of fashion-mnist also appear in split 'test'"),
    (["--data", "photos", "--split", "all"], "11 of the 17 images of split 'all' of photos also appear in split 'train'"),
    (["--data", "photos", "--split", "test", "--eval-split", "all"], "6 of the 6 images of split 'test' of photos"),
    (["--data", "photos", "--split", "test", "--eval-split", "val"], "unknown photos split 'val'"),
    (["--method", "flop"], "unknown method 'flop'"),
    (["--limit", "2"], "at least 3 images"),
    (["--grid", "4", "--canvas", "84"], "canvas"),
])
def test_bad_input_exit_2_one_line_no_output(tmp_path, capsys, extra, match):
    out = tmp_path / "out"
    extra = [_empty_folder(tmp_path) if e == "EMPTY_FOLDER" else e for e in extra]
    args = ["rank", *TINY, "--preset", "smoke", "--no-progress", *extra, "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("poschan: error:") and match in err, err
    assert not out.exists() and not (tmp_path / "out.partial").exists()
