"""Known answers for `poschan seg-train`, `ablate` and `attack`: every number they report is recomputed here from the
checkpoint (backbone features, the named channels zeroed, the reference mIoU of seg_fixture) on a segmenter that
predicts every class and whose predictions change when channels are zeroed; every interval and p-value is that of
poschan.stats on per-image counts computed here (``hand_counts``, not the library's confusion code), with the units
(seeds, draws, their pairs) chosen here.

Each command evaluates its test scenes in one batch (as PGD's scenes), and each recomputation decodes the same
batches, so the two agree to float rounding (``TOL``), not merely to a pixel or two.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import poschan.control.attack
import poschan.locate.segmenter_rankings
from poschan import stats
from poschan.cli import main
from poschan.data.scenes import NUM_CLASSES, SceneSpec
from poschan.data.segdata import EvalSet, SegData
from poschan.models.segmentation import SegSpec, build_segmenter

from .seg_fixture import IGNORE, SPEC, calibrated_weights, predict, reference_scores, segmenter

SIDE, TEST, CHANNELS = 84, 24, 32
RUN = ["--preset", "smoke", "--no-progress"]
EVAL = ["--test-size", str(TEST), "--batch-size", str(TEST), "--rank-scenes", "16", "--random-seeds", "5"]
COUNTS = {"10%": 3, "25%": 8}  # round(p% of 32 channels)
EPS, PGD_SIZE = 0.05, 12  # PGD budget in raw intensity (not the default 0.1); attacked scenes: the first 12
TOL = 1e-6
SCENES = SceneSpec(side=SIDE)  # seg-train's scene defaults
MIRROR = {"right": "left", "cell:3": "cell:5"}  # the opposite region of each attacked one
FLIP_SCENES = {"right": "left"}  # flip ranks the halves on rank scenes whose items all lie in the left half


def hand_region(name: str) -> torch.Tensor:
    """The pixels of ``right`` and of ``cell:3`` (row 1, column 0 of the 3×3 grid) on the 84-px scenes."""
    mask = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    if name == "right":
        mask[:, 42:] = True
    else:
        assert name == "cell:3"
        mask[28:56, :28] = True
    return mask


def metrics(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())["metrics"]


def top(scores: list[float], n: int) -> list[int]:
    """The ``n`` channels of highest score (ties: lower channel first)."""
    return sorted(range(len(scores)), key=lambda c: -scores[c])[:n]


def hand_counts(pred: torch.Tensor, masks: torch.Tensor, where: torch.Tensor | None = None) -> np.ndarray:
    """Per image: each class's true positives, then its target pixels, then its predicted pixels, over the scored
    pixels ``where``."""
    rows = []
    for p, t in zip(pred.numpy(), masks.numpy()):
        keep = t != IGNORE
        if where is not None:
            keep &= where.numpy()
        conf = np.bincount(t[keep] * NUM_CLASSES + p[keep], minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, -1)
        rows.append(np.concatenate([np.diag(conf), conf.sum(1), conf.sum(0)]))
    return np.array(rows, dtype=np.float64)


def hand_ious(means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of (..., 3K) mean ``hand_counts``: each class's IoU (0 where its union is empty), union and target pixels."""
    k = NUM_CLASSES
    tp, target, predicted = means[..., :k], means[..., k:2 * k], means[..., 2 * k:]
    union = target + predicted - tp
    return np.where(union > 0, tp / np.where(union > 0, union, 1), 0), union, target


def hand_miou(means: np.ndarray) -> np.ndarray:
    """mIoU over the classes present in the target or the prediction."""
    iou, union, _ = hand_ious(means)
    return iou.sum(-1) / (union > 0).sum(-1)


def hand_miou_present(means: np.ndarray) -> np.ndarray:
    """mIoU over the classes present in the target."""
    iou, _, target = hand_ious(means)
    return (iou * (target > 0)).sum(-1) / (target > 0).sum(-1)


