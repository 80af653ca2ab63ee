"""Does bf16 training move any conclusion? The paired fp32-vs-bf16 check behind ``--precision auto``.

Trains the GAP study's main rows (location and semantic; no permutation and per-batch, with the test-only
evaluations of the unpermuted nets) and AugShift's own method at the quick scope, once in fp32 and once in bf16
autocast, from the same seeds (the same initialisation, data order and permutations), through the command line
(``poschan gap-study`` / ``poschan augshift``; resumable: finished runs are kept, interrupted ones resumed). Then
every reported metric is compared seed by seed: the bf16 − fp32 difference of each seed's value, its mean over the
seeds with a Student-t interval (``poschan.stats.summarize``: the seeds are the units, each seed's value already
holds its own test items' noise), against the smallest difference of interest ±``BOUND`` for metrics on the
accuracy scale; and each claim verdict of the report's rules, decided once per precision. A study earns bf16 as its
default only when every accuracy-scale interval lies inside ±``BOUND`` and no verdict changes.

The control beside each difference: the GAP study trained a third time in fp32 with the contiguous memory format
instead of channels_last, a change of float rounding alone; its paired difference from the fp32 run is what any
rounding change does to these trainings (the interval a check of this size can resolve).

    python scripts/precision_check.py --runs runs/precision-check --out results/precision-check
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from poschan.cli import main as poschan
from poschan.report.claims import CLAIMS_BY_EXPERIMENT
from poschan.results import RunDir, load_run
from poschan.stats import paired_difference, summarize
from poschan.tables import flat_stats, write_csv

BOUND = 0.01  # accuracy units: the smallest difference that would matter to any verdict poschan reports
SEEDS = list(range(10))
STUDIES = {  # the check's name -> (command, config keys over the quick preset)
    "gap-study": ("gap-study", {"paddings": ["zeros"], "grids": [3], "heads": ["gap-fc"], "permutes": ["per-batch"],
                                "stage": None, "test_size": 2000}),
    "augshift": ("augshift", {"methods": ["augshift"]}),
}
PRECISIONS = ("fp32", "bf16")
CONTROL = "fp32-contiguous"  # the rounding-only control: fp32 again, contiguous memory format
CONTROLLED = {"gap-study": ["--precision", "fp32", "--memory-format", "contiguous"]}
# Each training command and the studies of this check whose trainings it runs: its default precision may be auto
# (bf16 where native) only when all of them passed; a command no study covers (seg-train) stays fp32.
COVERS = {"train": ("gap-study location", "gap-study semantic"), "gap-study": ("gap-study location", "gap-study semantic"),
          "augshift": ("augshift",), "seg-train": ()}


def train(runs: Path, seeds: list[int], workers: int) -> dict[tuple[str, str], Path]:
    """Every (study, precision or control) run in ``runs``, trained or resumed unless finished."""
    out = {}
    for name, (command, keys) in STUDIES.items():
        config = runs / f"{name}.yaml"
        runs.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump({**keys, "seeds": seeds, "executor": "local", "workers": workers}))
        arms = {p: ["--precision", p] for p in PRECISIONS}
        if name in CONTROLLED:
            arms[CONTROL] = CONTROLLED[name]
        for arm, flags in arms.items():
            target = runs / f"{name}-{arm}"
            out[name, arm] = target
            if (target / "results.json").is_file():
                continue
            resume = ["--resume"] if target.with_name(target.name + ".partial").exists() else []
            code = poschan([command, "--preset", "quick", "--config", str(config), *flags, "--no-progress", *resume,
                            "--out", str(target)])
            if code:
                raise SystemExit(code)
    return out


def _paired(study: str, metric: str, fp32: dict, bf16: dict, accuracy_scale: bool, items: int = 0) -> dict:
    """One metric's per-seed bf16 − fp32 differences (or another arm's in place of bf16), summarised over the
    seeds. An accuracy that is 0 or 1 for every seed in both runs fixes every one of the ``items`` outcomes, which
    then decide the interval (the discordant share, as poschan.stats bounds a paired difference without variation)."""
    if len(fp32["values"]) != len(bf16["values"]):
        raise SystemExit(f"{study} {metric}: the two runs hold different numbers of seeds")
    unit = "training seeds (paired: same seed in both runs)"
    if accuracy_scale and items and set(fp32["values"]) | set(bf16["values"]) <= {0.0, 1.0}:
        d = paired_difference([np.full(items, v) for v in bf16["values"]], [np.full(items, v) for v in fp32["values"]],
                              bounds=(-1.0, 1.0), unit=unit, item="test items")
    else:
        diffs = [b - a for a, b in zip(fp32["values"], bf16["values"])]
        d = summarize(diffs, bounds=(-1.0, 1.0) if accuracy_scale else (-np.inf, np.inf), unit=unit)
    return {"study": study, "metric": metric, "fp32": fp32["mean"], "bf16": bf16["mean"], "difference": d,
            "items_per_seed": items or None, "bound": BOUND if accuracy_scale else None,
            "within_bound": bool(-BOUND <= d["ci95"][0] and d["ci95"][1] <= BOUND) if accuracy_scale else None}


def gap_rows(fp32: dict, bf16: dict, items: int) -> list[dict]:
    """Each accuracy row, each permuted-vs-unpermuted difference and each share of above-chance accuracy kept
    (``items``: test canvases per seed)."""
    def label(r: dict) -> str:
        perm = "no permutation" if r["permute"] == "none" else f"{r['permute']} permutation at {r['where']}"
        return f"{r['task']} accuracy, {perm}"

    out = [_paired(f"gap-study {a['task']}", label(a), a["accuracy"], b["accuracy"], True, items)
           for a, b in zip(fp32["rows"], bf16["rows"], strict=True)]
    for a, b in zip(fp32["comparisons"], bf16["comparisons"], strict=True):
        study = f"gap-study {a['task']}"
        out.append(_paired(study, f"{a['a']} − no permutation", a, b, True, items))
        share_a, share_b = a["retained_above_chance"], b["retained_above_chance"]
        if share_a.get("estimable", True) and share_b.get("estimable", True):
            out.append(_paired(study, f"share of above-chance accuracy kept, {a['permute']} at {a['where']}",
                               share_a, share_b, False))
    return out


def augshift_rows(fp32: dict, bf16: dict) -> list[dict]:
    out = []
    for method, stats in fp32["methods"].items():
        for metric, a in stats.items():
            if isinstance(a, dict) and "values" in a:
                out.append(_paired("augshift", f"{method} {metric}", a, bf16["methods"][method][metric],
                                   metric != "latent_distance"))
    return out


def verdicts(runs: dict[tuple[str, str], Path]) -> list[dict]:
    """Each claim the report decides from these runs, by precision (and by the control, where there is one)."""
    out = []
    for name, (command, _) in STUDIES.items():
        arms = [arm for (study, arm) in runs if study == name]
        decided = {arm: CLAIMS_BY_EXPERIMENT[command](load_run(runs[name, arm]), {}) for arm in arms}
        for i, a in enumerate(decided["fp32"]):
            task = "semantic" if "semantic" in a.claim else "location"  # the GAP study's claims name their task
            row = {"study": f"{name} {task}" if name == "gap-study" else name, "claim": a.claim,
                   **{arm: decided[arm][i].verdict for arm in arms}}
            row["changed"] = row["bf16"] != row["fp32"]
            out.append(row)
    return out


def with_control(rows: list[dict], control: list[dict]) -> list[dict]:
    """``rows`` (bf16 − fp32), each with the control's difference of the same metric beside it."""
    by_metric = {(r["study"], r["metric"]): r for r in control}
    out = []
    for r in rows:
        c = by_metric.get((r["study"], r["metric"]))
        out.append({**r, "control_difference": c["difference"], "control_within_bound": c["within_bound"]}
                   if c else r)
    return out


