"""The paired fp32-vs-bf16 check (scripts/precision_check.py) and the defaults it decides: known answers for its
statistics and decisions, the committed check recomputed from its per-seed values, and each training command's
default precision agreeing with the committed decision for the studies that cover it."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from poschan.config import build_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("precision_check", ROOT / "scripts" / "precision_check.py")
check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check)
COMMITTED = ROOT / "results" / "precision-check" / "results.json"


def t_interval(values: list[float]) -> tuple[float, float]:
    """Student-t over the seeds on the logit of [-1, 1] (the delta method), mapped back."""
    v = np.asarray(values)
    m = v.mean()
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) * 2 / ((1 + m) * (1 - m))
    centre = np.log((1 + m) / (1 - m))
    return -1 + 2 * expit(centre - half), -1 + 2 * expit(centre + half)


def stat(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "values": values}


FP32 = [0.80, 0.82, 0.78, 0.81, 0.79]
SMALL = [0.001, -0.002, 0.003, 0.002, -0.001]  # bf16 − fp32 per seed: mean 0.0006, interval well inside ±0.01


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences():
    row = check._paired("s", "m", stat(FP32), stat([a + d for a, d in zip(FP32, SMALL)]), True)
    lo, hi = t_interval(SMALL)
    assert row["difference"]["mean"] == pytest.approx(np.mean(SMALL))
    assert row["difference"]["ci95"] == pytest.approx([lo, hi])
    assert row["within_bound"] is True


def test_a_shift_of_two_hundredths_fails_the_bound_and_keeps_fp32():
    shifted = [a + d + 0.02 for a, d in zip(FP32, SMALL)]
    rows = [check._paired("s", "m", stat(FP32), stat(shifted), True),
            check._paired("t", "m", stat(FP32), stat([a + d for a, d in zip(FP32, SMALL)]), True)]
    decided = check.decisions(rows, [])
    assert rows[0]["within_bound"] is False
    assert decided["s"]["default"] == "fp32" and "not inside ±0.01" in decided["s"]["failed"][0]
    assert decided["t"] == {"default": "bf16", "failed": []}


def test_a_noisy_check_cannot_pass_on_its_mean_alone():
    """A mean difference of 0 with seeds spread ±0.03: the interval, not the mean, decides."""
    noisy = [0.03, -0.03, 0.025, -0.025, 0.0]
    row = check._paired("s", "m", stat(FP32), stat([a + d for a, d in zip(FP32, noisy)]), True)
    assert abs(row["difference"]["mean"]) < 1e-12 and row["within_bound"] is False


def test_an_accuracy_of_one_everywhere_is_bounded_by_its_items_not_by_the_whole_range():
    """Every seed at accuracy 1 in both runs: no item can be discordant, so the interval is the Wilson bound of 0
    discordant items out of one seed's items (the seeds may be alike: not pooled), not the metric's whole range."""
    row = check._paired("s", "m", stat([1.0] * 5), stat([1.0] * 5), True, items=2000)
    z2 = stats.norm.ppf(0.975) ** 2
    assert row["difference"]["ci95"] == pytest.approx([-z2 / (2000 + z2), z2 / (2000 + z2)])
    assert row["within_bound"] is True


def test_a_changed_verdict_keeps_fp32_even_inside_the_bound():
    rows = [check._paired("s", "m", stat(FP32), stat([a + d for a, d in zip(FP32, SMALL)]), True)]
    claims = [{"study": "s", "claim": "c", "fp32": "reproduced", "bf16": "inconclusive", "changed": True}]
    assert check.decisions(rows, claims)["s"]["default"] == "fp32"


def committed() -> dict:
    return json.loads(COMMITTED.read_text())["metrics"]


def test_the_committed_check_recomputes_from_its_per_seed_values():
    metrics = committed()
    assert metrics["rows"] and metrics["verdicts"]
    seeds = len(json.loads(COMMITTED.read_text())["seeds"])
    for row in metrics["rows"]:
        d = row["difference"]
        assert d["n"] == seeds
        if "Wilson" in d["method"]:  # every outcome fixed (accuracy 0 or 1 in both runs): no discordant item
            z2, items = stats.norm.ppf(0.975) ** 2, row["items_per_seed"]  # one seed's items: not pooled
            assert set(d["values"]) == {0.0} and d["ci95"] == pytest.approx([-z2 / (items + z2), z2 / (items + z2)])
            continue
        lo, hi = t_interval(d["values"])
        if row["bound"] is None:  # an unbounded metric: the raw scale
            v = np.asarray(d["values"])
            half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
            lo, hi = v.mean() - half, v.mean() + half
        assert d["ci95"] == pytest.approx([lo, hi]), row["metric"]
        if row["bound"] is not None:
            assert row["within_bound"] == (-row["bound"] <= d["ci95"][0] and d["ci95"][1] <= row["bound"])
    assert metrics["decisions"] == check.decisions(metrics["rows"], metrics["verdicts"])


@pytest.mark.parametrize("command", sorted(check.COVERS))
def test_each_training_commands_default_precision_is_what_the_committed_check_allows(command):
    """auto (bf16 where native) only for a command every study of which passed; fp32 for the others, the
    commands no study covers included."""
    module = importlib.import_module(f"poschan.experiments.{command.replace('-', '_')}")
    studies = check.COVERS[command]
    allowed = bool(studies) and all(committed()["decisions"][s]["default"] == "bf16" for s in studies)
    default = build_config(module.Config, command, "quick").precision
    assert default == ("auto" if allowed else "fp32")