def hand_fw_iou(means: np.ndarray) -> np.ndarray:
    """IoU weighted by each class's share of the target pixels."""
    iou, _, target = hand_ious(means)
    return (iou * target).sum(-1) / target.sum(-1)


def hand_accuracy(means: np.ndarray) -> np.ndarray:
    return means[..., :NUM_CLASSES].sum(-1) / means[..., NUM_CLASSES:2 * NUM_CLASSES].sum(-1)


def hand_halves(metric=hand_miou):
    """``metric`` of the first 3K columns minus ``metric`` of the last 3K."""
    return lambda means: metric(means[..., :3 * NUM_CLASSES]) - metric(means[..., 3 * NUM_CLASSES:])


def cycled(a: list, b: list) -> tuple[list, list]:
    """Pairs (a[i mod len(a)], b[i mod len(b)]) for i < the larger count: the commands' pairing of units."""
    m = max(len(a), len(b))
    return [a[i % len(a)] for i in range(m)], [b[i % len(b)] for i in range(m)]


def check_stat(stat: dict, values: list[float], expected: dict, bounds: tuple[float, float]) -> None:
    """``stat`` holds exactly ``values`` (the reference scores of each unit) and the interval, p-value and method of
    ``expected`` (poschan.stats on this file's per-image counts), inside ``bounds`` and not of zero width."""
    assert stat["n"] == len(values) == expected["n"]
    assert stat["values"] == pytest.approx(values, abs=TOL) and expected["values"] == pytest.approx(values, abs=TOL)
    assert stat["mean"] == pytest.approx(sum(values) / len(values), abs=TOL)
    assert stat["ci95"] == pytest.approx(expected["ci95"], abs=TOL)
    lo, hi = stat["ci95"]
    assert bounds[0] <= lo <= stat["mean"] <= hi <= bounds[1] and lo < hi
    assert stat["method"].startswith(expected["method"])
    if "p_value" in expected:
        assert stat["p_value"] == pytest.approx(expected["p_value"], abs=TOL) and stat["test"] == expected["test"]


def check_score(stat: dict, groups: list[np.ndarray], unit: str, metric=hand_miou) -> None:
    check_stat(stat, [float(metric(g.mean(0))) for g in groups],
               stats.estimate(groups, metric, bounds=(0, 1), unit=unit, item="test images"), (0, 1))


def check_drop(stat: dict, clean: np.ndarray, groups: list[np.ndarray], unit: str, metric=hand_miou) -> None:
    expected = stats.paired_difference([clean] * len(groups), groups, metric, bounds=(-1, 1), unit=unit,
                                       item="test images")
    check_stat(stat, [float(metric(clean.mean(0)) - metric(g.mean(0))) for g in groups], expected, (-1, 1))


def check_ratio(stat: dict, a: list[np.ndarray], b: list[np.ndarray], unit: str, metric=hand_miou) -> None:
    """``stat``: drop(a) / drop(b) of ``metric`` per unit (rows: clean beside after) as stats.ratio gives it, or not
    estimated."""
    halves = hand_halves(metric)
    expected = stats.ratio(a, b, halves, unit=unit, item="test images")
    if "estimable" in expected or not np.isfinite(expected["ci95"]).all():
        assert stat["estimable"] is False and stat["reason"]
        return
    check_stat(stat, [float(halves(x.mean(0)) / halves(y.mean(0))) for x, y in zip(a, b)], expected,
               (-np.inf, np.inf))


def check_versus(entry: dict, ranked: list[np.ndarray], control: list[np.ndarray], metric, bounds, unit: str) -> None:
    """A ranked − control comparison: metric(control) − metric(ranked) per cyclic pair (the clean score cancels)."""
    r, c = cycled(ranked, control)
    expected = stats.paired_difference(c, r, metric, bounds=bounds, unit=unit, item="test images")
    check_stat(entry, [float(metric(y.mean(0)) - metric(x.mean(0))) for x, y in zip(r, c)], expected, bounds)
    assert entry["a"] and entry["b"] and entry["question"].endswith("?")


