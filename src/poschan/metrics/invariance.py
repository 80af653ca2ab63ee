"""Shift-invariance metrics of a classifier: consistency, fidelity, latent distance, circular consistency."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from poschan.data.canvas import roll
from poschan.data.shift_pairs import ShiftPairTransform
from poschan.errors import UserError
from poschan.runtime import eval_mode, seeded_generator
from poschan.taps import forward_with_latent

# Shift-invariance metrics (Zhang 2019; APS/TIPS). Each draws its shifts PER SAMPLE from a generator seeded by
# (seed, pass, kind), so a score does not depend on the batch size, and feeds both views of a pair to the model in
# ONE concatenated batch (eval mode). The ``*_outcomes`` functions give one row per test image (what an interval
# resamples); the float functions are their summaries (``summarize_outcomes``).
_CROP_PAIRS, _ROLL_PAIRS = 0, 1
PairViews = Callable[[Tensor, slice], tuple[Tensor, Tensor]]  # (images of a batch, their index range) -> 2 views
LATENT_DISTANCE_RANGE = (0.0, 4.0)  # ||z1 - z2||^2 <= 2 ||z1||^2 + 2 ||z2||^2 = 4 x their mean squared norm


def _crop_pairs(shift: ShiftPairTransform, n: int, generator: torch.Generator) -> PairViews:
    o1, o2 = shift.draw(n, generator), shift.draw(n, generator)

    def views(images: Tensor, index: slice) -> tuple[Tensor, Tensor]:
        canvases = shift.place(images)
        return shift.view(canvases, o1[index]), shift.view(canvases, o2[index])

    return views


def _roll_pairs(shift: ShiftPairTransform, max_shift: int, n: int, generator: torch.Generator) -> PairViews:
    r1, r2 = (torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator) for _ in range(2))

    def views(images: Tensor, index: slice) -> tuple[Tensor, Tensor]:
        centre = shift.view(shift.place(images), shift.centre(len(images)))
        return roll(centre, r1[index]), roll(centre, r2[index])

    return views


def latent_ratio(means: np.ndarray) -> np.ndarray:
    """Latent distance from mean latent rows (..., 2) = (mean ||z1 - z2||^2, mean (||z1||^2 + ||z2||^2) / 2):
    their ratio, 0 where the latents are all zero."""
    num, den = means[..., 0], means[..., 1]
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


@torch.no_grad()
def _pair_outcomes(model: nn.Module, images: Tensor, labels: Tensor | None, make_views: Callable[[int], PairViews],
                   *, passes: int, batch_size: int, device: torch.device | str,
                   latent: str | None) -> dict[str, np.ndarray]:
    """Per image, over its ``passes`` pairs: the share of agreeing pairs (``consistency``), with labels the share
    of pairs with both views right (``fidelity``), with a ``latent`` layer the rows (mean ||z1 - z2||^2,
    mean (||z1||^2 + ||z2||^2) / 2) of its pooled outputs (``latent_distance``, see :func:`latent_ratio`)."""
    if passes < 1 or batch_size < 1:
        raise UserError(f"passes and batch_size must be >= 1, got {passes} and {batch_size}")
    n = len(images)
    agree, both, latent_rows = np.zeros(n), np.zeros(n), np.zeros((n, 2))
    with eval_mode(model):
        for p in range(passes):
            views = make_views(p)
            for start in range(0, n, batch_size):
                index = slice(start, start + batch_size)
                v1, v2 = views(images[index].to(device), index)
                x = torch.cat([v1, v2])
                logits, z = forward_with_latent(model, x, latent) if latent else (model(x), None)
                p1, p2 = logits.argmax(dim=1).chunk(2)
                agree[index] += (p1 == p2).cpu().numpy()
                if labels is not None:
                    y = labels[index].to(p1.device)
                    both[index] += ((p1 == y) & (p2 == y)).cpu().numpy()
                if z is not None:
                    z1, z2 = z.double().flatten(1).chunk(2)
                    latent_rows[index, 0] += ((z1 - z2) ** 2).sum(1).cpu().numpy()
                    latent_rows[index, 1] += ((z1 ** 2).sum(1) + (z2 ** 2).sum(1)).cpu().numpy() / 2
    out = {"consistency": agree / passes}
    if labels is not None:
        out["fidelity"] = both / passes
    if latent:
        out["latent_distance"] = latent_rows / passes
    return out


def _crop_outcomes(model: nn.Module, images: Tensor, labels: Tensor | None, shift: ShiftPairTransform, *,
                   passes: int, seed: int, batch_size: int, device: torch.device | str,
                   latent: str | None) -> dict[str, np.ndarray]:
    return _pair_outcomes(model, images, labels,
                          lambda p: _crop_pairs(shift, len(images), seeded_generator(seed, p, _CROP_PAIRS)),
                          passes=passes, batch_size=batch_size, device=device, latent=latent)


def consistency(model: nn.Module, images: Tensor, shift: ShiftPairTransform, *, passes: int = 5, seed: int = 0,
                batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """Zhang (2019): the fraction of (image, pass) pairs whose top-1 labels agree on two crops of side s taken at
    independent uniform offsets in [0, S - s]^2 of the image's canvas (``shift``). ``images``: (N, C, h, w)."""
    return float(_crop_outcomes(model, images, None, shift, passes=passes, seed=seed, batch_size=batch_size,
                                device=device, latent=None)["consistency"].mean())


