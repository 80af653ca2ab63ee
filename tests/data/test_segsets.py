"""Segmentation datasets on disk: tiny fake VOC / Cityscapes trees in torchvision's layout."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poschan.data.segsets import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, load_segset, parse_segset
from poschan.errors import UserError

RED, BLUE = (255, 0, 0), (0, 0, 255)
# cityscapesscripts' labels table: label id -> train id of the 19 evaluated classes, in train-id order.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                    "bicycle")


def _uniform(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def _voc_dirs(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


def _voc(root: Path, split: str, samples: list[tuple[str, np.ndarray, np.ndarray]], mask_mode: str = "P") -> str:
    """Write `samples` (name, rgb (h, w, 3), class ids (h, w)) as the VOC 2012 `split`; return the spec."""
    base = _voc_dirs(root)
    (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n, _, _ in samples))
    for name, rgb, ids in samples:
        Image.fromarray(rgb).save(base / "JPEGImages" / f"{name}.jpg", quality=100, subsampling=0)
        mask = Image.fromarray(ids.astype(np.uint8))
        if mask_mode == "P":  # a palette whose colours differ from the indices, as in the real files
            mask.putpalette([(i * k) % 256 for i in range(256) for k in (37, 91, 53)])
        mask.save(base / "SegmentationClass" / f"{name}.png")
    return f"voc:{root}"


def _city(root: Path, split: str, city: str, name: str, rgb: np.ndarray, ids: np.ndarray) -> str:
    """Write one Cityscapes image with its gtFine label ids; return the spec."""
    stem = f"{city}_{name}"
    for folder, suffix, array in (("leftImg8bit", "leftImg8bit", rgb), ("gtFine", "gtFine_labelIds", ids)):
        (root / folder / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array.astype(np.uint8)).save(root / folder / split / city / f"{stem}_{suffix}.png")
    return f"cityscapes:{root}"


def _normalised(rgb: tuple[int, int, int]) -> torch.Tensor:
    return (torch.tensor(rgb) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)


def _left_third(h: int, w: int, inside: int, outside: int) -> tuple[np.ndarray, np.ndarray]:
    """An (h, w) image red / ids `inside` in the left third of the columns, blue / `outside` elsewhere."""
    rgb, ids = _uniform(h, w, BLUE), np.full((h, w), outside)
    rgb[:, : w // 3], ids[:, : w // 3] = RED, inside
    return rgb, ids


@pytest.mark.parametrize(("spec", "expected"), [
    ("voc:/data/voc", ("voc", "/data/voc")),
    ("cityscapes:rel/city", ("cityscapes", "rel/city")),
    ("voc:C:/data", ("voc", "C:/data")),  # only the first colon separates
])
def test_parse_segset(spec, expected):
    assert parse_segset(spec) == expected


@pytest.mark.parametrize("spec", ["", "voc", "voc:", "VOC:/x", "coco:/x", ":/x", "cityscapes/x"])
def test_parse_segset_rejects_other_forms(spec):
    with pytest.raises(UserError, match="allowed: voc:PATH, cityscapes:PATH"):
        parse_segset(spec)


def test_voc_shapes_dtypes_and_metadata(tmp_path):
    sizes = [(30, 50), (50, 30), (37, 53)]
    samples = [(f"2007_00000{i}", _uniform(h, w, RED), np.full((h, w), i + 1)) for i, (h, w) in enumerate(sizes)]
    data = load_segset(_voc(tmp_path, "train", samples), "train", side=16)
    assert len(data) == 3 and data.images.shape == (3, 3, 16, 16) and data.masks.shape == (3, 16, 16)
    assert data.images.dtype == torch.float32 and data.masks.dtype == torch.int64
    assert data.masks.flatten(1).tolist() == [[1] * 256, [2] * 256, [3] * 256]
    assert len(data.classes) == 21 and data.classes[0] == "background" and data.classes[15] == "person"
    assert (data.mean, data.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert (data.name, data.split) == ("voc", "train")
    # near-lossless JPEG of a flat colour: normalised red within 2 grey levels
    assert torch.allclose(data.images, _normalised(RED).view(1, 3, 1, 1).expand_as(data.images), atol=2 / 255 / 0.224)


@pytest.mark.parametrize("mask_mode", ["P", "L"])
def test_voc_void_border_stays_ignore(tmp_path, mask_mode):
    ids = np.full((24, 24), 255)
    ids[2:22, 2:12], ids[2:22, 12:22] = 15, 0  # person | background inside a 2 px void border
    data = load_segset(_voc(tmp_path, "val", [("a", _uniform(24, 24, BLUE), ids)], mask_mode), "val", side=12)
    # halving with nearest neighbour samples source pixel 2j + 1: a 1 px border, person in 1..5, background in 6..10
    expected = torch.full((12, 12), IGNORE_INDEX)
    expected[1:11, 1:6], expected[1:11, 6:11] = 15, 0
    assert torch.equal(data.masks[0], expected)


def test_mask_takes_the_label_at_each_output_pixel_centre(tmp_path):
    ids = np.tile(np.arange(3), (36, 12))  # column c holds class c % 3
    data = load_segset(_voc(tmp_path, "train", [("a", _uniform(36, 36, RED), ids)]), "train", side=12)
    assert torch.equal(data.masks[0], torch.ones(12, 12, dtype=torch.int64))  # output pixel j covers columns 3j..3j+2


@pytest.mark.parametrize("portrait", [False, True])
@pytest.mark.parametrize("dataset", ["voc", "cityscapes"])
def test_resize_shorter_side_and_centre_crop(tmp_path, dataset, portrait):
    # 40×60 -> 20×30 -> centre columns 5..24: the left third (source columns 0..19, resized 0..9) lands in 0..4
    inside, outside, expected_inside = (1, 0, 1) if dataset == "voc" else (26, 7, 13)
    rgb, ids = _left_third(40, 60, inside, outside)
    if portrait:
        rgb, ids = rgb.transpose(1, 0, 2).copy(), ids.T.copy()
    spec = (_voc(tmp_path, "train", [("a", rgb, ids)]) if dataset == "voc" else
            _city(tmp_path, "train", "aachen", "000000_000019", rgb, ids))
    data = load_segset(spec, "train", side=20)
    image, mask = data.images[0], data.masks[0]
    if portrait:
        image, mask = image.transpose(1, 2), mask.T
    expected = torch.zeros(20, 20, dtype=torch.int64)
    expected[:, :5] = expected_inside
    assert torch.equal(mask, expected)
    # pixels whose antialiasing footprint stays on one side keep that colour (exactly, for lossless PNG)
    atol = 1e-5 if dataset == "cityscapes" else 3 / 255 / 0.224
    red, blue = _normalised(RED).view(3, 1, 1), _normalised(BLUE).view(3, 1, 1)
    assert torch.allclose(image[:, :, :4], red.expand(3, 20, 4), atol=atol)
    assert torch.allclose(image[:, :, 6:], blue.expand(3, 20, 14), atol=atol)


def test_downscaling_is_antialiased(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, ::4] = 255  # one white column in four: mean raw intensity 1/4
    data = load_segset(_city(tmp_path, "train", "ulm", "000000_000019", rgb, np.zeros((32, 32))), "train", side=8)
    raw = data.images[0] * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    # away from the clipped border columns each output pixel averages whole periods; plain bilinear sees only black
    assert torch.allclose(raw[:, :, 1:7], torch.full((3, 8, 6), 0.25), atol=1e-5)


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    ids = np.arange(36).reshape(6, 6)  # every label id 0..33 and two beyond
    data = load_segset(_city(tmp_path, "val", "frankfurt", "000000_000294", _uniform(6, 6, RED), ids), "val", side=6)
    expected = torch.tensor([CITYSCAPES_TRAIN_IDS.get(i, IGNORE_INDEX) for i in range(36)]).view(6, 6)
    assert torch.equal(data.masks[0], expected)
    assert data.masks[0, 1, 1] == 0 and data.masks[0, 4, 2] == 13 and data.masks[0, 0, 0] == IGNORE_INDEX
    assert data.classes == CITYSCAPES_NAMES and (data.name, data.split) == ("cityscapes", "val")


def test_voc_limit_keeps_split_file_order(tmp_path):
    samples = [(name, _uniform(8, 8, BLUE), np.full((8, 8), cls)) for name, cls in (("b", 2), ("a", 1), ("c", 3))]
    spec = _voc(tmp_path, "train", samples)
    assert load_segset(spec, "train", 8, limit=2).masks[:, 0, 0].tolist() == [2, 1]
    assert len(load_segset(spec, "train", 8, limit=10)) == 3


def test_cityscapes_order_is_sorted_by_path(tmp_path):
    for city, name, label in (("bremen", "000000_000019", 26), ("aachen", "000001_000019", 8),
                              ("aachen", "000000_000019", 7)):
        spec = _city(tmp_path, "train", city, name, _uniform(8, 8, RED), np.full((8, 8), label))
    assert load_segset(spec, "train", 8).masks[:, 0, 0].tolist() == [0, 1, 13]
    assert load_segset(spec, "train", 8, limit=1).masks[:, 0, 0].tolist() == [0]


@pytest.mark.parametrize(("dataset", "layout"), [("voc", "VOCdevkit/VOC2012"), ("cityscapes", "leftImg8bit/train")])
def test_missing_directory_names_path_and_layout(tmp_path, dataset, layout):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope'}.*{layout}"):
        load_segset(f"{dataset}:{tmp_path / 'nope'}", "train", 8)


def test_voc_missing_split_file_names_it(tmp_path):
    _voc(tmp_path, "train", [("a", _uniform(8, 8, RED), np.zeros((8, 8)))])
    with pytest.raises(UserError, match="ImageSets/Segmentation/val.txt"):
        load_segset(f"voc:{tmp_path}", "val", 8)


def test_cityscapes_missing_labels_names_layout(tmp_path):
    spec = _city(tmp_path, "train", "ulm", "000000_000019", _uniform(8, 8, RED), np.zeros((8, 8)))
    (tmp_path / "gtFine" / "train" / "ulm" / "ulm_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(UserError, match="ulm_000000_000019_gtFine_labelIds.png"):
        load_segset(spec, "train", 8)


@pytest.mark.parametrize("split", ["test", "trainval", "Train"])
def test_unknown_split(tmp_path, split):
    spec = _voc(tmp_path, "train", [("a", _uniform(8, 8, RED), np.zeros((8, 8)))])
    with pytest.raises(UserError, match="allowed: train, val"):
        load_segset(spec, split, 8)


def test_empty_split(tmp_path):
    voc = _voc(tmp_path / "voc", "val", [])
    city = _city(tmp_path / "city", "train", "ulm", "000000_000019", _uniform(8, 8, RED), np.zeros((8, 8)))
    for folder in ("leftImg8bit", "gtFine"):
        (tmp_path / "city" / folder / "val").mkdir()
    for spec in (voc, city):
        with pytest.raises(UserError, match="holds no images"):
            load_segset(spec, "val", 8)


def test_missing_image_names_file(tmp_path):
    spec = _voc(tmp_path, "train", [("a", _uniform(8, 8, RED), np.zeros((8, 8)))])
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(UserError, match="JPEGImages/a.jpg"):
        load_segset(spec, "train", 8)


def test_bad_masks(tmp_path):
    spec = _voc(tmp_path, "train", [("a", _uniform(8, 8, RED), np.full((8, 8), 30))])
    with pytest.raises(UserError, match=r"values \[30\]; allowed: class ids 0..20 and 255"):
        load_segset(spec, "train", 8)
    Image.fromarray(_uniform(8, 8, BLUE)).save(tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "a.png")
    with pytest.raises(UserError, match="PIL mode RGB"):
        load_segset(spec, "train", 8)
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "a.png")
    with pytest.raises(UserError, match="8×8 px but its mask .* is 9×8"):
        load_segset(spec, "train", 8)


@pytest.mark.parametrize(("side", "limit", "message"), [(0, None, "side must be >= 1"), (8, 0, "limit must be >= 1")])
def test_bad_side_or_limit(tmp_path, side, limit, message):
    spec = _voc(tmp_path, "train", [("a", _uniform(8, 8, RED), np.zeros((8, 8)))])
    with pytest.raises(UserError, match=message):
        load_segset(spec, "train", side, limit)
