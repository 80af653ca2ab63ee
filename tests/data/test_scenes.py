"""Segmentation scenes: exact composites and masks, placement rules, determinism, random flips, splits, validation."""

import dataclasses

import pytest
import torch
from tests.data.flips import flipped_samples, half_flipped

from poschan.data.scenes import (
    MASK_THRESHOLD,
    NUM_CLASSES,
    SceneSpec,
    SceneStream,
    class_names,
    compose,
    draw_placements,
    fixed_scenes,
    render_scenes,
    scene_items,
    seeded_generator,
)
from poschan.data.sources import load_dataset
from poschan.errors import UserError


@pytest.fixture(scope="module")
def items():
    return load_dataset("fashion-mnist", "test", limit=500)


def _raw(items, x):
    return x * items.std[0] + items.mean[0]


def _normalised(items, raw):
    """`raw` in normalised units, computed as sources.py normalises images (float32)."""
    return ((torch.tensor([raw]) - torch.tensor(items.mean)) / torch.tensor(items.std)).item()


def _background(items):
    return _normalised(items, 0.0)


def _only(items, keep):
    """The items whose class is in `keep`."""
    sel = torch.isin(items.labels, torch.tensor(sorted(keep)))
    return dataclasses.replace(items, images=items.images[sel], labels=items.labels[sel])


def _render(items, count, seed=0, **spec):
    return render_scenes(items, SceneSpec(**spec), count, seeded_generator(seed))


def _reference(items, spec, placements):
    """Scene by scene, item by item: raw max composite, then normalise; labels where raw > threshold (compared in
    normalised units, so the boundary value 51/255 = 0.2 is excluded exactly)."""
    count, slots = placements.index.shape
    raw = torch.zeros(count, spec.side, spec.side)
    masks = torch.zeros(count, spec.side, spec.side, dtype=torch.int64)
    for s in range(count):
        for k in range(slots):
            if not placements.present[s, k]:
                continue
            i, y, x = (int(t[s, k]) for t in placements[:3])
            item = _raw(items, items.images[i, 0])
            box = (slice(y, y + 28), slice(x, x + 28))
            raw[s][box] = torch.maximum(raw[s][box], item)
            masks[s][box][items.images[i, 0] > _normalised(items, MASK_THRESHOLD)] = 1 + int(items.labels[i])
    return (raw - items.mean[0]) / items.std[0], masks


def test_shapes_dtypes_labels_and_background(items):
    x, m = _render(items, 64, side=80, max_items=3)
    assert x.shape == (64, 1, 80, 80) and x.dtype == torch.float32
    assert m.shape == (64, 80, 80) and m.dtype == torch.int64
    assert m.min() == 0 and m.max() < NUM_CLASSES and len(m.unique()) > 5
    raw = _raw(items, x[:, 0])
    assert (raw[m > 0] > MASK_THRESHOLD).all()
    assert (raw[m == 0] <= MASK_THRESHOLD + 1e-6).all()
    assert (x[:, 0] == _background(items)).float().mean() > 0.5  # most of the canvas is exact raw 0
    assert class_names(items) == ("background", *items.classes) and len(class_names(items)) == NUM_CLASSES


def test_threshold_keeps_pixels_above_raw_51_of_255(items):
    x, m = _render(items, 64, side=64, min_items=1, max_items=1)
    byte = (_raw(items, x[:, 0]) * 255).round()
    assert (byte == 51).sum() > 10  # the boundary value occurs ...
    assert torch.equal(m > 0, byte > 51)  # ... and is left out; one item per scene, so all item pixels count