def decisions(rows: list[dict], claims: list[dict]) -> dict[str, dict]:
    """Per study: bf16 where every accuracy-scale interval lies inside ±BOUND and no verdict changed, else fp32 and
    what failed."""
    out = {}
    for study in dict.fromkeys(r["study"] for r in rows):
        failed = [f"{r['metric']}: {r['difference']['mean']:+.4f} [{r['difference']['ci95'][0]:+.4f}, "
                  f"{r['difference']['ci95'][1]:+.4f}] not inside ±{BOUND}"
                  for r in rows if r["study"] == study and r["within_bound"] is False]
        failed += [f"verdict changed: {c['claim']} ({c['fp32']} -> {c['bf16']})"
                   for c in claims if c["study"] == study and c["changed"]]
        out[study] = {"default": "fp32" if failed else "bf16", "failed": failed}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs/precision-check"), help="where the trainings run")
    ap.add_argument("--out", type=Path, default=Path("results/precision-check"), help="the summary (a new folder)")
    ap.add_argument("--seeds", type=lambda t: [int(s) for s in t.split(",")], default=SEEDS)
    ap.add_argument("--workers", type=int, default=2, help="trainings at once (poschan's local executor)")
    args = ap.parse_args(argv)
    began = time.perf_counter()
    runs = train(args.runs, args.seeds, args.workers)
    loaded = {key: load_run(path) for key, path in runs.items()}
    gap = {arm: loaded["gap-study", arm].metrics for arm in (*PRECISIONS, CONTROL)}
    items = gap["fp32"]["n_test"] * loaded["gap-study", "fp32"].config["test_passes"]
    rows = with_control(gap_rows(gap["fp32"], gap["bf16"], items), gap_rows(gap["fp32"], gap[CONTROL], items))
    rows += augshift_rows(loaded["augshift", "fp32"].metrics, loaded["augshift", "bf16"].metrics)
    claims = verdicts(runs)
    config = {"seeds": args.seeds, "bound": BOUND, "preset": "quick",
              "studies": {name: {"command": command, "config": keys} for name, (command, keys) in STUDIES.items()},
              "control": {name: {"run": f"{name}-{CONTROL}", "flags": flags} for name, flags in CONTROLLED.items()},
              "runs": {f"{name}-{p}": loaded[name, p].config for name, p in runs}}
    out = RunDir(args.out, config)
    work = out.open()
    write_csv(work / "table.csv", [flat_stats(r) for r in rows])
    write_csv(work / "verdicts.csv", claims)
    metrics = {"rows": rows, "verdicts": claims, "decisions": decisions(rows, claims), "bound": BOUND,
               "control": "the same GAP study in fp32 with the contiguous memory format (float rounding alone): "
                          "control_difference is its paired difference from the fp32 run",
               "training_precision": {f"{name}-{arm}": run.env.get("training_precision", run.config["precision"])
                                      for (name, arm), run in loaded.items()}}
    trainings = sum(run.elapsed_s for run in loaded.values())  # the trainings' own time, wherever they were resumed
    out.write_results("precision-check", metrics, args.seeds, "cpu", trainings + time.perf_counter() - began,
                      command=shlex.join(["python", "scripts/precision_check.py", *(argv or sys.argv[1:])]))
    out.commit()
    for study, d in metrics["decisions"].items():
        print(f"{study}: default {d['default']}" + "".join(f"\n  {f}" for f in d["failed"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
