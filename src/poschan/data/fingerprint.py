"""Content hashes of images: which images two splits share, and one fingerprint per image set.

Images are compared by their values as loaded (dtype and bytes of each image), so two sets are comparable when
they were loaded the same way (same dataset, image size and normalisation). The official splits of the datasets
in OFFICIAL_SPLITS are disjoint by publication and trusted by name; every other pair is compared by content.
"""

from __future__ import annotations

import hashlib

import numpy as np
from torch import Tensor

from poschan.data.sources import ImageSet
from poschan.errors import UserError

OFFICIAL_SPLITS = {"fashion-mnist": ("train", "test"), "cifar10": ("train", "test")}


def image_hashes(images: Tensor) -> list[bytes]:
    """One sha256 digest per image of ``images`` (N, ...), over its values in memory."""
    rows = np.ascontiguousarray(images.detach().cpu().numpy())
    rows = rows.reshape(len(rows), -1)
    tag = rows.dtype.str.encode()
    return [hashlib.sha256(tag + row.tobytes()).digest() for row in rows]


def image_fingerprint(images: Tensor) -> dict:
    """``{"sha256", "n"}``: a digest of the sorted per-image hashes (independent of order) and the image count."""
    hashes = sorted(image_hashes(images))
    return {"sha256": hashlib.sha256(b"".join(hashes)).hexdigest(), "n": len(hashes)}


def shared_images(a: Tensor, b: Tensor) -> int:
    """How many images of ``b`` also appear (identical values) in ``a``."""
    seen = set(image_hashes(a))
    return sum(h in seen for h in image_hashes(b))


def trusted_disjoint(name: str, split: str, other: str) -> bool:
    """Whether ``split`` and ``other`` are two different official splits of ``name`` (trusted without hashing)."""
    return split != other and {split, other} <= set(OFFICIAL_SPLITS.get(name, ()))


def check_disjoint(a: ImageSet, b: ImageSet) -> None:
    """Refuse (UserError, with the count) two splits that share any image, e.g. a folder's test/ copied from or
    linked to its train/; two official splits of one dataset pass by name."""
    if a.name == b.name and trusted_disjoint(a.name, a.split, b.split):
        return
    shared = shared_images(a.images, b.images)
    if shared:
        raise UserError(f"{shared} of the {len(b)} images of split {b.split!r} of {b.name} also appear in split "
                        f"{a.split!r} (identical pixels); splits must hold different images: remove the copies "
                        "or choose other splits")
