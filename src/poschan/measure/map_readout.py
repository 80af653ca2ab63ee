"""The padding-free position-map readout of Islam et al. (ICLR 2020): feature maps of frozen layers, resized and
stacked, read by per-channel standardisation, one KERNEL×KERNEL valid conv and a sigmoid (it cannot invent
position), trained with MSE towards a fixed position map; scored by SPC and MAE (``measure.position_maps``).
Control: the same readout on features whose spatial positions are shuffled per image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poschan.measure.position_maps import mae, spc
from poschan.taps import capture

KERNEL = 3  # the readout's conv (valid, padding 0), as the paper's PosENet readout


@torch.no_grad()
def resized_feature_maps(model: nn.Module, x: Tensor, layers: Sequence[str], size: int, *, batch_size: int = 64,
                   device: torch.device | str = "cpu") -> Tensor:
    """(N, ΣC, size, size): the maps of ``layers`` for images ``x``, each resized bilinearly to size², stacked."""
    chunks = []
    with capture(model, layers) as store:
        for batch in x.split(batch_size):
            model(batch.to(device))
            maps = [F.interpolate(store[name], size=(size, size), mode="bilinear", align_corners=False)
                    for name in layers]
            chunks.append(torch.cat(maps, dim=1))
    return torch.cat(chunks)


def shuffle_positions(features: Tensor, generator: torch.Generator) -> Tensor:
    """The features with their H·W positions permuted at random, independently per image (all channels alike)."""
    n, c, h, w = features.shape
    order = torch.rand(n, h * w, generator=generator).argsort(dim=1).to(features.device)
    flat = features.reshape(n, c, h * w)
    return flat.gather(2, order[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)


class MapReadout(nn.Module):
    """Per-channel standardisation, one KERNEL×KERNEL conv with padding 0 (one output per target), sigmoid.

    Output channels do not share parameters, so with a loss summed over targets (and Adam's per-parameter
    steps) training all targets at once equals training one readout per target on the same samples.
    """

    def __init__(self, mean: Tensor, std: Tensor, outputs: int, generator: torch.Generator):
        super().__init__()
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))
        self.conv = nn.Conv2d(len(mean), outputs, KERNEL, padding=0, device=mean.device)
        with torch.no_grad():
            w = torch.empty(self.conv.weight.shape)
            nn.init.xavier_uniform_(w, generator=generator)  # as the paper's readout
            self.conv.weight.copy_(w)
            self.conv.bias.zero_()

    def standardise(self, features: Tensor) -> Tensor:
        return (features - self.mean) / self.std

    def forward(self, features: Tensor) -> Tensor:
        """(N, T, H-KERNEL+1, W-KERNEL+1) maps in (0, 1) for (N, C, H, W) features."""
        return torch.sigmoid(self.conv(self.standardise(features)))

    def forward_patches(self, patches: Tensor) -> Tensor:
        """(S, T): what ``forward`` outputs at the windows given as standardised (S, KERNEL, KERNEL, C) patches."""
        weight = self.conv.weight.permute(0, 2, 3, 1).reshape(len(self.conv.weight), -1)
        return torch.sigmoid(patches.reshape(len(patches), -1) @ weight.T + self.conv.bias)


def fit_map_readout(features: Tensor, maps: Tensor, *, steps: int, batch_pixels: int, lr: float,
                    generator: torch.Generator) -> MapReadout:
    """A MapReadout trained with Adam on MSE to output ``maps`` (T, h, w) (its output size) for every image.

    Each step uses ``batch_pixels`` random (image, output pixel) samples, gathered as patches of the
    standardised features: the same objective as convolving whole maps, but as the pixels of one image are
    strongly correlated, random pixels of many images make better steps per unit of compute (on a CPU, a better
    fit than whole-map batches in the same time).
    """
    n, c, h, w = features.shape
    readout = MapReadout(features.mean(dim=(0, 2, 3)), features.std(dim=(0, 2, 3)).clamp(min=1e-6), len(maps),
                         generator)
    out_h, out_w = h - KERNEL + 1, w - KERNEL + 1
    if maps.shape[-2:] != (out_h, out_w):
        raise ValueError(f"maps must be {out_h}x{out_w} (the readout's output size), got {tuple(maps.shape[-2:])}")
    flat = readout.standardise(features).permute(0, 2, 3, 1).reshape(-1, c)  # one row per (image, y, x)
    maps = maps.to(features.device)
    window = torch.arange(KERNEL, device=features.device)
    opt = torch.optim.Adam(readout.parameters(), lr=lr)
    for _ in range(steps):
        image, y, x = (torch.randint(size, (batch_pixels,), generator=generator).to(features.device)
                       for size in (n, out_h, out_w))
        rows = (image[:, None, None] * h + y[:, None, None] + window[:, None]) * w + x[:, None, None] + window
        patches = flat.index_select(0, rows.reshape(-1)).view(batch_pixels, KERNEL, KERNEL, c)
        loss = F.mse_loss(readout.forward_patches(patches), maps[:, y, x].T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return readout.eval()


def readout_size(feature_size: int) -> int:
    """Side of the readout's output map (a valid KERNEL×KERNEL conv)."""
    return feature_size - KERNEL + 1


def image_scores(pred: Tensor, maps: Tensor) -> Tensor:
    """(T, N, 2) on the CPU: per target and image of ``pred`` (N, T, h, w), (SPC, MAE) against ``maps`` (T, h, w)."""
    maps = maps.to(pred.device)
    return torch.stack([torch.stack([spc(pred[:, t], maps[t]), mae(pred[:, t], maps[t]).float().cpu()], dim=1)
                        for t in range(len(maps))])


def score(pred: Tensor, maps: Tensor) -> list[tuple[float, float]]:
    """Per target: (SPC, MAE) averaged over the images (the means of :func:`image_scores`)."""
    return [(spc_mean, mae_mean) for spc_mean, mae_mean in image_scores(pred, maps).mean(dim=1).tolist()]
