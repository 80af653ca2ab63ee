"""Real datasets: Fashion-MNIST from the Debian package, IDX validation, photos, image folders."""

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poschan.data.sources import (
    FASHION_MNIST_DEBIAN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PHOTOS,
    find_fashion_mnist,
    load_dataset,
    match_channels,
)
from poschan.errors import UserError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def fmnist_test():
    return load_dataset("fashion-mnist", "test")


def _mirror(tmp: Path, replace: dict[str, bytes] | None = None) -> Path:
    """The Debian folder as symlinks in `tmp`, except files named in `replace` (written with its bytes)."""
    replace = replace or {}
    for stem in FILES:
        written = [name for name in (stem, f"{stem}.gz") if name in replace]
        for name in written:
            (tmp / name).write_bytes(replace[name])
        if not written:
            (tmp / f"{stem}.gz").symlink_to(FASHION_MNIST_DEBIAN / f"{stem}.gz")
    return tmp


def _raw(stem: str) -> bytes:
    return gzip.decompress((FASHION_MNIST_DEBIAN / f"{stem}.gz").read_bytes())


def test_train_split_shapes_labels_and_normalisation():
    data = load_dataset("fashion-mnist", "train")
    assert data.images.shape == (60000, 1, 28, 28) and data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64
    assert torch.bincount(data.labels).tolist() == [6000] * 10  # the train set is balanced
    assert abs(data.images.mean().item()) < 0.01 and abs(data.images.std().item() - 1) < 0.01
    assert len(data.classes) == 10 and data.classes[0] == "T-shirt/top" and data.channels == 1


def test_test_split(fmnist_test):
    assert fmnist_test.images.shape == (10000, 1, 28, 28) and len(fmnist_test) == 10000
    assert torch.bincount(fmnist_test.labels).tolist() == [1000] * 10
    assert fmnist_test.split == "test" and fmnist_test.mean == (0.2860,) and fmnist_test.std == (0.3530,)
    # pixel 0 maps to -mean/std: the darkest value present
    assert fmnist_test.images.min().item() == pytest.approx(-0.2860 / 0.3530, abs=1e-6)


def test_unknown_split_and_dataset():
    with pytest.raises(UserError, match="split"):
        load_dataset("fashion-mnist", "val")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("mnist")


def test_finds_debian_package_by_default():
    assert find_fashion_mnist(None) == FASHION_MNIST_DEBIAN


def test_torchvision_layout_and_uncompressed_files(tmp_path, fmnist_test):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    _mirror(raw, {stem: _raw(stem) for stem in FILES[2:]})  # test files uncompressed
    assert find_fashion_mnist(str(tmp_path)) == raw
    data = load_dataset("fashion-mnist", "test", str(tmp_path), limit=5)
    assert torch.equal(data.images, fmnist_test.images[:5])
    assert torch.equal(data.labels, fmnist_test.labels[:5])


def test_truncated_gz_names_the_file(tmp_path):
    cut = (FASHION_MNIST_DEBIAN / "t10k-images-idx3-ubyte.gz").read_bytes()[:50_000]
    folder = _mirror(tmp_path, {"t10k-images-idx3-ubyte.gz": cut})
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", "test", str(folder))


def test_truncated_raw_file_is_detected_from_its_header(tmp_path):
    folder = _mirror(tmp_path, {"t10k-labels-idx1-ubyte": _raw("t10k-labels-idx1-ubyte")[:-1]})
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte.*truncated"):
        load_dataset("fashion-mnist", "test", str(folder))


def test_bad_magic_number(tmp_path):
    labels = bytearray(_raw("t10k-labels-idx1-ubyte"))
    labels[2] = 0x0D  # float32 type code instead of unsigned byte
    folder = _mirror(tmp_path, {"t10k-labels-idx1-ubyte": bytes(labels)})
    with pytest.raises(UserError, match="magic"):
        load_dataset("fashion-mnist", "test", str(folder))


def test_missing_root_says_how_to_fix(tmp_path):
    with pytest.raises(UserError, match="--data-root") as err:
        find_fashion_mnist(str(tmp_path / "nowhere"))
    assert "apt-get install dataset-fashion-mnist" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="--data-root"):
        load_dataset("fashion-mnist", root=str(tmp_path))


def test_cifar10_needs_a_root_holding_it(tmp_path):
    with pytest.raises(UserError, match="--data-root"):
        load_dataset("cifar10")
    with pytest.raises(UserError, match="CIFAR-10 not found"):
        load_dataset("cifar10", root=str(tmp_path))


def test_limit_and_resize(fmnist_test):
    data = load_dataset("fashion-mnist", "test", limit=7, image_size=14)
    assert data.images.shape == (7, 1, 14, 14)
    assert torch.equal(data.labels, fmnist_test.labels[:7])
    # an antialiased downscale keeps each image's mean brightness
    torch.testing.assert_close(data.images.mean((1, 2, 3)), fmnist_test.images[:7].mean((1, 2, 3)), atol=0.02, rtol=0)
    native = load_dataset("fashion-mnist", "test", limit=7, image_size=28)
    assert torch.equal(native.images, fmnist_test.images[:7])


