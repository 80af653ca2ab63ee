"""The segmentation sweep at a glance: one row per `ablate` run (a condition: layout, prior, backbone), saying at
which N the paper's flip-ranked channels hurt more than random ones and which ranking comes closest to the
single-channel knock-out reference. Every cell is read from the run's statistics; verdicts use the claims'
"direction" rule with its SESOI, before the claims table's multiple-testing adjustment (said in the column)."""

from __future__ import annotations

from collections.abc import Sequence

from poschan.report.claims import MIOU_SESOI, PAPER_FRACTION, direction, paper_row
from poschan.report.document import Table, interval
from poschan.results import Run


def _cell(stat: dict | None) -> str:
    return interval(stat["mean"], *stat["ci95"]) if stat else "—"


def _verdicts(run: Run, paired: dict[str, dict], control: str) -> str:
    """``N: verdict`` of "flip-ranked channels hurt more than ``control`` ones" at every N of the run."""
    cells = []
    for row in run.metrics.get("reliance", []):
        p = paired.get(f"flip_vs_{control}_drop_n{row['n']}")
        if row.get("ranking") == "flip" and p is not None:
            cells.append(f"{row['n']}: {direction(p, +1, MIOU_SESOI)}")
    return "; ".join(cells) or "—"


def sweep_table(runs: Sequence[Run]) -> Table | None:
    """The sweep table over the `ablate` runs among ``runs`` (None when there are none)."""
    ablations = [r for r in runs if r.experiment == "ablate" and r.metrics.get("reliance")]
    if not ablations:
        return None
    rows = []
    for run in ablations:
        m = run.metrics
        paired = {p["name"]: p for p in m.get("comparisons", []) if "name" in p and "ci95" in p}
        paper = paper_row(run)
        n = paper["n"] if paper else None
        rankings = {v["ranking"]: v for v in m.get("rankings", [])}
        closest = m.get("closest_to_reference")
        best = (f"{closest}: shortfall {_cell(rankings[closest]['shortfall'])}" if closest in rankings else "—")
        rows.append([run.path.name if run.path else "-", str(m.get("networks", 1)), _cell(m.get("miou_clean")),
                     str(n) if n else "—", _cell(paired.get(f"flip_vs_random_drop_n{n}")),
                     _cell(paired.get(f"flip_vs_matched_drop_n{n}")), _verdicts(run, paired, "random"), best])
    return Table("segmentation sweep",
                 ["condition", "networks", "clean mIoU", f"N ≈ {PAPER_FRACTION:.0%}", "flip − random drop at N",
                  "flip − matched drop at N", "flip hurts more than random (per N; direction rule, unadjusted)",
                  "closest to the knock-out reference (shortfall, lower is better)"], rows,
                 "shortfall: mIoU drop of the reference (each channel's own knock-out cost) minus the ranking's, "
                 "averaged over N; every interval covers the trained networks and the test images")
