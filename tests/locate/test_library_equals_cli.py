"""One code path: ``rank_channels`` + ``ranking_controls`` called the notebook way give the numbers of `poschan rank`.

This file doubles as the user-model file (``--model THIS_FILE.py:tiny_net``).
"""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import poschan
from poschan.cli import main

THIS = Path(__file__).as_posix()


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))


@pytest.mark.parametrize("method", ["flip", "shift", "dimest"])
def test_notebook_ranking_equals_the_command(tmp_path, method):
    out = tmp_path / method
    args = ["rank", "--preset", "smoke", "--no-progress", "--model", f"{THIS}:tiny_net", "--layer", "backbone.2",
            "--split", "test", "--limit", "12", "--method", method, "--seeds", "0,1", "--top-n", "4",
            "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    cli = poschan.ChannelRanking.load(out / "ranking.json")

    torch.manual_seed(0)  # the head's initial weights (part of the weights fingerprint)
    model = poschan.build_model(f"{THIS}:tiny_net", num_classes=10, in_chans=1)
    images = poschan.load_dataset("fashion-mnist", "test", limit=12)
    ranking = poschan.rank_channels(model, "backbone.2", images, method, canvas=True, seeds=(0, 1), batch_size=16)
    controls = poschan.ranking_controls(ranking, n=4)

    assert (ranking.layer, ranking.method, ranking.n_images, ranking.seeds) == (cli.layer, cli.method, 12, [0, 1])
    assert ranking.keys == cli.keys and ranking.weights == cli.weights and ranking.design == cli.design
    assert ranking.data["images"] == cli.data["images"]
    for key in ranking.keys:
        assert torch.equal(ranking.scores[key], cli.scores[key]) and torch.equal(ranking.null[key], cli.null[key])
        assert all(torch.equal(ranking.per_seed[s][key], cli.per_seed[s][key]) for s in (0, 1))
    mine = json.loads(json.dumps(controls.metrics()))
    assert mine == {k: metrics[k] for k in mine}
    assert "seed_overlap" in mine and ("position_percent" in mine) is (method == "dimest")
