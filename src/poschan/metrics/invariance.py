"""Shift-invariance metrics of a classifier: consistency, fidelity, latent distance, circular consistency."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from poschan.data.canvas import roll
from poschan.data.shift_pairs import ShiftPairTransform
from poschan.errors import UserError
from poschan.runtime import eval_mode, seeded_generator
from poschan.taps import forward_with_latent

# Shift-invariance metrics (Zhang 2019; APS/TIPS). Each returns a fraction in [0, 1] (latent_distance: a ratio),
# draws its shifts PER SAMPLE from a generator seeded by (seed, pass, kind), so a score does not depend on the
# batch size, and feeds both views of a pair to the model in ONE concatenated batch (eval mode).
_CROP_PAIRS, _ROLL_PAIRS = 0, 1
PairViews = Callable[[Tensor, slice], tuple[Tensor, Tensor]]  # (images of a batch, their index range) -> 2 views


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


@torch.no_grad()
def _pair_scores(model: nn.Module, images: Tensor, labels: Tensor | None, make_views: Callable[[int], PairViews], *,
                 passes: int, batch_size: int, device: torch.device | str, latent: str | None) -> dict[str, float]:
    """Agreement (and, with labels, fidelity; with a ``latent`` layer, the distance of its pooled outputs) over
    ``passes`` pairs per image."""
    if passes < 1 or batch_size < 1:
        raise UserError(f"passes and batch_size must be >= 1, got {passes} and {batch_size}")
    agree = both = total = 0
    diff = norm = 0.0
    with eval_mode(model):
        for p in range(passes):
            views = make_views(p)
            for start in range(0, len(images), batch_size):
                index = slice(start, start + batch_size)
                v1, v2 = views(images[index].to(device), index)
                x = torch.cat([v1, v2])
                logits, z = forward_with_latent(model, x, latent) if latent else (model(x), None)
                p1, p2 = logits.argmax(dim=1).chunk(2)
                agree += int((p1 == p2).sum())
                total += len(p1)
                if labels is not None:
                    y = labels[index].to(p1.device)
                    both += int(((p1 == y) & (p2 == y)).sum())
                if z is not None:
                    z1, z2 = z.double().chunk(2)
                    diff += float(((z1 - z2) ** 2).sum())
                    norm += float((z1 ** 2).sum() + (z2 ** 2).sum()) / 2
    out = {"consistency": agree / max(total, 1)}
    if labels is not None:
        out["fidelity"] = both / max(total, 1)
    if latent:
        out["latent_distance"] = diff / norm if norm > 0 else 0.0
    return out


def _crop_scores(model: nn.Module, images: Tensor, labels: Tensor | None, shift: ShiftPairTransform, *, passes: int,
                 seed: int, batch_size: int, device: torch.device | str, latent: str | None) -> dict[str, float]:
    return _pair_scores(model, images, labels,
                        lambda p: _crop_pairs(shift, len(images), seeded_generator(seed, p, _CROP_PAIRS)),
                        passes=passes, batch_size=batch_size, device=device, latent=latent)


def consistency(model: nn.Module, images: Tensor, shift: ShiftPairTransform, *, passes: int = 5, seed: int = 0,
                batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """Zhang (2019): the fraction of (image, pass) pairs whose top-1 labels agree on two crops of side s taken at
    independent uniform offsets in [0, S - s]^2 of the image's canvas (``shift``). ``images``: (N, C, h, w)."""
    return _crop_scores(model, images, None, shift, passes=passes, seed=seed, batch_size=batch_size, device=device,
                        latent=None)["consistency"]


def fidelity(model: nn.Module, images: Tensor, labels: Tensor, shift: ShiftPairTransform, *, passes: int = 5,
             seed: int = 0, batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """The fraction of pairs of ``consistency`` with BOTH crops correctly classified (TIPS's "stability");
    at most the consistency and at most the accuracy on either view."""
    return _crop_scores(model, images, labels, shift, passes=passes, seed=seed, batch_size=batch_size, device=device,
                        latent=None)["fidelity"]


def latent_distance(model: nn.Module, images: Tensor, shift: ShiftPairTransform, *, passes: int = 5, seed: int = 0,
                    batch_size: int = 256, device: torch.device | str = "cpu", latent_layer: str = "backbone") -> float:
    """mean ||z1 - z2||^2 / mean ||z||^2 over the crop pairs of ``consistency``, z the pooled output of
    ``latent_layer`` (a PoolNet's ``backbone``: its pooled latent; 0: the latent ignores the shifts; 2: as far
    apart as independent latents of equal norm)."""
    return _crop_scores(model, images, None, shift, passes=passes, seed=seed, batch_size=batch_size, device=device,
                        latent=latent_layer)["latent_distance"]


def circular_consistency(model: nn.Module, images: Tensor, shift: ShiftPairTransform, *, max_shift: int | None = None,
                         passes: int = 5, seed: int = 0, batch_size: int = 256,
                         device: torch.device | str = "cpu") -> float:
    """APS/TIPS circular consistency: top-1 agreement on two independent per-sample circular rolls (dy, dx), each
    uniform in [-max_shift, max_shift]^2, of the centre crop; ``max_shift`` defaults to S - s (the crop range)."""
    m = shift.max_offset if max_shift is None else max_shift
    if m < 0:
        raise UserError(f"max_shift must be >= 0, got {m}")
    return _pair_scores(model, images, None,
                        lambda p: _roll_pairs(shift, m, len(images), seeded_generator(seed, p, _ROLL_PAIRS)),
                        passes=passes, batch_size=batch_size, device=device, latent=None)["consistency"]


@torch.no_grad()
def diagonal_shift_accuracy(model: nn.Module, images: Tensor, labels: Tensor, shift: ShiftPairTransform, *,
                            batch_size: int = 256, device: torch.device | str = "cpu") -> list[float]:
    """Accuracy of the crop at offset (d, d) for d = 0..S - s (Zhang's diagonal evaluation); entry (S - s) // 2 is
    the centre-crop accuracy."""
    correct = [0] * (shift.max_offset + 1)
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            canvases = shift.place(images[start:start + batch_size].to(device))
            y = labels[start:start + batch_size].to(device)
            for d in range(shift.max_offset + 1):
                at = torch.full((len(canvases), 2), d, dtype=torch.int64)
                correct[d] += int((model(shift.view(canvases, at)).argmax(dim=1) == y).sum())
    return [c / max(len(images), 1) for c in correct]


def invariance_metrics(model: nn.Module, images: Tensor, labels: Tensor, shift: ShiftPairTransform, *,
                       max_shift: int | None = None, passes: int = 5, seed: int = 0, batch_size: int = 256,
                       device: torch.device | str = "cpu", latent_layer: str = "backbone") -> dict:
    """Every shift metric of a classifier at once (each crop pair is scored once): ``accuracy`` (centre crop),
    ``consistency``, ``fidelity``, ``latent_distance`` (of ``latent_layer``'s pooled output),
    ``circular_consistency`` and ``diagonal_accuracy`` (the list of diagonal_shift_accuracy); the same arguments
    give the same values as the single functions."""
    common = dict(passes=passes, seed=seed, batch_size=batch_size, device=device)
    curve = diagonal_shift_accuracy(model, images, labels, shift, batch_size=batch_size, device=device)
    return {"accuracy": curve[shift.max_offset // 2],
            **_crop_scores(model, images, labels, shift, latent=latent_layer, **common),
            "circular_consistency": circular_consistency(model, images, shift, max_shift=max_shift, **common),
            "diagonal_accuracy": curve}