def check_draws(draws: list[list[int]], n: int, count: int) -> None:
    assert len(draws) == count and len({tuple(sorted(d)) for d in draws}) > 1
    assert all(len(set(d)) == n and set(d) <= set(range(CHANNELS)) for d in draws)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "given.pt"
    torch.save(calibrated_weights(SIDE), path)
    return path


@pytest.fixture(scope="module")
def trained(weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "train"
    assert main(["seg-train", *RUN, "--side", str(SIDE), "--width", str(SPEC.width), "--aspp-channels",
                 str(SPEC.aspp_channels), "--epochs", "0", "--weights", str(weights), "--test-size", str(TEST),
                 "--batch-size", str(TEST // 2), "--seeds", "0", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def scenes() -> EvalSet:
    return SegData("scenes", SCENES).test_set(TEST)


@pytest.fixture(scope="module")
def ref(trained, scenes) -> SimpleNamespace:
    """The checkpoint's model rebuilt by hand, the test scenes and their features; asserts non-degeneracy."""
    state = torch.load(trained / "seed0/checkpoint.pt", weights_only=True)
    assert SceneSpec(**state["meta"]["scenes"]) == SCENES
    model = segmenter(state["model"], SegSpec(**state["meta"]["segmentation"]))
    with torch.no_grad():
        feats = model.features(scenes.images)
    size = (SIDE, SIDE)
    clean = predict(model, feats, size)
    assert len(clean.unique()) >= 3
    strongest = feats.mean(dim=(0, 2, 3)).argsort(descending=True)[:COUNTS["25%"]].tolist()
    assert (predict(model, feats, size, strongest) != clean).float().mean() > 0.05
    return SimpleNamespace(model=model, images=scenes.images, masks=scenes.masks, feats=feats, size=size,
                           mean=torch.tensor(scenes.mean).view(-1, 1, 1), std=torch.tensor(scenes.std).view(-1, 1, 1),
                           checkpoint=str(trained / "seed0/checkpoint.pt"))


def scores_without(ref: SimpleNamespace, channels: list[int] | None) -> tuple[float, float]:
    """Reference (mIoU, pixel accuracy) of all test scenes with ``channels`` zeroed."""
    return reference_scores(predict(ref.model, ref.feats, ref.size, channels), ref.masks)


def in_out(pred: torch.Tensor, masks: torch.Tensor, inside: torch.Tensor) -> tuple[float, float]:
    """mIoU over the classes of the target inside and outside the region ``inside``, of the summed confusion."""
    return tuple(float(hand_miou_present(hand_counts(pred, masks, where).sum(0))) for where in (inside, ~inside))


def test_seg_train_epochs_0_evaluates_exactly_the_given_weights(weights, trained, scenes):
    given = torch.load(weights, weights_only=True)
    saved = torch.load(trained / "seed0/checkpoint.pt", weights_only=True)["model"]
    assert saved.keys() == given.keys() and all(torch.equal(saved[k], given[k]) for k in given)
    model = segmenter(given)
    with torch.no_grad():
        expected = reference_scores(predict(model, model.features(scenes.images), (SIDE, SIDE)), scenes.masks)
    m = metrics(trained)
    with torch.no_grad():
        counts = [hand_counts(predict(model, model.features(scenes.images), (SIDE, SIDE)), scenes.masks)]
    assert [float(hand_miou(counts[0].mean(0))), float(hand_accuracy(counts[0].mean(0)))] == pytest.approx(expected)
    check_score(m["miou"], counts, "training seeds")
    check_score(m["pixel_accuracy"], counts, "training seeds", hand_accuracy)
    assert m["miou"]["values"] == pytest.approx([expected[0]], abs=TOL)
    assert m["test_images"] == TEST and "train_loss" not in m  # epochs 0: nothing trained
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fresh = build_segmenter(SPEC).eval()
    with torch.no_grad():
        fresh_miou = reference_scores(fresh(scenes.images).argmax(1), scenes.masks)[0]
    assert abs(fresh_miou - m["miou"]["mean"]) > 1e-3


@pytest.fixture(scope="module")
def ablated(ref, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablate") / "run"
    assert main(["ablate", *RUN, *EVAL, "--checkpoint", ref.checkpoint, "--rankings", "flip,knockout",
                 "--knockout-scenes", "20", "--n", ",".join(COUNTS), "--seeds", "0,1", "--out", str(out)]) == 0
    return out


def test_ablate_reports_the_miou_of_the_channels_it_names(ref, ablated):
    m = metrics(ablated)
    ranking = json.loads((ablated / "ranking.json").read_text())
    orders = {seed: top(scores["overall"], CHANNELS) for seed, scores in ranking["per_seed"].items()}
    assert sorted(orders) == ["0", "1"] and orders["0"] != orders["1"]  # each seed ranks its own scenes
    overall = ranking["keys"]["overall"]
    assert overall["order"] == top(overall["scores"], CHANNELS)  # pooled over the two seeds' scenes
    assert ranking["layer"] == "backbone" and ranking["channels"] == CHANNELS and ranking["method"] == "flip"
    assert m["channels"] == CHANNELS and m["mode"] == "zero" and m["test_images"] == TEST and m["networks"] == 1
    assert m["random_seeds"] == 5 and m["ranking"] == {"source": "ranking.json", "seeds": [0, 1]}

    clean_pred = predict(ref.model, ref.feats, ref.size)  # all test scenes in one batch, as the command
    clean = hand_counts(clean_pred, ref.masks)
    unit = "trained networks"
    check_score(m["miou_clean"], [clean], unit)
    check_score(m["pixel_accuracy_clean"], [clean], unit, hand_accuracy)

    flip = [row for row in m["reliance"] if row["ranking"] == "flip"]
    assert [row["n"] for row in flip] == list(COUNTS.values())
    by_name = {c["name"]: c for c in m["comparisons"]}
    moved = []
    for row in flip:
        n = row["n"]
        assert row["fraction"] == pytest.approx(n / CHANNELS) and row["ranked_channels"] == [overall["order"][:n]]
        # network 0's draws: generators keyed by (network 0, N, draw r) through numpy's SeedSequence
        keyed = [int(np.random.SeedSequence([0, n, r]).generate_state(1, dtype=np.uint64)[0]) for r in range(5)]
        draws = [torch.randperm(CHANNELS, generator=torch.Generator().manual_seed(k))[:n].tolist() for k in keyed]
        assert row["random_channels"] == [draws]  # one list of draws per network
        ranked = hand_counts(predict(ref.model, ref.feats, ref.size, overall["order"][:n]), ref.masks)
        random = np.mean([hand_counts(predict(ref.model, ref.feats, ref.size, d), ref.masks) for d in draws], 0)
        check_score(row["ranked"], [ranked], unit)
        check_score(row["ranked_pixel_accuracy"], [ranked], unit, hand_accuracy)
        check_score(row["random"], [random], unit)  # the draws pooled within the network
        check_drop(row["ranked_drop"], clean, [ranked], unit)
        check_drop(row["random_drop"], clean, [random], unit)
        check_versus(by_name[f"flip_vs_random_drop_n{n}"], [ranked], [random], hand_miou, (-1, 1), unit)
        moved.append(abs(row["ranked_drop"]["mean"]))
    assert max(moved) > 1e-3  # zeroing channels moves the mIoU: an ablation that zeroed nothing is caught

    costs = json.loads((ablated / "scores.json").read_text())["knockout"]  # each channel's own cost, rank scenes
    meta = torch.load(ref.checkpoint, weights_only=True)["meta"]
    knock = SegData.from_meta(meta, None).rank_set(20, seed=0)
    with torch.no_grad():
        feats = ref.model.features(knock.images)
    base = hand_miou(hand_counts(predict(ref.model, feats, ref.size), knock.masks).mean(0))
    assert len(costs) == CHANNELS and max(costs) > 1e-3
    for c in (int(np.argmax(costs)), int(np.argmin(costs))):
        after = hand_counts(predict(ref.model, feats, ref.size, [c]), knock.masks)
        assert costs[c] == pytest.approx(float(base - hand_miou(after.mean(0))), abs=TOL)


def test_ablate_applies_a_reused_ranking_in_its_own_order(ref, ablated, tmp_path):
    record = json.loads((ablated / "ranking.json").read_text())
    known = torch.randperm(CHANNELS, generator=torch.Generator().manual_seed(11)).tolist()
    ranked = {}
    for name, order in (("known", known), ("reversed", known[::-1])):
        path = tmp_path / f"{name}.json"
        scores = [float(CHANNELS - order.index(c)) for c in range(CHANNELS)]
        path.write_text(json.dumps({**record, "per_seed": {"0": {"overall": scores}},
                                    "keys": {**record["keys"], "overall": {"order": order, "scores": scores}}}))
        out = tmp_path / name
        assert main(["ablate", *RUN, *EVAL, "--checkpoint", ref.checkpoint, "--n", ",".join(COUNTS),
                     "--rankings", "flip", "--ranking", str(path), "--out", str(out)]) == 0
        m = metrics(out)
        assert m["ranking"] == {"source": str(path), "seeds": [0]} and not (out / "ranking.json").exists()
        ranked[name] = [row["ranked"]["mean"] for row in m["reliance"]]
        assert ranked[name] == pytest.approx([scores_without(ref, order[:n])[0] for n in COUNTS.values()], abs=TOL)
    assert max(abs(a - b) for a, b in zip(ranked["known"], ranked["reversed"])) > 1e-3


@pytest.fixture(scope="module")
def attacked(ref, tmp_path_factory) -> SimpleNamespace:
    """An attack run on ``right`` and ``cell:3``, with the rankings it computed and its PGD calls recorded."""
    out = tmp_path_factory.mktemp("attack") / "run"
    calls: dict[str, list] = {"segmenter_ranking": [], "masked_pgd": []}
    where = {"segmenter_ranking": poschan.locate.segmenter_rankings,  # the modules that call them
             "masked_pgd": poschan.control.attack}

    def spy(name: str, real):
        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            calls[name].append((args, kwargs, result))
            return result
        return wrapper

    with pytest.MonkeyPatch.context() as mp:
        for name, module in where.items():
            mp.setattr(module, name, spy(name, getattr(module, name)))
        assert main(["attack", *RUN, *EVAL, "--checkpoint", ref.checkpoint, "--region", "right,cell:3",
                     "--n", "25%", "--grid", "3", "--eps", str(EPS), "--pgd-steps", "3", "--pgd-size", str(PGD_SIZE),
                     "--seeds", "0", "--out", str(out)]) == 0
    return SimpleNamespace(metrics=metrics(out), **calls)


def expected_channels(attacked: SimpleNamespace, region: str, method: str, n: int) -> list[int]:
    """Top ``n`` of the score of the ranked region: ``region`` itself, or its mirror for the ``-opposite`` control."""
    base, _, control = method.partition("-")
    key = MIRROR[region] if control else region
    side = FLIP_SCENES[region] if base == "flip" else None
    (ranking,) = [r for args, kw, r in attacked.segmenter_ranking if args[3] == base and kw["region"] == side]
    assert kw_seeds(attacked, base) == [0]
    scores = ranking.per_seed[0]
    assert top(scores["overall"].tolist(), n) != top(scores[key].tolist(), n)  # a region-blind attack would differ
    return top(scores[key].tolist(), n)


def kw_seeds(attacked: SimpleNamespace, method: str) -> list[int]:
    (seeds,) = {tuple(kw["seeds"]) for args, kw, _ in attacked.segmenter_ranking if args[3] == method}
    return list(seeds)


ROW_METRICS = {"miou": (hand_miou_present, ""), "pixel_accuracy": (hand_accuracy, "pixel_accuracy_"),
               "fw_iou": (hand_fw_iou, "fw_iou_")}  # a row's metrics: how to score them, their drop keys' prefix


def check_row(row: dict, clean: dict[str, np.ndarray], after: list[dict[str, np.ndarray]], unit: str) -> None:
    """An attack row from per-image counts inside / outside the region, clean and after each unit's edit: each
    metric's scores, drops and selectivity; the mIoU drop ratio."""
    inside = [np.concatenate([clean["in"], a["in"]], 1) for a in after]
    outside = [np.concatenate([clean["out"], a["out"]], 1) for a in after]
    for name, (metric, prefix) in ROW_METRICS.items():
        for side in ("in", "out"):
            check_score(row[f"{name}_{side}_clean"], [clean[side]], "training seeds", metric)
            check_score(row[f"{name}_{side}"], [a[side] for a in after], unit, metric)
            check_drop(row[f"{prefix}drop_{side}"], clean[side], [a[side] for a in after], unit, metric)
        drop_in, drop_out = (np.array(row[f"{prefix}drop_{side}"]["values"]) for side in ("in", "out"))
        expected = stats.paired_difference(inside, outside, hand_halves(metric), bounds=(-2, 2), unit=unit,
                                           item="test images")
        check_stat(row[f"{prefix}selectivity"], list(drop_in - drop_out), expected, (-2, 2))
    check_ratio(row["drop_ratio"], inside, outside, unit, hand_miou_present)


def split(pred: torch.Tensor, masks: torch.Tensor, region: str) -> dict[str, np.ndarray]:
    inside = hand_region(region)
    return {"in": hand_counts(pred, masks, inside), "out": hand_counts(pred, masks, ~inside)}


def pgd_calls(attacked: SimpleNamespace, region: str) -> list[tuple]:
    return [(args, kw, adv) for args, kw, adv in attacked.masked_pgd if torch.equal(args[3], hand_region(region))]


def test_attack_reports_the_in_out_miou_of_the_attacked_regions_channels(ref, attacked):
    m = attacked.metrics
    assert (m["channels"], m["test_images"], m["eps"], m["pgd_steps"]) == (CHANNELS, TEST, EPS, 3)
    assert m["seeds"] == [0] and m["random_seeds"] == 5
    n = COUNTS["25%"]
    channel_methods = {"right": ["flip", "shift", "flip-opposite", "shift-opposite", "random"],
                       "cell:3": ["shift", "shift-opposite", "random"]}  # flip ranks halves only
    expected_rows = {(r, n, meth) for r, methods in channel_methods.items() for meth in methods}
    expected_rows |= {(r, None, "pgd") for r in channel_methods}
    rows = [(r["region"], r["n"], r["method"]) for r in m["attack"]]
    assert len(rows) == len(expected_rows) and set(rows) == expected_rows
    after = {}  # (region, method) -> per-unit counts inside / outside
    for row in m["attack"]:
        inside = hand_region(row["region"])
        if row["method"] == "pgd":
            (args, _, adv), = pgd_calls(attacked, row["region"])  # one seed, one batch
            assert torch.equal(args[1], ref.images[:PGD_SIZE]) and torch.equal(args[2], ref.masks[:PGD_SIZE])
            clean_pred = predict(ref.model, ref.feats[:PGD_SIZE], ref.size)
            with torch.no_grad():
                adv_pred = ref.model(adv).argmax(1)
            assert (adv_pred != clean_pred)[:, inside].any()
            check_row(row, split(clean_pred, args[2], row["region"]), [split(adv_pred, args[2], row["region"])],
                      "PGD seeds")
            assert row["miou_in"]["values"] == pytest.approx([in_out(adv_pred, args[2], inside)[0]], abs=TOL)
            continue
        if row["method"] == "random":
            check_draws(row["channels"], n, 5)
        else:
            assert row["channels"] == [expected_channels(attacked, row["region"], row["method"], n)]
        preds = [predict(ref.model, ref.feats, ref.size, channels) for channels in row["channels"]]
        after[row["region"], row["method"]] = [split(p, ref.masks, row["region"]) for p in preds]
        clean_pred = predict(ref.model, ref.feats, ref.size)
        assert (row["miou_in_clean"]["mean"], row["miou_out_clean"]["mean"]) == pytest.approx(
            in_out(clean_pred, ref.masks, inside), abs=TOL)
        assert [*row["miou_in"]["values"], *row["miou_out"]["values"]] == pytest.approx(
            [in_out(p, ref.masks, inside)[0] for p in preds] + [in_out(p, ref.masks, inside)[1] for p in preds], abs=TOL)
        check_row(row, split(clean_pred, ref.masks, row["region"]), after[row["region"], row["method"]],
                  "random draws" if row["method"] == "random" else "ranking seeds")

    expected_names = []
    for region, methods in channel_methods.items():
        for method in ("flip", "shift"):
            if method in methods:
                expected_names += [f"{region}_n{n}_{method}_vs_random_drop_in",
                                   f"{region}_n{n}_{method}_vs_random_selectivity",
                                   f"{region}_n{n}_{method}_vs_opposite_selectivity"]
    assert sorted(c["name"] for c in m["comparisons"]) == sorted(expected_names)
    sides = {key: [np.concatenate([a["in"], a["out"]], 1) for a in units] for key, units in after.items()}
    for entry in m["comparisons"]:
        region, _, rest = entry["name"].partition(f"_n{n}_")
        method, _, what = rest.partition("_vs_")
        if what == "random_drop_in":
            check_versus(entry, [a["in"] for a in after[region, method]], [a["in"] for a in after[region, "random"]],
                         hand_miou_present, (-1, 1), "(ranking seed, random draw) pairs")
        elif what == "random_selectivity":
            check_versus(entry, sides[region, method], sides[region, "random"], hand_halves(hand_miou_present),
                         (-2, 2), "(ranking seed, random draw) pairs")
        else:
            assert what == "opposite_selectivity"
            check_versus(entry, sides[region, method], sides[region, f"{method}-opposite"],
                         hand_halves(hand_miou_present), (-2, 2), "(ranking seed, ranking seed) pairs")
    assert any(abs(c["mean"]) > 1e-3 for c in m["comparisons"])  # the comparisons see the edits


def test_attack_pgd_stays_in_its_budget_and_region(ref, attacked):
    raw = ref.images * ref.std + ref.mean  # the scenes in raw intensity: background exactly 0, garments up to 1
    assert raw.min().item() == pytest.approx(0, abs=1e-6) and raw.max().item() <= 1 + 1e-6
    for region in ("right", "cell:3"):
        (args, _, adv), = pgd_calls(attacked, region)
        inside = hand_region(region).expand_as(adv)
        x = args[1]
        assert torch.equal(adv[~inside], x[~inside])  # not a bit changed outside the region
        delta = ((adv - x) * ref.std)[inside].abs()  # raw intensity units
        assert delta.max().item() <= EPS + 1e-5
        assert delta.max().item() > 0.9 * EPS  # signed steps of 2.5·eps/steps reach the budget: eps is the one given
        adv_raw = adv * ref.std + ref.mean
        assert adv_raw.min().item() >= -1e-5 and adv_raw.max().item() <= 1 + 1e-5