def test_single_item_scene_is_the_item_and_its_thresholded_mask():
    one = load_dataset("fashion-mnist", "test", limit=1)  # item 0: an ankle boot (class 9)
    x, m = _render(one, 20, seed=3, side=64, min_items=1, max_items=1)
    item, bg = one.images[0, 0], _background(one)
    crops = x[:, 0].unfold(1, 28, 1).unfold(2, 28, 1)  # (20, 37, 37, 28, 28)
    hits = (crops == item).flatten(-2).all(-1).flatten(1).nonzero()
    assert hits[:, 0].tolist() == list(range(20))  # exactly one exact copy per scene
    for s, at in hits.tolist():
        y, x0 = divmod(at, 37)
        expect_x = torch.full((64, 64), bg)
        expect_x[y:y + 28, x0:x0 + 28] = item
        expect_m = torch.zeros(64, 64, dtype=torch.int64)
        expect_m[y:y + 28, x0:x0 + 28] = (item > _normalised(one, MASK_THRESHOLD)).long() * 10
        assert torch.equal(x[s, 0], expect_x) and torch.equal(m[s], expect_m)
    assert len({tuple(h) for h in hits[:, 1:].tolist()}) > 15  # positions vary


def test_composite_matches_a_scene_by_scene_reference(items):
    spec = SceneSpec(side=56, min_items=3, max_items=4)  # crowded: many overlaps
    placements = draw_placements(items, spec, 12, seeded_generator(1))
    x, m = compose(items, spec, placements)
    ref_x, ref_m = _reference(items, spec, placements)
    assert torch.allclose(x[:, 0], ref_x, atol=1e-5) and torch.equal(m, ref_m)


def test_item_count_between_min_and_max(items):
    for lo, hi in [(1, 4), (2, 3), (2, 2)]:
        p = draw_placements(items, SceneSpec(min_items=lo, max_items=hi), 400, seeded_generator(0))
        n = p.present.sum(1)
        assert p.present.shape == (400, hi) and set(n.tolist()) == set(range(lo, hi + 1))
        assert torch.equal(p.present, torch.arange(hi) < n[:, None])  # the first n slots hold items
        assert p.index.min() >= 0 and p.index.max() < len(items)


def test_boxes_lie_inside_the_canvas_and_reach_its_edges(items):
    p = draw_placements(items, SceneSpec(side=40), 2000, seeded_generator(2))
    for t in (p.top, p.left):
        assert t.min() == 0 and t.max() == 40 - 28


def test_same_seed_same_scenes_other_seed_differs(items):
    a = fixed_scenes(items, SceneSpec(), 8, seed=4)
    b = fixed_scenes(items, SceneSpec(), 8, seed=4)
    c = fixed_scenes(items, SceneSpec(), 8, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_stream_batches_are_a_pure_function_of_seed_epoch_batch(items):
    stream = SceneStream(items, SceneSpec(side=64), scenes_per_epoch=50, batch_size=16, seed=7)
    first, again = list(stream.epoch(0)), list(stream.epoch(0))
    assert len(stream) == 4 and [len(x) for x, _ in first] == [16, 16, 16, 2]
    assert first[0][0].shape == (16, 1, 64, 64) and first[0][1].shape == (16, 64, 64)
    assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(first, again))
    resumed = list(stream.epoch(0, start_batch=2))
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(first[2:], resumed)) and len(resumed) == 2
    later = next(iter(stream.epoch(1)))[1]
    other = next(iter(SceneStream(items, SceneSpec(side=64), 50, 16, seed=8).epoch(0)))[1]
    assert not torch.equal(first[0][1], later) and not torch.equal(first[0][1], other)
    assert not torch.equal(first[0][1], first[1][1])


def test_stream_without_hflip_renders_the_scenes_of_seed_epoch_batch(items):
    spec = SceneSpec(side=48)
    for hflip in ({}, {"hflip": False}):
        batches = list(SceneStream(items, spec, 40, 16, seed=3, **hflip).epoch(2))
        assert len(batches) == 3
        for b, (x, m) in enumerate(batches):
            rx, rm = render_scenes(items, spec, len(x), seeded_generator(3, 2, b))
            assert torch.equal(x, rx) and torch.equal(m, rm)


