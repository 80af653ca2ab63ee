"""Content hashes of image sets: per-image hashes, set fingerprints, and splits refused for sharing images."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poschan.data.fingerprint import check_disjoint, image_fingerprint, image_hashes, shared_images
from poschan.data.sources import ImageSet, load_dataset
from poschan.errors import UserError


def write_split(root: Path, seed: int, classes: tuple[str, ...] = ("a", "b"), per_class: int = 3) -> None:
    """``per_class`` random 12×12 RGB PNGs (distinct for each seed) under root/<class>/."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def folder_splits(root: Path) -> tuple[ImageSet, ImageSet]:
    return (load_dataset(f"folder:{root}", "train", image_size=8),
            load_dataset(f"folder:{root}", "test", image_size=8))


def test_hashes_follow_content_not_order():
    x = torch.rand(4, 3, 5, 5)
    y = x.clone()
    y[2, 1, 0, 0] += 1e-6
    assert image_hashes(x) == image_hashes(x.clone()) and image_hashes(x)[2] != image_hashes(y)[2]
    assert image_hashes(x)[:2] == image_hashes(y)[:2]
    assert image_fingerprint(x) == image_fingerprint(x.flip(0)) != image_fingerprint(y)
    assert image_fingerprint(x)["n"] == 4
    assert (shared_images(x, y), shared_images(x, x[:3]), shared_images(x, torch.rand(2, 3, 5, 5))) == (3, 3, 0)


def test_proper_folder_splits_pass(tmp_path):
    write_split(tmp_path / "train", seed=0)
    write_split(tmp_path / "test", seed=1)
    train, test = folder_splits(tmp_path)
    assert (len(train), len(test), train.split, test.split) == (6, 6, "train", "test")
    check_disjoint(train, test)


def test_copied_test_split_is_refused_with_the_count(tmp_path):
    write_split(tmp_path / "train", seed=0)
    shutil.copytree(tmp_path / "train", tmp_path / "test")
    with pytest.raises(UserError, match=r"^6 of the 6 images of split 'test' of folder:.* also appear in split "
                                        r"'train'"):
        check_disjoint(*folder_splits(tmp_path))


def test_one_shared_image_under_another_name_is_refused(tmp_path):
    write_split(tmp_path / "train", seed=0)
    write_split(tmp_path / "test", seed=1)
    shutil.copy(tmp_path / "train" / "a" / "1.png", tmp_path / "test" / "b" / "copy.png")
    with pytest.raises(UserError, match="^1 of the 7 images of split 'test'"):
        check_disjoint(*folder_splits(tmp_path))


def test_symlinked_test_split_is_refused(tmp_path):
    write_split(tmp_path / "train", seed=0)
    (tmp_path / "test").symlink_to(tmp_path / "train", target_is_directory=True)
    with pytest.raises(UserError, match="6 of the 6 images of split 'test'"):
        check_disjoint(*folder_splits(tmp_path))


def _named(images: torch.Tensor, name: str, split: str) -> ImageSet:
    return ImageSet(images, torch.zeros(len(images), dtype=torch.long), ("x",), (0.0,), (1.0,), name, split)


def test_official_splits_are_trusted_by_name_only():
    x = torch.rand(3, 1, 4, 4)
    check_disjoint(_named(x, "fashion-mnist", "train"), _named(x, "fashion-mnist", "test"))
    for a, b in [(("fashion-mnist", "train"), ("fashion-mnist", "train")), (("photos", "train"), ("photos", "test")),
                 (("fashion-mnist", "train"), ("cifar10", "test"))]:
        with pytest.raises(UserError, match="3 of the 3 images"):
            check_disjoint(_named(x, *a), _named(x, *b))
