"""The GAP study as a library call: its design, its variants' budgets, the test-only scorers, and the same numbers
as the command line."""

import json

import pytest
import torch
from torch import nn

import poschan
from poschan.cli import main
from poschan.config import build_config
from poschan.data.sources import load_dataset
from poschan.data.stream import CanvasStream
from poschan.errors import UserError
from poschan.experiments.gap_study import Config
from poschan.measure.gap_study import FINISHED, Variant, evaluators, plan_gap_study, variants


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
    plan = plan_gap_study(c)
    assert len(plan.variants) == 4
    for v, tp in plan.plans.items():
        semantic = v.task == "semantic"
        assert (tp.config.epochs, tp.config.train_size) == ((3, 70) if semantic else (1, 40))
        assert len(tp.train_set) == tp.config.train_size
    first = [tp.train_set.images for v, tp in plan.plans.items()]
    assert all(torch.equal(x[:40], first[0][:40]) for x in first)  # the first items of one loaded set


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


def test_library_call_gives_the_numbers_of_the_command(tmp_path):
    """`poschan.gap_study(config, work)` in a notebook and `poschan gap-study` agree on every metric."""
    flags = {"paddings": "zeros,circular", "grids": "3"}
    result = poschan.gap_study(build_config(Config, "gap-study", "smoke", overrides=flags), tmp_path / "lib")
    argv = [f"--{k}={v}" for k, v in flags.items()]
    assert main(["gap-study", "--preset", "smoke", "--no-progress", *argv, "--out", str(tmp_path / "cli")]) == 0
    metrics = json.loads((tmp_path / "cli" / "results.json").read_text())["metrics"]
    assert json.loads(json.dumps(result.metrics())) == metrics
    assert {r["permute"] for r in result.rows} == {"none", "test-only", "per-batch", "per-sample"}


def test_finished_jobs_resume_from_their_records_alone(tmp_path):
    """A finished job's outcomes.json carries it without its checkpoint: the study re-run on the records alone
    gives every metric again and trains nothing; a torn record is refused with a line that says what to do."""
    config = build_config(Config, "gap-study", "smoke", overrides={"paddings": "zeros", "grids": "3"})
    first = poschan.gap_study(config, tmp_path).metrics()
    checkpoints = list(tmp_path.rglob("checkpoint.pt"))
    records = list(tmp_path.rglob(FINISHED))
    assert checkpoints and len(records) == len(checkpoints)
    for path in checkpoints:
        path.unlink()
    assert json.loads(json.dumps(poschan.gap_study(config, tmp_path).metrics())) == json.loads(json.dumps(first))
    assert not list(tmp_path.rglob("checkpoint.pt"))  # nothing was trained again
    records[0].write_text('{"history": []}')
    with pytest.raises(UserError, match="delete it to re-score"):
        poschan.gap_study(config, tmp_path)
