"""Channel scores beside the paper's flip score, to ask which ranking finds the channels a segmenter relies on.

- ``pooled_spread``: each channel's activation magnitude (mean of the globally average-pooled output) and spread (its
  standard deviation over images); ``flip / spread`` is the flip score normalised by each channel's spread (a
  channel that varies a lot between any two images has a large flip score for that reason alone).
- ``probe_knockout``: a causal position score. A linear probe (standardisation + logistic regression, as
  ``measure.readout``) reads from the pooled features in which cell of a grid an item lies; a channel's score is the
  probe's cross-entropy rise on held-out canvases when that channel alone is knocked out (its pooled value set to 0,
  as masking the channel does). Computed in closed form for every channel at once.

The reference (each channel's own knock-out cost) and the magnitude-matched random control are in
``control.channel_sets``.
"""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from poschan.data.canvas import make_background, paste_in_grid
from poschan.data.sources import ImageSet
from poschan.errors import UserError
from poschan.measure.readout import fit_readout
from poschan.runtime import eval_mode
from poschan.taps import pooled_features

InputNorm = tuple[tuple[float, ...], tuple[float, ...]]


@torch.no_grad()
def pooled(model: nn.Module, layer: str, images: Tensor, *, batch_size: int = 64,
           device: torch.device | str = "cpu") -> Tensor:
    """(N, C) float64 globally average-pooled output of ``layer`` for ``images`` as the model takes them."""
    with eval_mode(model):
        return torch.cat([pooled_features(model, images[i:i + batch_size].to(device), [layer])[layer].double().cpu()
                          for i in range(0, len(images), batch_size)])


def pooled_spread(features: Tensor) -> tuple[Tensor, Tensor]:
    """(magnitude, spread) of (N, C) pooled features: each channel's mean |value| and standard deviation."""
    if features.dim() != 2 or len(features) < 2:
        raise UserError(f"pooled features must be (N >= 2, C), got {tuple(features.shape)}")
    return features.abs().mean(0), features.std(0)


def spread_normalised(scores: Tensor, spread: Tensor) -> Tensor:
    """``scores`` / ``spread`` per channel; a channel that never varies (spread 0) scores 0."""
    return torch.where(spread > 0, scores / spread.clamp_min(1e-300), torch.zeros_like(scores))


def cell_canvases(items: ImageSet, grid: int, side: int, *, in_chans: int,
                  input_norm: InputNorm | None) -> tuple[Tensor, Tensor]:
    """Item i pasted in cell i mod grid² of a ``grid``×``grid`` layout of a ``side``-px canvas with a black background
    (as the scenes), so every cell holds as many items (and, for an odd grid², the even and the odd rows each hold
    every cell): (canvases as the model takes them, cell of each)."""
    cells = torch.arange(len(items)) % (grid * grid)
    model_items = items.for_model(in_chans, input_norm)
    background = make_background("black", 1, in_chans, side, mean=model_items.mean, std=model_items.std)
    return paste_in_grid(model_items.images, cells, grid, background), cells


def probe_knockout(train: Tensor, train_cells: Tensor, test: Tensor, test_cells: Tensor, *, seed: int = 0) -> Tensor:
    """(C,) rise of a linear cell probe's mean cross-entropy on ``test`` when each channel alone is set to 0.

    The probe (``measure.readout.fit_readout``) is fit on (N, C) pooled features ``train`` and their cells; a
    knock-out changes one standardised input, so every channel's logits follow from the intact ones in closed form."""
    if train.shape[1] != test.shape[1]:
        raise UserError(f"train and test features differ in channels: {train.shape[1]} vs {test.shape[1]}")
    unseen = set(test_cells.tolist()) - set(train_cells.tolist())
    if unseen:
        raise UserError(f"the probe's test rows hold cells {sorted(unseen)} that its training rows lack; give more "
                        "items")
    readout = fit_readout(train, train_cells, seed=seed)
    scaler, logistic = readout[0], readout[-1]
    x = scaler.transform(test.double().numpy())  # (N, C) standardised
    knocked = (0.0 - scaler.mean_) / scaler.scale_  # (C,) the standardised value of a zeroed channel
    weights = logistic.coef_  # (K, C)
    classes = list(logistic.classes_)
    target = np.array([classes.index(int(c)) for c in test_cells.tolist()])
    logits = x @ weights.T + logistic.intercept_  # (N, K)
    # Knocking out channel c adds (knocked_c − x_nc)·w_kc to logit k of row n: (N, C, K).
    shifted = logits[:, None, :] + (knocked[None, :] - x)[:, :, None] * weights.T[None, :, :]
    with threadpool_limits(limits=1, user_api="blas"):
        def cross_entropy(z: np.ndarray) -> np.ndarray:
            z = z - z.max(-1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
            return -np.take_along_axis(log_p, target.reshape(-1, *[1] * (z.ndim - 1)), -1)[..., 0]

        base = cross_entropy(logits).mean()
        return torch.from_numpy(cross_entropy(shifted).mean(0) - base)
