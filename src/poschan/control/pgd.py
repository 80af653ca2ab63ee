"""Untargeted L∞ PGD (Madry et al. 2018) confined to a pixel region of a segmentation model's input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poschan.data.segsets import IGNORE_INDEX
from poschan.errors import UserError


def masked_pgd(model: nn.Module, images: Tensor, labels: Tensor, region: Tensor, *, eps: float | Tensor, steps: int,
               step_size: float | Tensor | None = None, lower: float | Tensor | None = None,
               upper: float | Tensor | None = None, generator: torch.Generator | None = None,
               random_start: bool = True) -> Tensor:
    """Adversarial ``images`` (B, C, S, S) that maximise the cross-entropy of ``labels`` (B, S, S) summed over the
    pixels of ``region`` ((S, S) or (B, S, S) bool), i.e. aim for wrong labels inside the region.

    The perturbation is exactly zero outside the region (on every channel), at most ``eps`` in absolute value
    inside (a float, or a tensor broadcastable to the images such as (C, 1, 1): a raw-intensity budget divided by
    each channel's normalisation std), and the result is clamped to [``lower``, ``upper``] (the valid input range in the model's normalised
    space; floats or tensors broadcastable to the images, e.g. (C, 1, 1)) when given. ``steps`` signed-gradient
    steps of ``step_size`` (default 2.5·eps/steps), each followed by the projection onto both constraints; the
    random start is uniform in [-eps, eps] drawn from ``generator`` (required then). Gradients are taken w.r.t.
    the perturbation only (parameters get no ``.grad``) and the model's train/eval mode is left as it is.
    Returns the adversarial images, detached.
    """
    b, _, s, s2 = images.shape
    x = images.detach()
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if (eps < 0).any() or not eps.isfinite().all():
        raise UserError(f"eps must be finite and >= 0, got {eps.tolist()}")
    if steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    if step_size is not None and not (torch.as_tensor(step_size) > 0).all():
        raise UserError(f"step_size must be > 0, got {step_size}")
    if labels.shape != (b, s, s2):
        raise UserError(f"labels shape {tuple(labels.shape)} must be (B, S, S) = {(b, s, s2)}")
    if region.dtype != torch.bool or region.shape not in ((s, s2), (b, s, s2)):
        raise UserError(f"region must be a bool mask of shape (S, S) = {(s, s2)} or (B, S, S) = {(b, s, s2)}, "
                        f"got {region.dtype} {tuple(region.shape)}")
    if (eps == 0).all():
        return x.clone()
    if random_start and generator is None:
        raise UserError("random_start needs a torch.Generator (pass generator=..., or random_start=False)")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    pixel_mask = torch.broadcast_to(region.to(x.device), (b, s, s2))
    mask = pixel_mask[:, None]  # (B, 1, S, S): broadcast over channels
    bounds = [None if v is None else torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (lower, upper)]

    def valid(t: Tensor) -> Tensor:
        if bounds[0] is not None:
            t = torch.maximum(t, bounds[0])
        return t if bounds[1] is None else torch.minimum(t, bounds[1])

    def project(delta: Tensor) -> Tensor:
        adv = valid(x + torch.clamp(delta, -eps, eps))
        return torch.where(mask, adv - x, torch.zeros_like(x))

    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
        delta = project((2 * noise - 1) * eps)
    else:
        delta = torch.zeros_like(x)
    weight = pixel_mask.to(x.dtype)
    for _ in range(steps):
        delta.requires_grad_(True)
        per_pixel = F.cross_entropy(model(x + delta), labels, reduction="none", ignore_index=IGNORE_INDEX)
        loss = (per_pixel * weight).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        delta = project(delta.detach() + step_size * grad.sign())
    return torch.where(mask, valid(x + delta), x)
