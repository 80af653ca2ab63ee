"""Real image datasets loaded whole into normalised tensors."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from poschan.errors import UserError

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
DATASETS = ("fashion-mnist", "cifar10", "photos", "folder:PATH")
SPLITS = ("train", "test")
PHOTO_SPLITS = ("train", "test", "all")
PHOTO_TEST_EVERY = 3  # photos: index % 3 == 0 -> test photo, else train photo

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Standard per-pixel statistics of the Fashion-MNIST train set (pixel values scaled to [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
# Standard CIFAR-10 statistics (as in the paper's code).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Real photographs shipped inside the scikit-image wheel (no pooch download needed).
PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "clock",
    "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel", "cell",
)

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08
_DEFAULT_CACHE = Path.home() / ".cache" / "poschan"


@dataclass(frozen=True)
class ImageSet:
    """A labelled image set held in memory as normalised tensors."""

    images: Tensor  # (N, C, h, w) float32, normalised with mean/std
    labels: Tensor  # (N,) int64
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    split: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def subset(self, n: int | None, generator: torch.Generator | None = None) -> ImageSet:
        """The first `n` items, or `n` random ones drawn with `generator`; `n` larger than the set keeps all."""
        if n is None:
            return self
        if n < 1:
            raise UserError(f"subset size must be >= 1, got {n}")
        if generator is None:
            index: Tensor | slice = slice(0, n)
        else:
            index = torch.randperm(len(self), generator=generator, device=generator.device)[:n].cpu()
        return ImageSet(self.images[index], self.labels[index], self.classes, self.mean, self.std,
                        self.name, self.split)

    def with_channels(self, c: int) -> ImageSet:
        """The same set with `c` channels: unchanged, or grey repeated to 3 (mean/std repeated)."""
        if c == self.channels:
            return self
        images = match_channels(self.images, c)
        return ImageSet(images, self.labels, self.classes, self.mean * c, self.std * c, self.name, self.split)

    def for_model(self, in_chans: int, input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None) -> ImageSet:
        """The set as a model expects it: ``in_chans`` channels, re-normalised with the model's ``input_norm``
        (e.g. a pretrained network's mean/std) when it has one."""
        out = self.with_channels(in_chans)
        if input_norm is None or (tuple(input_norm[0]), tuple(input_norm[1])) == (tuple(out.mean), tuple(out.std)):
            return out
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in input_norm)
        old_mean, old_std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (out.mean, out.std))
        images = ((out.images * old_std + old_mean) - mean) / std
        return ImageSet(images, out.labels, out.classes, tuple(input_norm[0]), tuple(input_norm[1]), out.name,
                        out.split)


def model_input(images: Tensor, mean: Sequence[float], std: Sequence[float], in_chans: int | None,
                input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None) -> Tensor:
    """A batch of images normalised with ``mean`` / ``std`` as a model takes them (``ImageSet.for_model``;
    ``in_chans`` None: as they are)."""
    as_set = ImageSet(images, torch.zeros(len(images), dtype=torch.long), ("image",), tuple(mean), tuple(std), "batch",
                      "batch")
    return as_set.for_model(as_set.channels if in_chans is None else in_chans, input_norm).images


def stack_items(data: object, what: str) -> list[Tensor]:
    """The columns of what a user holds, each one tensor: a dataset whose items are tensors or tuples of them
    (stacked), or a DataLoader of such batches (concatenated). ``what`` says what is allowed, in the one-line
    error for anything else."""
    is_loader = isinstance(data, DataLoader)
    columns: list[list[Tensor]] = []
    try:
        items = data if is_loader else (data[i] for i in range(len(data)))  # type: ignore[index, arg-type]
        for item in items:
            parts = [torch.as_tensor(p) for p in (item if isinstance(item, (tuple, list)) else (item,))]
            if columns and len(parts) != len(columns):
                raise ValueError("items of different lengths")
            columns = columns or [[] for _ in parts]
            for column, part in zip(columns, parts):
                column.append(part if is_loader else part.unsqueeze(0))
        stacked = [torch.cat(column) for column in columns]
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{what}, got {type(data).__name__}") from None
    if not stacked:
        raise UserError("no images given")
    return stacked


def as_image_set(images: object, labels: Tensor | None = None, *, name: str = "images",
                 split: str = "given") -> ImageSet:
    """An ImageSet of images a user holds: an ImageSet (returned as it is), a (N, C, H, W) tensor, a dataset whose
    items are images or (image, label) pairs, or a DataLoader (any iterable of such batches). The images are taken
    as the model's input (already normalised: mean 0, std 1 per channel); labels default to 0."""
    if isinstance(images, ImageSet):
        return images
    if isinstance(images, Tensor):
        x, y = images, labels
    else:
        columns = stack_items(images, "images must be a (N, C, H, W) tensor, a dataset of images or (image, label) "
                                      "pairs, or a DataLoader of such batches")
        x = columns[0]
        y = labels if labels is not None else (columns[1].reshape(-1) if len(columns) > 1 else None)
    if x.dim() != 4 or not x.is_floating_point():
        raise UserError(f"images must be float (N, C, H, W), got {tuple(x.shape)} {x.dtype}")
    y = torch.zeros(len(x), dtype=torch.int64) if y is None else torch.as_tensor(y, dtype=torch.int64).reshape(-1)
    if len(y) != len(x):
        raise UserError(f"need one label per image, got {len(y)} labels for {len(x)} images")
    c = x.shape[1]
    classes = tuple(str(k) for k in range(int(y.max()) + 1)) if len(y) else ()
    return ImageSet(x.float().cpu(), y.cpu(), classes, (0.0,) * c, (1.0,) * c, name, split)


