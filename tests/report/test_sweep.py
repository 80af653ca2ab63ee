"""The segmentation sweep table: one row per ablate run, read from its statistics."""

from pathlib import Path

from poschan.report.sweep import sweep_table
from poschan.results import Run


def stat(lo: float, hi: float) -> dict:
    return {"mean": (lo + hi) / 2, "ci95": [lo, hi], "n": 3, "values": [(lo + hi) / 2] * 3}


def ablate_run(name: str, diffs: dict[int, tuple[float, float]], closest: str) -> Run:
    """128 channels; flip − random drop intervals per N; two rankings compared with the reference."""
    reliance = [{"ranking": "flip", "n": n, "fraction": n / 128} for n in diffs]
    comparisons = [{"name": f"flip_vs_random_drop_n{n}", **stat(*ci)} for n, ci in diffs.items()]
    comparisons += [{"name": f"flip_vs_matched_drop_n{n}", **stat(ci[0] - 1, ci[1] - 1)} for n, ci in diffs.items()]
    rankings = [{"ranking": "flip", "shortfall": stat(0.10, 0.14)}, {"ranking": "probe", "shortfall": stat(0.02, 0.04)}]
    return Run(path=Path(name), experiment="ablate", config={}, seeds=[0], env={}, elapsed_s=0.0, metrics={
        "networks": 3, "miou_clean": stat(0.5, 0.6), "reliance": reliance, "comparisons": comparisons,
        "rankings": rankings, "closest_to_reference": closest})


def test_one_row_per_ablate_run_with_the_papers_size_and_verdicts():
    runs = [ablate_run("ablate-a", {1: (-0.01, 0.01), 6: (0.02, 0.05), 64: (-0.2, -0.1)}, "probe"),
            Run(path=Path("gap"), experiment="gap-study", config={}, seeds=[0], env={}, elapsed_s=0.0, metrics={}),
            ablate_run("ablate-b", {3: (0.01, 0.02), 13: (-0.01, 0.03)}, "flip")]
    table = sweep_table(runs)
    assert [row[0] for row in table.rows] == ["ablate-a", "ablate-b"]
    a, b = table.rows
    assert a[3] == "6" and a[4] == "0.0350 [0.0200, 0.0500]" and a[5] == "-0.965 [-0.980, -0.950]"  # 6/128 is nearest 5%
    assert a[6] == "1: inconclusive; 6: reproduced; 64: not reproduced"
    assert a[7] == "probe: shortfall 0.0300 [0.0200, 0.0400]" and b[7] == "flip: shortfall 0.120 [0.100, 0.140]"
    assert b[3] == "3" and b[1] == "3" and b[2] == "0.550 [0.500, 0.600]"


def test_no_ablate_run_no_table():
    assert sweep_table([Run(path=None, experiment="gap-study", config={}, seeds=[0], env={}, elapsed_s=0.0,
                            metrics={})]) is None
