"""The findings summary: one line per question, read at its headline setting (the most networks among the marked
rows), the budget response's largest budget beside, every setting tallied; and the claims beyond the paper
(census, order-free probe, debiasing) read from the committed runs and decided again here by hand."""

from pathlib import Path

import pytest

from poschan.report.claims import ABSTRACT, BEYOND, Claim, claims, direction
from poschan.report.document import interval
from poschan.report.findings import findings
from poschan.results import Run, load_run
from poschan.stats import METHOD_VERSION

RESULTS = Path(__file__).resolve().parents[2] / "results"


def claim(question: str, verdict: str, *, run: str = "r", headline: bool = False, units: int = 3,
          family: str = "gap-study", source: str = ABSTRACT, measured: str = "x 0.5 [0.4, 0.6]") -> Claim:
    return Claim(f"{question} ({run})", source, run, f"scope of {run}", measured + "; control 0.1", "0.01",
                 verdict, "direction", family, question=question, headline=headline, units=units)


def test_one_finding_per_question_at_its_headline_with_every_setting_tallied():
    found = [claim("q1", "inconclusive", run="a"), claim("q1", "reproduced", run="b", headline=True, units=3),
             claim("q1", "not reproduced", run="c", headline=True, units=5),
             claim("q1", "reproduced", run="d", headline=True, units=5),
             claim("q2", "reproduced", run="e", source=BEYOND), claim("q3", "inconclusive", run="f")]
    out = findings(found)
    assert [f.question for f in out] == ["q1", "q3", "q2"]  # the paper's first, each group in its order
    q1 = out[0]
    assert q1.headline.run == "c"  # the most networks among the headline rows; the first of equals
    assert q1.tally == {"reproduced": 2, "not reproduced": 1, "inconclusive": 1, "not decided (older intervals)": 0}
    line = q1.markdown()
    assert line.startswith("- **q1**: not reproduced — x 0.5 [0.4, 0.6]; scope of c (run c).")
    assert "control 0.1" not in line and "Over all 4 settings: 2 reproduced, 1 not reproduced, 1 inconclusive." in line
    assert "Over all" not in out[1].markdown() and out[2].beyond


def test_the_budget_response_is_read_beside_the_study_at_its_largest_budget():
    found = [claim("q", "inconclusive", run="gap-study", headline=True, units=5),
             claim("q", "reproduced", run="budget-response:w8-x1", headline=True, family="budget-response"),
             claim("q", "not reproduced", run="budget-response:w8-x16", headline=True, family="budget-response",
                   measured="share 0.2 [0.1, 0.3]")]
    (only,) = findings(found)
    assert only.headline.run == "gap-study" and only.largest_budget.run == "budget-response:w8-x16"
    assert "At the budget response's largest budget: not reproduced — share 0.2 [0.1, 0.3]" in only.markdown()
    alone = findings([c for c in found if c.family == "budget-response"])[0]  # no study: the budgets are the line
    assert alone.headline.run == "budget-response:w8-x1" and alone.largest_budget is None


@pytest.mark.parametrize("name, comparison, headline", [
    ("census", "efficientnet-lite0:backbone:plain_vs_permuted_test", "efficientnet-lite0"),
    ("probe", "backbone:plain_vs_sorted", "backbone"),
    ("debias-fmnist", "ranked_vs_random_consistency_gain_n6", "top 6 (5%)"),
])
def test_claims_beyond_the_paper_decide_on_their_comparison(name, comparison, headline):
    run = load_run(RESULTS / name)
    found = claims([run])
    (main,) = [c for c in found if c.headline]
    p = next(p for p in run.metrics["comparisons"] if p["name"] == comparison)
    assert headline in main.claim and main.source.startswith(BEYOND) and main.units == p["n"]
    assert main.unadjusted == direction(p, +1, 0.01)
    assert interval(p["mean"], *p["ci95"]) in main.measured


def test_order_free_readouts_of_the_budget_response_say_what_they_mean():
    """The sorted readout against chance per cell and training; the headline at the main width's largest budget on
    networks trained for location; the ordered readout and the moments beside it."""
    from poschan.report.claims import ORDER_FREE_MEANING, above_chance

    def readout(cell, width, samples, trained, permute, kind, lo, hi):
        return {"cell": cell, "width": width, "samples": samples, "trained": trained, "permute": permute,
                "target": "location", "readout": kind, "chance": 1 / 9,
                "accuracy": {"mean": (lo + hi) / 2, "ci95": [lo, hi], "n": 3}}

    rows = [readout(c, w, n, t, p, k, lo, hi) for c, w, n in (("w8-x1", 8, 32000), ("w16-x4", 16, 128000),
                                                               ("w8-x16", 8, 512000))
            for t in ("location", "semantic") for p in ("none", "per-batch")
            for k, lo, hi in (("plain", 0.9, 0.95), ("sorted", 0.05, 0.3) if p == "none" else ("sorted", 0.4, 0.5),
                              ("moments", 0.2, 0.3))]
    run = Run(Path("budget-response"), "budget-response", {"width": 8}, {"readouts": rows}, [0],
              {"stats": METHOD_VERSION}, 1.0)
    found = [c for c in claims([run]) if c.rule == "above chance"]
    assert len(found) == 3 * 2 * 2
    by = {f.question: f for f in findings(found)}
    normal = by[f"{ORDER_FREE_MEANING['none']} (a location readout of its sorted pooled vector is above chance)"]
    assert normal.headline.run == "budget-response:w8-x16" and "trained for location" in normal.headline.claim
    assert normal.headline.verdict == above_chance({"ci95": [0.05, 0.3]}, 1 / 9) == "inconclusive"
    assert "ordered readout 0.925 [0.900, 0.950]" in normal.headline.measured and "moments" in normal.headline.measured
    permuted = [f for q, f in by.items() if q.startswith(ORDER_FREE_MEANING["per-batch"])][0]
    assert permuted.headline.verdict == "reproduced" and permuted.tally["reproduced"] == 6