def match_channels(x: Tensor, channels: int) -> Tensor:
    """(N, C, h, w) -> (N, channels, h, w): unchanged, or a grey channel repeated to 3 (a view)."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    raise UserError(f"cannot turn {c}-channel images into {channels} channels; allowed: same count, or 1 -> 3")


def load_dataset(name: str, split: str = "train", root: str | None = None, *, download: bool = False,
                 limit: int | None = None, image_size: int | None = None) -> ImageSet:
    """Load a dataset by name (see DATASETS); `limit` keeps the first items, `image_size` resizes square.

    ``folder:PATH`` reads the split's sub-folder, PATH/<split>/<class>/<image>; without it the folder is refused.
    Two loaded splits are checked for shared images by poschan.data.fingerprint.check_disjoint.
    """
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}")
    if image_size is not None and image_size < 1:
        raise UserError(f"image_size must be >= 1, got {image_size}")
    if name == "photos":
        return _photos(split, limit, image_size or 32)
    if name.startswith("folder:"):
        return _folder(name.removeprefix("folder:"), split, limit, image_size or 32)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if name == "fashion-mnist":
        images, labels = _fashion_mnist(split, root, download, limit)
        return _image_set(images, labels, FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD,
                          name, split, image_size)
    if name == "cifar10":
        images, labels, classes = _cifar10(split, root, download, limit)
        return _image_set(images, labels, classes, CIFAR10_MEAN, CIFAR10_STD, name, split, image_size)
    raise UserError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")


def find_fashion_mnist(root: str | None) -> Path:
    """The directory holding the four Fashion-MNIST IDX files (.gz or uncompressed).

    A given `root` is searched alone (root/ and root/FashionMNIST/raw/); without one, the Debian
    package location and then poschan's download cache are searched.
    """
    candidates = _candidates(root)
    for folder in candidates:
        if all(_idx_file(folder, stem) for stems in _FMNIST_FILES.values() for stem in stems):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise UserError(f"Fashion-MNIST IDX files not found (looked in {looked}); pass --data-root DIR holding "
                    "them, or run `apt-get install dataset-fashion-mnist`")


def _candidates(root: str | None) -> list[Path]:
    if root is not None:
        return [Path(root), Path(root) / "FashionMNIST" / "raw"]
    return [FASHION_MNIST_DEBIAN, _DEFAULT_CACHE / "FashionMNIST" / "raw"]


def _idx_file(folder: Path, stem: str) -> Path | None:
    for path in (folder / f"{stem}.gz", folder / stem):
        if path.is_file():
            return path
    return None


def _fashion_mnist(split: str, root: str | None, download: bool, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        folder = find_fashion_mnist(root)
    except UserError:
        if not download:
            raise
        import torchvision

        target = Path(root) if root is not None else _DEFAULT_CACHE
        torchvision.datasets.FashionMNIST(str(target), train=True, download=True)
        folder = find_fashion_mnist(str(target))
    image_stem, label_stem = _FMNIST_FILES[split]
    images = read_idx(_idx_file(folder, image_stem), ndim=3)
    labels = read_idx(_idx_file(folder, label_stem), ndim=1)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise UserError(f"Fashion-MNIST files in {folder} disagree: images {images.shape}, labels {labels.shape}; "
                        "expected (N, 28, 28) images and N labels")
    if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise UserError(f"corrupt Fashion-MNIST label file {_idx_file(folder, label_stem)}: labels outside 0..9")
    return images[:limit, None], labels[:limit]


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped) with `ndim` dimensions, validating it fully."""
    # Hand-written: torchvision's IDX reader does not detect truncated files or mismatched headers.
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"cannot read IDX file {path}: {err}; re-download or reinstall it") from err
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0:2] != b"\0\0" or raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise UserError(f"corrupt IDX file {path}: bad magic number (expected unsigned bytes, {ndim} dims)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise UserError(f"corrupt IDX file {path}: {len(raw)} bytes, header {dims} needs {expected}; "
                        "the file is truncated or damaged")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _cifar10(split: str, root: str | None, download: bool, limit: int | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    import torchvision

    if root is None:
        raise UserError("cifar10 needs --data-root DIR (holding cifar-10-batches-py, or where to download it)")
    try:
        data = torchvision.datasets.CIFAR10(root, train=split == "train", download=download)
    except RuntimeError as err:
        raise UserError(f"CIFAR-10 not found in {root} ({err}); pass --data-root DIR holding "
                        "cifar-10-batches-py, or allow download") from err
    images = data.data[:limit].transpose(0, 3, 1, 2)
    return images, np.asarray(data.targets[:limit]), tuple(data.classes)


def _image_set(images: np.ndarray | Tensor, labels: np.ndarray | Tensor, classes: tuple[str, ...],
               mean: tuple[float, ...], std: tuple[float, ...], name: str, split: str,
               image_size: int | None) -> ImageSet:
    """Scale uint8 (or [0, 1] float) images to [0, 1], resize if asked, and normalise."""
    x = torch.as_tensor(images)
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    if image_size is not None and x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    x = ((x - m) / s).contiguous()
    return ImageSet(x, torch.as_tensor(labels, dtype=torch.int64), tuple(classes), tuple(mean), tuple(std),
                    name, split)


@lru_cache(maxsize=8)
def photo_bank(size: int) -> Tensor:
    """The PHOTOS as one read-only (P, 3, size, size) tensor in [0, 1]: centre square crop, resized.

    Cached per size (constant package data); callers must not modify it in place.
    """
    import skimage.data

    squares = []
    for name in PHOTOS:
        a = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, name)()))
        a = a[..., None].expand(-1, -1, 3) if a.ndim == 2 else a[..., :3]
        h, w = a.shape[:2]
        k = min(h, w)
        a = a[(h - k) // 2:(h - k) // 2 + k, (w - k) // 2:(w - k) // 2 + k]
        x = a.permute(2, 0, 1)[None].float().div_(255)
        squares.append(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(squares).clamp_(0, 1)


def _photos(split: str, limit: int | None, image_size: int) -> ImageSet:
    """The photos of ``split``: every PHOTO_TEST_EVERY-th photo (from the first) is a test photo, the others train
    photos; ``all`` holds both. ``limit`` keeps the first photos of the split."""
    if split not in PHOTO_SPLITS:
        raise UserError(f"unknown photos split {split!r}; allowed: {', '.join(PHOTO_SPLITS)}")
    is_test = torch.arange(len(PHOTOS)) % PHOTO_TEST_EVERY == 0
    keep = {"all": torch.ones_like(is_test), "test": is_test, "train": ~is_test}[split].nonzero().flatten()
    keep = keep[:limit]
    photos = _image_set(photo_bank(image_size), torch.arange(len(PHOTOS)), PHOTOS, IMAGENET_MEAN, IMAGENET_STD,
                        "photos", split, None)
    return replace(photos, images=photos.images[keep], labels=photos.labels[keep])


def _folder(path: str, split: str, limit: int | None, image_size: int) -> ImageSet:
    """The ImageFolder PATH/<split>/<class>/<image>; a PATH without the split's sub-folder is refused (its
    images would serve as every split)."""
    import torchvision
    from torchvision.transforms import v2

    if split in ("", ".", "..") or Path(split).name != split:
        raise UserError(f"split {split!r} of folder:{path} must name one of its sub-folders, e.g. train or test")
    folder = Path(path) / split
    if not folder.is_dir():
        raise UserError(f"folder:{path} has no split sub-folder {folder}; expected the layout "
                        f"{path}/<split>/<class>/<image> (e.g. train/ and test/ holding different images)")
    transform = v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True),
                            v2.ToDtype(torch.float32, scale=True)])
    try:
        data = torchvision.datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise UserError(f"no image folder at {folder} ({err}); expected {folder}/<class>/<image> files") from err
    n = len(data) if limit is None else min(limit, len(data))
    images = torch.stack([data[i][0] for i in range(n)])
    labels = torch.tensor(data.targets[:n])
    return _image_set(images, labels, tuple(data.classes), IMAGENET_MEAN, IMAGENET_STD,
                      f"folder:{path}", split, None)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_images(path: str | Path, size: int = 224, *, limit: int | None = None) -> ImageSet:
    """Every image file in or below the folder ``path`` (sorted by path), as RGB ``size``×``size`` images
    normalised with ImageNet mean/std (``ImageSet.for_model`` re-normalises them for a model's own statistics);
    labels are 0. For labelled splits use ``load_dataset("folder:PATH", split)``."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import v2

    folder = Path(path)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in or below {str(path)!r}")
    if size < 1:
        raise UserError(f"size must be >= 1, got {size}")
    to_tensor = v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True)])
    try:
        images = torch.stack([to_tensor(Image.open(f).convert("RGB")) for f in files[:limit]])
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"cannot read an image in {str(path)!r}: {err}") from None
    return _image_set(images, torch.zeros(len(images), dtype=torch.int64), ("image",), IMAGENET_MEAN, IMAGENET_STD,
                      f"images:{path}", "all", None)
