"""What seg-train, ablate and attack share: scene and model settings, checkpoints, evaluation, rankings on scenes."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..data.scenes import SceneSpec, fixed_scenes, scene_items
from ..data.sources import ImageSet
from ..engine import load_checkpoint
from ..errors import UserError
from ..models.segmentation import SegNet, build_segmenter, fingerprint, load_segmenter_state, spec_from_dict
from ..ranking import RankSpec, accumulate, ranking_order
from ..segmetrics import ConfusionMeter

TEST_SEED = 20_211  # the evaluation scenes: fixed, the same for every command and seed
RANK_SEED_OFFSET = 7_000  # rank scenes of ranking seed s are drawn with seed RANK_SEED_OFFSET + s


def add_scene_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--side", type=int, help="scene side in pixels")
    p.add_argument("--min-items", dest="min_items", type=int, help="fewest items per scene")
    p.add_argument("--max-items", dest="max_items", type=int, help="most items per scene")
    p.add_argument("--layout-prior", dest="layout_prior", type=float,
                   help="probability in [0, 1] that an item lies in its class's home region")
    p.add_argument("--layout", help="left-right or top-bottom (where the home regions lie)")
    p.add_argument("--grouping", help="halves (classes 0-4 | 5-9) or confusable (look-alike classes apart)")


def scene_spec(c: object) -> SceneSpec:
    """The SceneSpec named by a config's scene fields (side, min_items, max_items, layout_prior, layout, grouping)."""
    spec = SceneSpec(side=c.side, min_items=c.min_items, max_items=c.max_items, layout_prior=c.layout_prior,
                     layout=c.layout, grouping=c.grouping)
    spec.validate()
    return spec


@dataclass
class LoadedModel:
    model: SegNet
    scenes: SceneSpec  # the scenes the model was trained on
    fingerprint: str
    path: str


