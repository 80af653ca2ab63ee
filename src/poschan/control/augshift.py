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
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from poschan.errors import UserError
from poschan.taps import forward_with_latent

CE_MODES = ("both", "first")
LATENT_LOSSES = ("mse", "normalized-mse")


@dataclass(frozen=True)
class AugShiftLoss:
    """Engine loss ``(model, x, y) -> loss`` for ``x = cat([view1, view2])`` (2B images, ONE forward) and y (B,).

    loss = CE(logits1, y) [+ CE(logits2, y) when ce == "both"] + lam * latent(z1, z2), where latent is the MSE
    of the pooled latents ("mse") or of their L2-normalised versions ("normalized-mse"). lam = 0 with ce "both"
    is plain two-view shift augmentation.
    """

    lam: float = 1.0
    ce: str = "both"
    latent: str = "mse"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise UserError(f"lambda must be a finite number >= 0, got {self.lam}")
        if self.ce not in CE_MODES:
            raise UserError(f"unknown ce {self.ce!r}; allowed: {', '.join(CE_MODES)}")
        if self.latent not in LATENT_LOSSES:
            raise UserError(f"unknown latent loss {self.latent!r}; allowed: {', '.join(LATENT_LOSSES)}")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if len(x) != 2 * len(y):
            raise UserError(f"AugShiftLoss needs 2B views for B labels (cat([view1, view2])), "
                            f"got {len(x)} and {len(y)}")
        logits, z = forward_with_latent(model, x)
        return self.combine(logits, z, y)

    def combine(self, logits: Tensor, z: Tensor, y: Tensor) -> Tensor:
        """The loss from the (2B, K) logits and (2B, C) latents of cat([view1, view2])."""
        l1, l2 = logits.chunk(2)
        loss = F.cross_entropy(l1, y)
        if self.ce == "both":
            loss = loss + F.cross_entropy(l2, y)
        if self.lam:
            loss = loss + self.lam * self.latent_term(*z.chunk(2))
        return loss

    def latent_term(self, z1: Tensor, z2: Tensor) -> Tensor:
        if self.latent == "normalized-mse":
            z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        return F.mse_loss(z1, z2)