def test_hflip_mirrors_about_half_the_scenes_image_and_mask_together(items):
    plain = SceneStream(items, SceneSpec(side=40, max_items=2), 400, 16, seed=5)
    flips = [flipped_samples(p, f) for p, f in zip(plain.epoch(1), dataclasses.replace(plain, hflip=True).epoch(1),
                                                   strict=True)]
    assert all(0 < int(f.sum()) < len(f) for f in flips)  # a coin per scene, not per batch
    assert half_flipped(int(torch.cat(flips).sum()), 400)


def test_hflip_batches_are_a_pure_function_of_seed_epoch_batch(items):
    stream = SceneStream(items, SceneSpec(side=40), 50, 16, seed=7, hflip=True)
    full = list(stream.epoch(3))
    resumed = list(dataclasses.replace(stream).epoch(3, start_batch=2))
    assert len(resumed) == 2
    assert all(torch.equal(x, y) and torch.equal(m, n) for (x, m), (y, n) in zip(full[2:], resumed))


@pytest.mark.parametrize("region, rows, cols", [
    ("left", (0, 96), (0, 48)), ("q2", (0, 48), (48, 96)), ("cell:4", (32, 64), (32, 64)),
    ("center", (24, 72), (24, 72)),
])
def test_region_restricts_every_item(items, region, rows, cols, side=96):
    x, m = _render(items, 40, region=region, layout_prior=1.0)
    inside = torch.zeros(side, side, dtype=torch.bool)
    inside[slice(*rows), slice(*cols)] = True
    assert (m[:, ~inside] == 0).all() and (x[:, 0, ~inside] == _background(items)).all()
    assert (m[:, inside] > 0).any()


def test_region_boxes_cover_every_offset(items):
    p = draw_placements(items, SceneSpec(region="cell:4", side=96), 3000, seeded_generator(0))
    assert (p.top.min(), p.top.max(), p.left.min(), p.left.max()) == (32, 36, 32, 36)