def load_seg_checkpoint(path: str, device: torch.device) -> LoadedModel:
    """A checkpoint written by `poschan seg-train` (pickled code and other files refused), in eval mode."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint {path!r} not found")
    state = load_checkpoint(Path(path))
    meta = state.get("meta")
    if not isinstance(meta, dict) or "segmentation" not in meta or "scenes" not in meta:
        raise UserError(f"{path} is not a poschan segmentation checkpoint (written by `poschan seg-train`)")
    model = build_segmenter(spec_from_dict(meta["segmentation"], path))
    load_segmenter_state(model, state["model"], path)
    try:
        scenes = SceneSpec(**meta["scenes"])
    except TypeError as err:
        raise UserError(f"{path}: unreadable scene settings ({err})") from None
    model.eval().requires_grad_(False).to(device)
    return LoadedModel(model, scenes, fingerprint(model), path)


def test_scenes(spec: SceneSpec, count: int, data_root: str | None) -> tuple[Tensor, Tensor, ImageSet]:
    """The fixed evaluation scenes (test split items) and the items they come from."""
    items = scene_items("test", data_root)
    images, masks = fixed_scenes(items, spec, count, TEST_SEED)
    return images, masks, items


@torch.no_grad()
def scene_features(model: SegNet, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """The backbone feature maps of ``images`` (computed once, reused by every mask)."""
    return torch.cat([model.features(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def evaluate_features(model: SegNet, feats: Tensor, masks: Tensor, batch_size: int, device: torch.device, edit=None,
           regions: dict[str, Tensor] | None = None) -> ConfusionMeter:
    """Confusions ("all" and one per pixel region) of the head's predictions from cached features, ``edit``
    (e.g. a channel mask) applied to each batch of features first."""
    meter = ConfusionMeter(model.num_classes, regions)
    for i in range(0, len(feats), batch_size):
        f = feats[i:i + batch_size].to(device)
        logits = model.decode(edit(f) if edit is not None else f, masks.shape[-2:])
        meter.update(logits.argmax(1).cpu(), masks[i:i + batch_size])
    return meter


def scores(meter: ConfusionMeter, name: str = "all") -> dict[str, float]:
    return {"miou": meter.miou(name), "pixel_accuracy": meter.pixel_accuracy(name)}


def flip_ranking(model: SegNet, scenes: SceneSpec, *, region: str | None, count: int, seed: int, batch_size: int,
                 device: torch.device, data_root: str | None) -> dict[str, Tensor]:
    """Flip scores (poschan.ranking, image input) of ``model.feature_layer`` on ``count`` rank-split scenes.

    ``region`` None: scenes as trained (keys overall, left, right, top, bottom); "left": every item in the left
    half, so ``left`` / ``right`` rank the channels that fire for content on that side; "top" likewise.
    """
    spec = dataclasses.replace(scenes, region=region)
    spec.validate()
    items = scene_items("rank", data_root)
    images, _ = fixed_scenes(items, spec, count, RANK_SEED_OFFSET + seed)
    scene_set = ImageSet(images, torch.zeros(len(images), dtype=torch.long), ("scene",), items.mean, items.std,
                         "scenes", "rank")
    tally = accumulate(model, model.feature_layer, scene_set, RankSpec("flip", flip_input="image"), seed=seed,
                       batch_size=batch_size, device=device, progress=False)
    return tally.real.scores()


def shift_ranking(model: SegNet, scenes: SceneSpec, *, grid: int, count: int, seed: int, batch_size: int,
                  device: torch.device, data_root: str | None) -> dict[str, Tensor]:
    """Shift scores (per cell and region) of single rank-split items pasted in every cell of a grid×grid
    layout of the scene canvas (black background, as the scenes)."""
    items = scene_items("rank", data_root, limit=count)
    spec = RankSpec("shift", grid=grid, canvas=scenes.side, background="black")
    tally = accumulate(model, model.feature_layer, items, spec, seed=seed, batch_size=batch_size, device=device,
                       progress=False)
    return tally.real.scores()


def ranking_record(loaded: LoadedModel, method: str, split: str, seeds: list[int], n_images: int,
                   keys: dict[str, Tensor], channels: int) -> dict:
    """A ranking.json for a segmentation model (orders merged over seeds by summed scores)."""
    return {"model": loaded.model.spec.model, "fingerprint": loaded.fingerprint, "layer": loaded.model.feature_layer,
            "channels": channels, "method": method, "data": "scenes", "split": split, "n_images": n_images,
            "seeds": seeds, "keys": {k: {"order": ranking_order(s).tolist(), "scores": s.tolist()}
                                     for k, s in keys.items()}}


def read_ranking(path: str, loaded: LoadedModel, channels: int, eval_split: str = "test") -> dict:
    """A ranking.json that belongs to this model and was not computed on the evaluation split (else UserError)."""
    try:
        ranking = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read ranking {path!r}: {err}") from None
    if not isinstance(ranking, dict) or "keys" not in ranking:
        raise UserError(f"{path} is not a poschan ranking.json")
    if ranking.get("channels") != channels or ranking.get("layer") != loaded.model.feature_layer:
        raise UserError(f"ranking {path} is for {ranking.get('channels')} channels of layer {ranking.get('layer')!r}; "
                        f"this model's {loaded.model.feature_layer!r} has {channels}")
    if ranking.get("fingerprint") != loaded.fingerprint:
        raise UserError(f"ranking {path} was computed for another model (weights {ranking.get('fingerprint')}, "
                        f"this checkpoint {loaded.fingerprint}); rank this checkpoint")
    if ranking.get("split") == eval_split:
        raise UserError(f"ranking {path} was computed on the evaluation split {eval_split!r}; rank on another split")
    return ranking


def parse_counts(values: list[str], channels: int) -> list[int]:
    """``["5%", "10", ...]`` -> channel counts (percent of ``channels``, rounded, at least 1)."""
    counts = []
    for v in values:
        text = str(v).strip()
        try:
            n = max(1, round(float(text[:-1]) / 100 * channels)) if text.endswith("%") else int(text)
        except ValueError:
            raise UserError(f"--n takes channel counts or percentages like 5%,10%,25%, got {text!r}") from None
        if not 1 <= n <= channels:
            raise UserError(f"N = {text} is outside 1..{channels} (the channel count of the feature layer)")
        counts.append(n)
    return counts
