"""Flip pair constructions of scenes: what each partner mirrors and what it keeps, against box-by-box references."""

import dataclasses

import pytest
import torch

from poschan.data.scene_pairs import PAIRS, scene_pairs
from poschan.data.scenes import ITEM_SIDE, MASK_THRESHOLD, SceneSpec, fixed_scenes, scene_items
from poschan.errors import UserError


@pytest.fixture(scope="module")
def items():
    return scene_items("rank", None, limit=400)


def _normalised(items, raw):
    return ((torch.tensor([raw]) - torch.tensor(items.mean)) / torch.tensor(items.std)).item()


def _mirrored_reference(items, spec, placements):
    """Scene by scene, item by item: each item's left-right mirror pasted in its own box (brighter pixel wins),
    mask labels of the mirrored item where it is above the threshold, later slots on top."""
    count, slots = placements.index.shape
    images = torch.full((count, spec.side, spec.side), _normalised(items, 0.0))
    masks = torch.zeros(count, spec.side, spec.side, dtype=torch.int64)
    for s in range(count):
        for k in range(slots):
            if placements.present[s, k]:
                i, y, x = (int(t[s, k]) for t in placements[:3])
                item, box = items.images[i, 0].flip(-1), (slice(y, y + ITEM_SIDE), slice(x, x + ITEM_SIDE))
                images[s][box] = torch.maximum(images[s][box], item)
                masks[s][box][item > _normalised(items, MASK_THRESHOLD)] = 1 + int(items.labels[i])
    return images[:, None], masks


def test_scenes_are_those_of_the_seed_and_canvas_is_their_mirror(items):
    spec = SceneSpec(side=64, max_items=3)
    pairs = scene_pairs(items, spec, 10, seed=3)
    x, m = fixed_scenes(items, spec, 10, seed=3)
    assert torch.equal(pairs.images, x) and torch.equal(pairs.masks, m)
    assert torch.equal(pairs.partners["canvas"], torch.flip(x, [-1]))
    assert torch.equal(pairs.partner_masks["canvas"], torch.flip(m, [-1]))
    assert tuple(pairs.partners) == PAIRS and (pairs.mean, pairs.std) == (tuple(items.mean), tuple(items.std))


def test_mirror_in_place_mirrors_every_item_inside_its_own_box(items):
    spec = SceneSpec(side=56, min_items=3, max_items=4)  # crowded: overlapping boxes
    pairs = scene_pairs(items, spec, 12, seed=1)
    ref_x, ref_m = _mirrored_reference(items, spec, pairs.placements)
    assert torch.equal(pairs.partners["mirror-in-place"], ref_x)
    assert torch.equal(pairs.partner_masks["mirror-in-place"], ref_m)
    assert not torch.equal(ref_x, pairs.images)


def test_one_item_keeps_its_box_and_its_mirrored_mask(items):
    spec = SceneSpec(side=64, min_items=1, max_items=1)
    pairs = scene_pairs(items, spec, 20, seed=2)
    x, m = pairs.images[:, 0], pairs.masks
    mx, mm = pairs.partners["mirror-in-place"][:, 0], pairs.partner_masks["mirror-in-place"]
    for s in range(20):
        y, left = int(pairs.placements.top[s, 0]), int(pairs.placements.left[s, 0])
        box = (slice(y, y + ITEM_SIDE), slice(left, left + ITEM_SIDE))
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[box] = True
        assert not (mm[s][~inside]).any() and torch.equal(mx[s][~inside], x[s][~inside])
        assert torch.equal(mm[s][box], m[s][box].flip(-1)) and torch.equal(mx[s][box], x[s][box].flip(-1))


def test_symmetric_items_are_unchanged_in_place(items):
    symmetric = dataclasses.replace(items, images=torch.maximum(items.images, items.images.flip(-1)))
    pairs = scene_pairs(symmetric, SceneSpec(side=64, max_items=3), 10, seed=5)
    assert torch.equal(pairs.partners["mirror-in-place"], pairs.images)
    assert torch.equal(pairs.partner_masks["mirror-in-place"], pairs.masks)
    assert torch.equal(pairs.partners["position-only"], pairs.partners["canvas"])
    assert not torch.equal(pairs.partners["canvas"], pairs.images)  # the positions are not symmetric


def test_position_only_is_the_canvas_flip_of_mirror_in_place(items):
    pairs = scene_pairs(items, SceneSpec(side=64, max_items=4), 10, seed=6)
    for got, of in ((pairs.partners, "mirror-in-place"), (pairs.partner_masks, "mirror-in-place")):
        assert torch.equal(got["position-only"], torch.flip(got[of], [-1]))


def test_position_only_moves_one_item_unmirrored_to_the_mirrored_box(items):
    side = 64
    pairs = scene_pairs(items, SceneSpec(side=side, min_items=1, max_items=1), 20, seed=7)
    x, m = pairs.images[:, 0], pairs.masks
    px, pm = pairs.partners["position-only"][:, 0], pairs.partner_masks["position-only"]
    background = _normalised(items, 0.0)
    for s in range(20):
        y, left = int(pairs.placements.top[s, 0]), int(pairs.placements.left[s, 0])
        mirrored_left = side - left - ITEM_SIDE
        expect_x, expect_m = torch.full((side, side), background), torch.zeros(side, side, dtype=torch.int64)
        expect_x[y:y + ITEM_SIDE, mirrored_left:mirrored_left + ITEM_SIDE] = x[s, y:y + ITEM_SIDE, left:left + ITEM_SIDE]
        expect_m[y:y + ITEM_SIDE, mirrored_left:mirrored_left + ITEM_SIDE] = m[s, y:y + ITEM_SIDE, left:left + ITEM_SIDE]
        assert torch.equal(px[s], expect_x) and torch.equal(pm[s], expect_m)
    assert len(set(pairs.placements.left[:, 0].tolist())) > 10  # boxes move


def test_only_the_asked_constructions_are_returned(items):
    pairs = scene_pairs(items, SceneSpec(side=64), 4, seed=0, pairs=("position-only", "canvas"))
    assert tuple(pairs.partners) == ("position-only", "canvas") == tuple(pairs.partner_masks)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pairs": ("canvas", "vertical")}, "unknown flip pair construction 'vertical'; allowed: canvas, mirror-in-place"),
    ({"pairs": ()}, "at least one flip pair construction"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"count": 0}, "scene count must be >= 1"),
])
def test_bad_input_is_a_user_error_naming_what_is_allowed(items, kwargs, message):
    args = {"count": 4, "seed": 0} | kwargs
    with pytest.raises(UserError, match=message):
        scene_pairs(items, SceneSpec(side=64), **args)
