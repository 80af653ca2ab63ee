"""The planted position model of the debias and census tests, also a user-model file (``PLANTED:planted_backbone``).

A backbone without weights whose 8 channels are relu(x) (0-2), relu(-x) (3, 4, 6), |x| times the column coordinate
in [-1, 1] (5, POSITION: on a zero background, the mass times the x position of what the image holds) and |x| (7).
"""

from pathlib import Path

import torch
from torch import nn

PLANTED = Path(__file__).as_posix()
POSITION = 5


class PlantedFeatures(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos, neg = x.clamp(min=0), (-x).clamp(min=0)
        cx = torch.linspace(-1, 1, x.shape[-1], dtype=x.dtype, device=x.device).view(1, 1, 1, -1)
        mass = pos + neg
        return torch.cat([pos, pos, pos, neg, neg, mass * cx, neg, mass], dim=1)


def planted_backbone() -> nn.Module:
    return PlantedFeatures()
