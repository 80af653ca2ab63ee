"""Linear readouts of pooled features: standardise, multinomial logistic regression, accuracy; channel permutation;
order-free codes of a pooled vector (what a readout can use when channel order carries nothing).

The readout is scikit-learn's ``LogisticRegression`` (L2 penalty, lbfgs, multinomial) behind a ``StandardScaler``,
so that the penalty weighs every channel alike whatever its scale.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor

from poschan.errors import UserError

DEFAULT_C = 1.0  # inverse L2 strength of sklearn's LogisticRegression (its default), on standardised features
MAX_ITER = 1000


def _numpy(x: Tensor):
    return x.detach().to("cpu", torch.float64).numpy()


def fit_readout(train_x: Tensor, train_y: Tensor, *, seed: int, c: float = DEFAULT_C) -> Pipeline:
    """A linear readout (standardisation + L2 logistic regression with inverse strength ``c``) fit on
    ``(N, C)`` features and ``(N,)`` labels."""
    if train_x.dim() != 2 or train_x.shape[0] != train_y.shape[0]:
        raise UserError(f"readout needs (N, C) features and N labels, got {tuple(train_x.shape)} and "
                        f"{tuple(train_y.shape)}")
    model = LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed)
    # One BLAS thread: for these small problems threaded OpenBLAS mostly spin-waits (measured 8-20x slower on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        return make_pipeline(StandardScaler(), model).fit(_numpy(train_x), _numpy(train_y).astype(int))


def readout_outcomes(readout: Pipeline, x: Tensor, y: Tensor) -> np.ndarray:
    """(N,) 0/1: row i of ``x`` is predicted as class ``y[i]``."""
    return (readout.predict(_numpy(x)) == _numpy(y).astype(int)).astype(np.float64)


def readout_accuracy(readout: Pipeline, x: Tensor, y: Tensor) -> float:
    """Fraction of rows of ``x`` whose predicted class equals ``y`` (the mean of :func:`readout_outcomes`)."""
    return float(readout_outcomes(readout, x, y).mean())


def permute_features(x: Tensor, generator: torch.Generator) -> Tensor:
    """``x`` (N, C) with the channels of every row shuffled by its own random permutation drawn from ``generator``.

    Unlike ``models.heads.ChannelPermute`` (global RNG, inside a network) this takes a seeded generator, so a
    readout experiment is reproducible; the draw happens on the generator's device.
    """
    if x.dim() != 2:
        raise UserError(f"permute_features needs (N, C) features, got shape {tuple(x.shape)}")
    keys = torch.rand(x.shape, generator=generator, device=generator.device)
    return x.gather(1, keys.argsort(dim=1).to(x.device))


ORDER_FREE_CODES = ("sorted", "moments")


def order_free_code(x: Tensor, kind: str) -> Tensor:
    """A permutation-invariant code of every row of ``x`` (N, C): ``sorted``, its values in descending order (all
    an order-free readout could use); ``moments``, six numbers (mean, standard deviation, skewness, kurtosis,
    min, max) of its values."""
    if x.dim() != 2:
        raise UserError(f"order_free_code needs (N, C) features, got shape {tuple(x.shape)}")
    if kind == "sorted":
        return x.sort(dim=1, descending=True).values
    if kind != "moments":
        raise UserError(f"unknown order-free code {kind!r}; allowed: {', '.join(ORDER_FREE_CODES)}")
    x = x.double()
    mean, std = x.mean(1, keepdim=True), x.std(1, keepdim=True, correction=0)
    z = (x - mean) / std.clamp_min(1e-12)
    return torch.cat([mean, std, z.pow(3).mean(1, keepdim=True), z.pow(4).mean(1, keepdim=True),
                      x.min(1, keepdim=True).values, x.max(1, keepdim=True).values], dim=1)