def _half_of_labels(masks, axis):
    """Per scene: 0 if all labelled pixels lie in the first half along axis (2 = columns), 1 if all in the second."""
    side = masks.shape[-1]
    coords = torch.arange(side).view((1, side, 1) if axis == 1 else (1, 1, side)).expand_as(masks)
    first = ((masks > 0) & (coords < side // 2)).flatten(1).any(1)
    second = ((masks > 0) & (coords >= side // 2)).flatten(1).any(1)
    return torch.where(first & ~second, 0, torch.where(second & ~first, 1, -1))


@pytest.mark.parametrize("layout, axis", [("left-right", 2), ("top-bottom", 1)])
def test_full_prior_puts_halves_grouping_in_home_halves(items, layout, axis):
    _, m = _render(items, 100, max_items=4, layout_prior=1.0, grouping="halves", layout=layout)
    for group, half in ((range(1, 6), 0), (range(6, 11), 1)):
        masks = torch.where(torch.isin(m, torch.tensor(list(group))), m, 0)
        has = (masks > 0).flatten(1).any(1)
        assert has.sum() > 50 and (_half_of_labels(masks[has], axis) == half).all()


def test_confusable_grouping_parts_tshirt_and_shirt(items):
    spec = SceneSpec(layout_prior=1.0)
    assert [spec.home_region(c) for c in range(10)] == ["left", "right", "left", "left", "right",
                                                        "left", "right", "right", "right", "left"]
    for fm_class, half in ((0, 0), (6, 1)):
        _, m = _render(_only(items, {fm_class}), 40, layout_prior=1.0)
        assert (_half_of_labels(m, 2) == half).all()


def test_zero_prior_places_items_anywhere(items):
    _, m = _render(_only(items, {0, 1, 2, 3, 4}), 400, max_items=1, grouping="halves")
    half = _half_of_labels(m, 2)
    left, right = (half == 0).float().mean(), (half == 1).float().mean()
    assert abs(left - right) < 0.1 and left > 0.2  # symmetric; 21/69 of boxes lie fully in each half


def test_partial_prior_sets_the_home_fraction(items):
    p = draw_placements(items, SceneSpec(layout_prior=0.5, grouping="halves"), 2000, seeded_generator(3))
    home_left = items.labels[p.index] < 5
    at_home = torch.where(home_left, p.left + 28 <= 48, p.left >= 48)
    assert abs(at_home.float().mean() - (0.5 + 0.5 * 21 / 69)) < 0.03


def test_scene_splits_are_disjoint_index_ranges(items, monkeypatch):
    """With a stand-in loader whose images are their own (split, index): exact ranges, limits and split names."""
    def fake_load(name, split, root=None, *, limit=None):
        n = min(limit or 60000, {"train": 60000, "test": 10000}[split])
        ids = torch.arange(n, dtype=torch.float32) + (0 if split == "train" else 1e6)
        return dataclasses.replace(items, images=ids.view(-1, 1, 1, 1), labels=torch.zeros(n, dtype=torch.int64),
                                   name=name, split=split)

    monkeypatch.setattr("poschan.data.scenes.load_dataset", fake_load)
    ids = {split: scene_items(split).images.flatten() for split in ("train", "rank", "test")}
    assert torch.equal(ids["train"], torch.arange(50000.0)) and torch.equal(ids["rank"], torch.arange(50000.0, 60000))
    assert torch.equal(ids["test"], torch.arange(10000.0) + 1e6)
    assert torch.equal(scene_items("rank", limit=3).images.flatten(), torch.tensor([50000.0, 50001, 50002]))
    assert len(scene_items("train", limit=70000)) == 50000 and scene_items("rank").split == "rank"


def test_rank_split_holds_fashion_mnist_train_from_50000():
    train = load_dataset("fashion-mnist", "train")
    rank = scene_items("rank", limit=4)
    assert (len(train), len(rank), rank.split, rank.classes) == (60000, 4, "rank", train.classes)
    assert torch.equal(rank.images, train.images[50000:50004]) and torch.equal(rank.labels, train.labels[50000:50004])
    assert len(scene_items("test")) == 10000


@pytest.mark.parametrize("spec, message", [
    (SceneSpec(side=20), "side must be >= 28"),
    (SceneSpec(min_items=0), "min_items"),
    (SceneSpec(min_items=3, max_items=2), "min_items"),
    (SceneSpec(layout_prior=1.5), "layout_prior"),
    (SceneSpec(layout="diagonal"), "unknown layout"),
    (SceneSpec(grouping="random"), "unknown grouping"),
    (SceneSpec(region="middle"), "unknown region"),
    (SceneSpec(region="cell:9", grid=3), "cell:0..cell:8"),
    (SceneSpec(side=48, region="q1"), "side >= 56"),
    (SceneSpec(side=83, region="cell:1"), "side >= 84"),
    (SceneSpec(side=50, layout_prior=0.3), "home region 'left'"),
])
def test_bad_specs_raise(items, spec, message):
    with pytest.raises(UserError, match=message):
        spec.validate()
    with pytest.raises(UserError):
        render_scenes(items, spec, 1, seeded_generator(0))


def test_bad_inputs_raise(items):
    SceneSpec(side=50, region="cell:0", grid=1, layout_prior=0.3).validate()  # the region overrides the homes
    with pytest.raises(UserError, match="allowed: train, rank, test"):
        scene_items("val")
    with pytest.raises(UserError, match="class"):
        SceneSpec().home_region(10)
    with pytest.raises(UserError, match="batch_size"):
        SceneStream(items, SceneSpec(), 10, 0, seed=0)
    with pytest.raises(UserError, match="scenes_per_epoch"):
        SceneStream(items, SceneSpec(), 0, 4, seed=0)
    with pytest.raises(UserError, match="epoch"):
        SceneStream(items, SceneSpec(), 10, 4, seed=0).epoch(-1)
    with pytest.raises(UserError, match="1×28×28"):
        render_scenes(items.with_channels(3), SceneSpec(), 1, seeded_generator(0))
