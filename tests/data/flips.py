"""Checks of randomly flipped batches shared by the scene and tensor stream tests."""

import torch
from scipy import stats


def flipped_samples(plain: tuple[torch.Tensor, torch.Tensor], flipped: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(B,) bool: which samples of ``flipped`` are the ``plain`` batch's mirrored left-right; asserts that every
    sample is its plain self or its mirror, image and mask alike (no plain sample may be its own mirror)."""
    (x, m), (fx, fm) = plain, flipped

    def same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a == b).flatten(1).all(1)

    assert not (same(x, x.flip(-1)) & same(m, m.flip(-1))).any(), "a symmetric sample cannot show a flip"
    mirrored = same(fx, x.flip(-1)) & same(fm, m.flip(-1))
    assert (mirrored | (same(fx, x) & same(fm, m))).all(), "a sample is neither itself nor its mirror"
    return mirrored


def half_flipped(count: int, total: int) -> bool:
    """``count`` flips in ``total`` fair coins is not rejected by an exact binomial test at level 1e-6."""
    return stats.binomtest(count, total, 0.5).pvalue > 1e-6
