"""Known answers for `poschan seg-train`, `ablate` and `attack`: every number they report is recomputed here from the
checkpoint (backbone features, the named channels zeroed, the reference mIoU of seg_fixture) on a segmenter that
predicts every class and whose predictions change when channels are zeroed.

Each command evaluates its test scenes in one batch (as ablate's folds and PGD's scenes: one batch each), and each
recomputation decodes the same batches, so the two agree to float rounding (``TOL``), not merely to a pixel or two.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import poschan.control.attack
from poschan.cli import main
from poschan.data.scenes import SceneSpec
from poschan.data.segdata import EvalSet, SegData
from poschan.experiments import attack
from poschan.models.segmentation import SegSpec, build_segmenter
from poschan.stats import summarize

from .seg_fixture import SPEC, calibrated_weights, predict, reference_scores, segmenter

SIDE, TEST, CHANNELS, FOLDS = 84, 24, 32, 3
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


def check_stat(stat: dict, values: list[float]) -> None:
    """``stat`` summarises exactly ``values`` (its interval: the one stats.summarize gives them)."""
    assert stat["n"] == len(values)
    assert stat["values"] == pytest.approx(values, abs=TOL)
    assert stat["mean"] == pytest.approx(sum(values) / len(values), abs=TOL)
    assert stat["ci95"] == pytest.approx(summarize(stat["values"])["ci95"], abs=TOL)


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
    """Reference mIoU inside and outside the region ``inside``."""
    return reference_scores(pred, masks, inside)[0], reference_scores(pred, masks, ~inside)[0]


def test_seg_train_epochs_0_evaluates_exactly_the_given_weights(weights, trained, scenes):
    given = torch.load(weights, weights_only=True)
    saved = torch.load(trained / "seed0/checkpoint.pt", weights_only=True)["model"]
    assert saved.keys() == given.keys() and all(torch.equal(saved[k], given[k]) for k in given)
    model = segmenter(given)
    with torch.no_grad():
        expected = reference_scores(predict(model, model.features(scenes.images), (SIDE, SIDE)), scenes.masks)
    m = metrics(trained)
    check_stat(m["miou"], [expected[0]])
    check_stat(m["pixel_accuracy"], [expected[1]])
    assert m["test_images"] == TEST
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fresh = build_segmenter(SPEC).eval()
    with torch.no_grad():
        fresh_miou = reference_scores(fresh(scenes.images).argmax(1), scenes.masks)[0]
    assert abs(fresh_miou - m["miou"]["mean"]) > 1e-3


@pytest.fixture(scope="module")
def ablated(ref, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablate") / "run"
    config = out.parent / "folds.yaml"
    config.write_text(f"folds: {FOLDS}\n")
    assert main(["ablate", *RUN, *EVAL, "--config", str(config), "--checkpoint", ref.checkpoint,
                 "--n", ",".join(COUNTS), "--seeds", "0,1", "--out", str(out)]) == 0
    return out


def test_ablate_reports_the_miou_of_the_channels_it_names(ref, ablated):
    m = metrics(ablated)
    ranking = json.loads((ablated / "ranking.json").read_text())
    orders = {seed: top(scores["overall"], CHANNELS) for seed, scores in ranking["per_seed"].items()}
    assert sorted(orders) == ["0", "1"] and orders["0"] != orders["1"]  # each seed ranks its own scenes
    overall = ranking["keys"]["overall"]
    assert overall["order"] == top(overall["scores"], CHANNELS)
    assert ranking["layer"] == "backbone" and ranking["channels"] == CHANNELS and ranking["method"] == "flip"
    assert m["channels"] == CHANNELS and m["mode"] == "zero" and m["test_images"] == TEST
    assert m["random_seeds"] == 5 and m["ranking"] == {"source": "ranking.json", "seeds": [0, 1]}

    fold = TEST // FOLDS  # folds: consecutive thirds of the test scenes, each decoded as one batch
    preds = [predict(ref.model, ref.feats[i:i + fold], ref.size) for i in range(0, TEST, fold)]
    per_fold = [reference_scores(p, ref.masks[i * fold:(i + 1) * fold]) for i, p in enumerate(preds)]
    check_stat(m["miou_clean"], [s[0] for s in per_fold])
    check_stat(m["pixel_accuracy_clean"], [s[1] for s in per_fold])
    clean = reference_scores(torch.cat(preds), ref.masks)[0]
    assert m["miou_clean_all"] == pytest.approx(clean, abs=TOL)

    assert [row["n"] for row in m["reliance"]] == list(COUNTS.values())
    moved = []
    for row in m["reliance"]:
        n = row["n"]
        assert row["fraction"] == pytest.approx(n / CHANNELS)
        check_draws(row["random_channels"], n, 5)
        sets = {"ranked": [orders[s][:n] for s in ("0", "1")], "random": row["random_channels"]}
        drops = {}
        for name, channel_sets in sets.items():
            results = [scores_without(ref, channels) for channels in channel_sets]
            drops[name] = sum(clean - r[0] for r in results) / len(results)
            check_stat(row[name], [r[0] for r in results])
            check_stat(row[f"{name}_drop"], [clean - r[0] for r in results])
            check_stat(row[f"{name}_pixel_accuracy"], [r[1] for r in results])
            moved += [abs(clean - r[0]) for r in results]
        ratio = drops["ranked"] / drops["random"] if drops["random"] > 0 else None
        assert row["drop_ratio"] == (None if ratio is None else pytest.approx(ratio, rel=1e-6))
    assert max(moved) > 1e-3  # zeroing channels moves the mIoU: an ablation that zeroed nothing is caught


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
                     "--ranking", str(path), "--out", str(out)]) == 0
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
    where = {"segmenter_ranking": attack, "masked_pgd": poschan.control.attack}  # the modules that call them

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


def check_row(row: dict, clean: tuple[float, float], after: list[tuple[float, float]]) -> None:
    assert (row["miou_in_clean"], row["miou_out_clean"]) == pytest.approx(clean, abs=TOL)
    drop_in, drop_out = [clean[0] - a[0] for a in after], [clean[1] - a[1] for a in after]
    check_stat(row["miou_in"], [a[0] for a in after])
    check_stat(row["miou_out"], [a[1] for a in after])
    check_stat(row["drop_in"], drop_in)
    check_stat(row["drop_out"], drop_out)
    mean_out = sum(drop_out) / len(drop_out)
    expected = sum(drop_in) / len(drop_in) / mean_out if mean_out >= 1e-3 else None
    assert row["selectivity"] == (None if expected is None else pytest.approx(expected, rel=1e-6))


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
    selectivities = []
    for row in m["attack"]:
        inside = hand_region(row["region"])
        if row["method"] == "pgd":
            (args, _, adv), = pgd_calls(attacked, row["region"])  # one seed, one batch
            assert torch.equal(args[1], ref.images[:PGD_SIZE]) and torch.equal(args[2], ref.masks[:PGD_SIZE])
            clean_pred = predict(ref.model, ref.feats[:PGD_SIZE], ref.size)
            with torch.no_grad():
                adv_pred = ref.model(adv).argmax(1)
            assert (adv_pred != clean_pred)[:, inside].any()
            check_row(row, in_out(clean_pred, args[2], inside), [in_out(adv_pred, args[2], inside)])
            continue
        if row["method"] == "random":
            check_draws(row["channels"], n, 5)
        else:
            assert row["channels"] == [expected_channels(attacked, row["region"], row["method"], n)]
        after = [in_out(predict(ref.model, ref.feats, ref.size, channels), ref.masks, inside)
                 for channels in row["channels"]]
        check_row(row, in_out(predict(ref.model, ref.feats, ref.size), ref.masks, inside), after)
        selectivities.append(row["selectivity"])
    assert any(s is not None for s in selectivities)  # the selectivity formula is exercised, not only its null


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