def fidelity(model: nn.Module, images: Tensor, labels: Tensor, shift: ShiftPairTransform, *, passes: int = 5,
             seed: int = 0, batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """The fraction of pairs of ``consistency`` with BOTH crops correctly classified (TIPS's "stability");
    at most the consistency and at most the accuracy on either view."""
    return float(_crop_outcomes(model, images, labels, shift, passes=passes, seed=seed, batch_size=batch_size,
                                device=device, latent=None)["fidelity"].mean())


def latent_distance(model: nn.Module, images: Tensor, shift: ShiftPairTransform, *, passes: int = 5, seed: int = 0,
                    batch_size: int = 256, device: torch.device | str = "cpu", latent_layer: str = "backbone") -> float:
    """mean ||z1 - z2||^2 / mean ||z||^2 over the crop pairs of ``consistency``, z the pooled output of
    ``latent_layer`` (a PoolNet's ``backbone``: its pooled latent; 0: the latent ignores the shifts; 2: as far
    apart as independent latents of equal norm; at most 4: LATENT_DISTANCE_RANGE)."""
    rows = _crop_outcomes(model, images, None, shift, passes=passes, seed=seed, batch_size=batch_size,
                          device=device, latent=latent_layer)["latent_distance"]
    return float(latent_ratio(rows.mean(axis=0)))


def _circular_outcomes(model: nn.Module, images: Tensor, shift: ShiftPairTransform, *, max_shift: int | None,
                       passes: int, seed: int, batch_size: int, device: torch.device | str) -> np.ndarray:
    m = shift.largest_roll(max_shift)
    if m < 0:
        raise UserError(f"max_shift must be >= 0, got {m}")
    return _pair_outcomes(model, images, None,
                          lambda p: _roll_pairs(shift, m, len(images), seeded_generator(seed, p, _ROLL_PAIRS)),
                          passes=passes, batch_size=batch_size, device=device, latent=None)["consistency"]


def circular_consistency(model: nn.Module, images: Tensor, shift: ShiftPairTransform, *, max_shift: int | None = None,
                         passes: int = 5, seed: int = 0, batch_size: int = 256,
                         device: torch.device | str = "cpu") -> float:
    """APS/TIPS circular consistency: top-1 agreement on two independent per-sample circular rolls (dy, dx), each
    uniform in [-max_shift, max_shift]^2, of the centre crop; ``max_shift`` defaults to S - s (the crop range)."""
    return float(_circular_outcomes(model, images, shift, max_shift=max_shift, passes=passes, seed=seed,
                                    batch_size=batch_size, device=device).mean())


@torch.no_grad()
def diagonal_shift_outcomes(model: nn.Module, images: Tensor, labels: Tensor, shift: ShiftPairTransform, *,
                            batch_size: int = 256, device: torch.device | str = "cpu") -> np.ndarray:
    """(N, S - s + 1) 0/1: image i's crop at offset (d, d) is classified right (Zhang's diagonal evaluation);
    column (S - s) // 2 is the centre crop."""
    correct = np.zeros((len(images), shift.max_offset + 1))
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            canvases = shift.place(images[start:start + batch_size].to(device))
            y = labels[start:start + batch_size].to(device)
            for d in range(shift.max_offset + 1):
                at = torch.full((len(canvases), 2), d, dtype=torch.int64)
                hit = model(shift.view(canvases, at)).argmax(dim=1) == y
                correct[start:start + len(canvases), d] = hit.cpu().numpy()
    return correct


def diagonal_shift_accuracy(model: nn.Module, images: Tensor, labels: Tensor, shift: ShiftPairTransform, *,
                            batch_size: int = 256, device: torch.device | str = "cpu") -> list[float]:
    """Accuracy of the crop at offset (d, d) for d = 0..S - s (the column means of diagonal_shift_outcomes)."""
    return diagonal_shift_outcomes(model, images, labels, shift, batch_size=batch_size, device=device).mean(0).tolist()


def invariance_outcomes(model: nn.Module, images: Tensor, labels: Tensor, shift: ShiftPairTransform, *,
                        max_shift: int | None = None, passes: int = 5, seed: int = 0, batch_size: int = 256,
                        device: torch.device | str = "cpu", latent_layer: str = "backbone") -> dict[str, np.ndarray]:
    """Every shift metric of a classifier per test image (each crop pair is scored once): ``accuracy`` (N,) 0/1
    (centre crop); ``consistency``, ``fidelity``, ``circular_consistency`` (N,) the share of the image's
    ``passes`` pairs; ``latent_distance`` (N, 2) rows of :func:`latent_ratio`; ``diagonal_accuracy`` (N, D) 0/1."""
    common = dict(passes=passes, seed=seed, batch_size=batch_size, device=device)
    curve = diagonal_shift_outcomes(model, images, labels, shift, batch_size=batch_size, device=device)
    return {"accuracy": curve[:, shift.max_offset // 2],
            **_crop_outcomes(model, images, labels, shift, latent=latent_layer, **common),
            "circular_consistency": _circular_outcomes(model, images, shift, max_shift=max_shift, **common),
            "diagonal_accuracy": curve}


def summarize_outcomes(outcomes: dict[str, np.ndarray]) -> dict:
    """The metrics of per-image outcomes (``invariance_outcomes``): means, the latent ratio, the accuracy list."""
    out = {k: float(v.mean()) for k, v in outcomes.items() if v.ndim == 1}
    if "latent_distance" in outcomes:
        out["latent_distance"] = float(latent_ratio(outcomes["latent_distance"].mean(axis=0)))
    if "diagonal_accuracy" in outcomes:
        out["diagonal_accuracy"] = outcomes["diagonal_accuracy"].mean(axis=0).tolist()
    return out


def invariance_metrics(model: nn.Module, images: Tensor, labels: Tensor, shift: ShiftPairTransform, *,
                       max_shift: int | None = None, passes: int = 5, seed: int = 0, batch_size: int = 256,
                       device: torch.device | str = "cpu", latent_layer: str = "backbone") -> dict:
    """Every shift metric of a classifier at once, as floats: ``accuracy`` (centre crop), ``consistency``,
    ``fidelity``, ``latent_distance`` (of ``latent_layer``'s pooled output), ``circular_consistency`` and
    ``diagonal_accuracy`` (the list of diagonal_shift_accuracy); the same arguments give the same values as the
    single functions. Per-image outcomes: :func:`invariance_outcomes`."""
    return summarize_outcomes(invariance_outcomes(model, images, labels, shift, max_shift=max_shift, passes=passes,
                                                  seed=seed, batch_size=batch_size, device=device,
                                                  latent_layer=latent_layer))