def test_subset_first_and_seeded(fmnist_test):
    first = fmnist_test.subset(5)
    assert torch.equal(first.images, fmnist_test.images[:5])
    a = fmnist_test.subset(50, torch.Generator().manual_seed(1))
    b = fmnist_test.subset(50, torch.Generator().manual_seed(1))
    c = fmnist_test.subset(50, torch.Generator().manual_seed(2))
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert len(fmnist_test.subset(None)) == 10000 and len(fmnist_test.subset(10**6)) == 10000
    with pytest.raises(UserError):
        fmnist_test.subset(0)


def test_with_channels(fmnist_test):
    small = fmnist_test.subset(3)
    rgb = small.with_channels(3)
    assert rgb.images.shape == (3, 3, 28, 28) and rgb.mean == (0.2860,) * 3 and rgb.std == (0.3530,) * 3
    assert all(torch.equal(rgb.images[:, k], small.images[:, 0]) for k in range(3))
    assert small.with_channels(1) is small
    with pytest.raises(UserError, match="1 -> 3"):
        rgb.with_channels(1)
    with pytest.raises(UserError):
        match_channels(small.images, 2)


def test_photos():
    data = load_dataset("photos", "all", image_size=24)
    assert data.images.shape == (len(PHOTOS), 3, 24, 24) and data.split == "all"
    assert data.classes == PHOTOS and torch.equal(data.labels, torch.arange(len(PHOTOS)))
    pixels = data.images * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    grey = data.images[PHOTOS.index("camera")] * torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(grey[0] + IMAGENET_MEAN[0], grey[1] + IMAGENET_MEAN[1], atol=1e-5)  # grey repeated
    assert len(load_dataset("photos", "all", limit=3)) == 3


def test_photo_splits_are_disjoint_by_index_and_cover_all_photos():
    train, test = load_dataset("photos", "train"), load_dataset("photos", "test")
    assert test.labels.tolist() == list(range(0, len(PHOTOS), 3)) and (train.split, test.split) == ("train", "test")
    assert sorted(train.labels.tolist() + test.labels.tolist()) == list(range(len(PHOTOS)))
    assert [PHOTOS[i] for i in train.labels] == [train.classes[i] for i in train.labels]  # labels index the names
    assert load_dataset("photos", "train", limit=2).labels.tolist() == [1, 2]  # the first photos of the split
    with pytest.raises(UserError, match="unknown photos split 'val'"):
        load_dataset("photos", "val")


def _image_folder(root: Path, colours: dict[str, tuple[int, int, int]]) -> None:
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (20 + i, 10), colour).save(root / name / f"{i}.png")


def test_image_folder(tmp_path):
    _image_folder(tmp_path / "train", {"blue": (0, 0, 255), "red": (255, 0, 0)})
    data = load_dataset(f"folder:{tmp_path}", "train", image_size=8)
    assert data.images.shape == (4, 3, 8, 8) and data.classes == ("blue", "red")
    assert data.labels.tolist() == [0, 0, 1, 1]
    red = (np.array([1.0, 0.0, 0.0]) - IMAGENET_MEAN) / IMAGENET_STD
    torch.testing.assert_close(data.images[2, :, 4, 4], torch.tensor(red, dtype=torch.float32))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="no image folder"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


@pytest.mark.parametrize("split", ["train", "test"])
def test_image_folder_without_the_split_sub_folder_is_refused(tmp_path, split):
    _image_folder(tmp_path, {"blue": (0, 0, 255), "red": (255, 0, 0)})  # classes directly under PATH
    expected = f"folder:{tmp_path} has no split sub-folder {tmp_path / split}; expected the layout {tmp_path}/<split>/"
    with pytest.raises(UserError, match=re.escape(expected)):
        load_dataset(f"folder:{tmp_path}", split, image_size=8)


@pytest.mark.parametrize("split", ["..", "train/blue", ""])
def test_image_folder_split_must_be_one_sub_folder_name(tmp_path, split):
    _image_folder(tmp_path / "train", {"blue": (0, 0, 255)})
    with pytest.raises(UserError, match="must name one of its sub-folders"):
        load_dataset(f"folder:{tmp_path}", split)


def test_for_model_renormalises_to_the_models_statistics():
    data = load_dataset("fashion-mnist", "test", limit=64)
    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    out = data.for_model(3, norm)
    raw = data.images * data.std[0] + data.mean[0]
    assert out.images.shape == (64, 3, 28, 28) and out.mean == norm[0] and out.std == norm[1]
    assert torch.allclose(out.images[:, 1:2], (raw - 0.5) / 0.25, atol=1e-5)
    assert data.for_model(1, None) is data
