"""Content-independent position maps (Islam et al., ICLR 2020) and their scores: SPC and MAE per image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats as _st
from torch import Tensor

from poschan.errors import UserError

TARGETS = ("horizontal", "vertical", "gaussian")
GAUSSIAN_SIGMA = 0.25  # default sigma of the centred Gaussian, as a fraction of the map side


def position_map(kind: str, height: int, width: int, *, sigma: float = GAUSSIAN_SIGMA,
                 device: torch.device | str | None = None) -> Tensor:
    """A (height, width) map in [0, 1], the same for every image.

    horizontal: 0 at the left column -> 1 at the right column; vertical: 0 at the top row -> 1 at the
    bottom row; gaussian: exp(-r² / 2σ²) around the centre, with coordinates in [0, 1] across the map and
    σ = ``sigma`` (a fraction of the side), min-max normalised to [0, 1] (1 at the centre).
    """
    if kind not in TARGETS:
        raise UserError(f"unknown target {kind!r}; allowed: {', '.join(TARGETS)}")
    if height < 2 or width < 2:
        raise UserError(f"a position map needs at least 2x2 pixels, got {height}x{width}")
    if sigma <= 0:
        raise UserError(f"gaussian sigma must be > 0, got {sigma}")
    y = torch.linspace(0, 1, height, device=device).view(-1, 1).expand(height, width)
    x = torch.linspace(0, 1, width, device=device).view(1, -1).expand(height, width)
    if kind == "horizontal":
        return x.clone()
    if kind == "vertical":
        return y.clone()
    g = torch.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / (2 * sigma**2))
    return (g - g.min()) / (g.max() - g.min())


def position_maps(kinds: Sequence[str], height: int, width: int, *, sigma: float = GAUSSIAN_SIGMA,
                  device: torch.device | str | None = None) -> Tensor:
    """(len(kinds), height, width): one :func:`position_map` per kind."""
    return torch.stack([position_map(k, height, width, sigma=sigma, device=device) for k in kinds])


def _per_image(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Both as (B, H*W), the target broadcast over the batch; pred is (B, H, W), target (H, W) or (B, H, W)."""
    if pred.dim() != 3 or target.shape[-2:] != pred.shape[-2:] or target.dim() not in (2, 3):
        raise ValueError(f"pred must be (B, H, W) and target (H, W) or (B, H, W); got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    b = pred.shape[0]
    return pred.reshape(b, -1), target.expand_as(pred).reshape(b, -1)


def spc(pred: Tensor, target: Tensor) -> Tensor:
    """(B,) Spearman rank correlation between each predicted map and the target map (flattened, ties averaged).

    A constant map (either one) has no ranks to correlate: its SPC is defined as 0 (scipy would give NaN).
    """
    p, t = (v.detach().double().cpu().numpy() for v in _per_image(pred, target))
    out = np.zeros(len(p))
    for i, (a, b) in enumerate(zip(p, t)):
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            out[i] = _st.spearmanr(a, b).statistic
    return torch.from_numpy(out).float()


def mae(pred: Tensor, target: Tensor) -> Tensor:
    """(B,) mean absolute error between each predicted map and the target map."""
    p, t = _per_image(pred, target)
    return (p - t).abs().mean(dim=1)
