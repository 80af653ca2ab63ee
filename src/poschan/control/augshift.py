"""AugShift (Islam et al., ICCV 2021): two independently shifted views per image and a latent consistency loss.

The authors never released code; this follows the paper's Fig. 2. Each image gives two crops, the shared encoder
(up to and including global pooling) maps them to latents z1, z2, and training minimises

    CE(logits1, y) + CE(logits2, y) + lam * MSE(z1, z2)

Defaults (documented choices, the paper states none): lam = 1, cross-entropy on BOTH views (in Fig. 2 the head
receives both latents), plain MSE of the pooled latents ("normalized-mse" compares L2-normalised latents instead,
which a network cannot lower by shrinking its features). Shifts follow Zhang (2019): the image centred in a canvas
of side S, each view a crop of side s at an offset uniform in [0, S - s]^2; S / s = 256 / 224 by default.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from poschan.errors import UserError
from poschan.taps import forward_with_latent

CE_MODES = ("both", "first")
LATENT_LOSSES = ("mse", "normalized-mse")


class AugShiftLoss(nn.Module):
    """The AugShift objective over ``(logits, latents, targets)`` of the two views of B images, any model:
    ``logits`` (2B, K) and ``latents`` (2B, C) of ``cat([view1, view2])``, ``targets`` (B,).

    loss = CE(logits1, y) [+ CE(logits2, y) when ce == "both"] + lam * latent(z1, z2), where latent is the MSE
    of the latents ("mse") or of their L2-normalised versions ("normalized-mse"). lam = 0 with ce "both" is plain
    two-view shift augmentation. ``training_loss`` is the same objective as a training-engine loss
    ``(model, x, y)``, the latents being the pooled output of ``layer`` (see ``poschan.taps.forward_with_latent``).
    """

    def __init__(self, lam: float = 1.0, ce: str = "both", latent: str = "mse", layer: str = "backbone"):
        super().__init__()
        if not (math.isfinite(lam) and lam >= 0):
            raise UserError(f"lambda must be a finite number >= 0, got {lam}")
        if ce not in CE_MODES:
            raise UserError(f"unknown ce {ce!r}; allowed: {', '.join(CE_MODES)}")
        if latent not in LATENT_LOSSES:
            raise UserError(f"unknown latent loss {latent!r}; allowed: {', '.join(LATENT_LOSSES)}")
        self.lam, self.ce, self.latent, self.layer = lam, ce, latent, layer

    def forward(self, logits: Tensor, latents: Tensor, targets: Tensor) -> Tensor:
        if len(logits) != 2 * len(targets) or len(latents) != len(logits):
            raise UserError(f"AugShiftLoss needs the logits and latents of 2B views (cat([view1, view2])) for B "
                            f"targets, got {len(logits)}, {len(latents)} and {len(targets)}")
        l1, l2 = logits.chunk(2)
        loss = F.cross_entropy(l1, targets)
        if self.ce == "both":
            loss = loss + F.cross_entropy(l2, targets)
        if self.lam:
            loss = loss + self.lam * self.latent_term(*latents.chunk(2))
        return loss

    def latent_term(self, z1: Tensor, z2: Tensor) -> Tensor:
        if self.latent == "normalized-mse":
            z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        return F.mse_loss(z1, z2)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Engine loss for ``x = cat([view1, view2])`` (2B images, ONE forward) and ``y`` (B,)."""
        if len(x) != 2 * len(y):
            raise UserError(f"AugShiftLoss needs 2B views for B labels (cat([view1, view2])), got {len(x)} and {len(y)}")
        return self(*forward_with_latent(model, x, self.layer), y)

    def extra_repr(self) -> str:
        return f"lam={self.lam}, ce={self.ce!r}, latent={self.latent!r}, layer={self.layer!r}"
