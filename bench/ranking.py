"""Channel ranking: (a) pooled-feature extraction through the taps vs a raw forward, (b) ranking every channel
of a layer with one streaming flip pass (poschan.ranking) vs per-channel ablation (Captum LayerFeatureAblation
when captum is installed, else the same algorithm with poschan.taps.mask_channels: zero one channel, one full
forward per channel, score = change of output logit 0), on the same Fashion-MNIST canvases, efficientnet-lite0
with its ImageNet weights, one torch thread by default. Prints throughput ratios (targets: (a) >= 0.95, (b)
speed-up >= C/4) and the peak memory of both rankings as the image count grows ×4 (peak RSS above the start,
Linux; ours must stay flat).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
from collections.abc import Callable
from pathlib import Path

import torch

from common import interleaved
from poschan.data.canvas import paste_in_grid
from poschan.data.sources import ImageSet, load_dataset
from poschan.locate.designs import RankSpec, accumulate
from poschan.locate.moments import region_cells
from poschan.models.registry import build_model
from poschan.taps import mask_channels, pooled_features

STATUS = Path("/proc/self/status")


def canvases(images: ImageSet, grid: int) -> torch.Tensor:
    """Each image in a left-column cell (row = index mod grid), as the flip ranking pastes them."""
    left = region_cells(grid)["left"].nonzero().flatten()
    cells = left[torch.arange(len(images)) % len(left)]
    side = grid * images.images.shape[-1]
    return paste_in_grid(images.images, cells, grid, torch.zeros(1, images.channels, side, side))


def ablation_scores(model: torch.nn.Module, layer: str, x: torch.Tensor, channels: int,
                    groups: int | None = None) -> torch.Tensor:
    """Per channel: mean over images of (logit 0 − logit 0 with that channel zeroed). ``groups`` < channels
    ablates only channels 0..groups−2 singly and the rest together (same forwards, fewer of them)."""
    groups = channels if groups is None else groups
    mask = torch.arange(channels).clamp_max(groups - 1)
    try:
        from captum.attr import LayerFeatureAblation
    except ImportError:
        with torch.no_grad():
            base = model(x)[:, 0]
            out = []
            for g in range(groups):
                with mask_channels(model, layer, (mask == g).nonzero().flatten()):
                    out.append((base - model(x)[:, 0]).mean())
        return torch.stack(out)[mask]
    ablator = LayerFeatureAblation(model, model.get_submodule(layer))
    with torch.no_grad():
        return ablator.attribute(x, target=0, layer_mask=mask.view(1, channels, 1, 1)).mean(0)[:, 0, 0]


def _kib(field: str) -> int:
    line = next(line for line in STATUS.read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def peak_rss_mib(fn: Callable[[], object]) -> float | None:
    """Peak resident memory while ``fn`` runs, above the resident memory before it (MiB; None off Linux)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the baseline is what is really used
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    except OSError:
        return None
    before = _kib("VmRSS")
    fn()
    return (_kib("VmHWM") - before) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layer", default="stage3", help="stage name or layer (default stage3: 112 channels)")
    ap.add_argument("--grid", type=int, default=2)
    ap.add_argument("--images", type=int, default=8, help="images for the timing and memory (then ×4)")
    ap.add_argument("--batch-size", type=int, default=8, help="images per step of the streaming ranking")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable ratios on a shared "
                                                            "machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("efficientnet-lite0", 10, pretrained=True).eval().requires_grad_(False)
    layer = f"backbone.{model.stages[args.layer]}" if args.layer in model.stages else args.layer
    data = load_dataset("fashion-mnist", "test", limit=4 * max(args.images, 64))
    spec = RankSpec("flip", grid=args.grid)

    def rank(images: ImageSet) -> None:
        accumulate(model, layer, images, spec, batch_size=args.batch_size, in_chans=3, input_norm=model.input_norm)

    # (a) the taps' early-stopping pooled extraction vs the network's own forward, same canvases
    x = canvases(data.subset(16).for_model(3, model.input_norm), args.grid)  # one short batch, many repeats

    def raw() -> None:
        with torch.no_grad():
            model(x)

    t_taps, t_raw = interleaved(lambda: pooled_features(model, x, ["backbone"]), raw, repeats=7 * args.repeats)
    print(f"(a) pooled features through the taps (backbone) {len(x) / t_taps:.0f} canvases/s, raw model(x) "
          f"{len(x) / t_raw:.0f} canvases/s: throughput ratio {t_raw / t_taps:.3f} (target >= 0.95)")

    # (b) ranking every channel: one flip pass vs one ablated forward per channel
    images = data.subset(args.images)
    channels = pooled_features(model, x[:1], [layer])[layer].shape[1]
    x_rank = canvases(images.for_model(3, model.input_norm), args.grid)
    rank(images)  # warm-up of the cheap side only: the ablation is too slow to repeat once more
    t_ours, t_ablation = interleaved(lambda: rank(images), lambda: ablation_scores(model, layer, x_rank, channels),
                                     repeats=args.repeats, warmup=0)
    backend = "captum" if _has_captum() else "plain PyTorch"
    print(f"(b) ranking {channels} channels of {layer} on {args.images} images ({args.grid}x{args.grid} canvases): "
          f"flip pass {t_ours:.2f} s, per-channel ablation ({backend}) {t_ablation:.2f} s: speed-up "
          f"{t_ablation / t_ours:.1f}x (target >= C/4 = {channels / 4:.0f}x)")
    # peak memory: the ablation's peak is reached by its first ablated forward, so 4 channel groups suffice
    for n in (args.images, 4 * args.images):
        subset = data.subset(n)
        ours = peak_rss_mib(lambda subset=subset: rank(subset))
        xs = canvases(subset.for_model(3, model.input_norm), args.grid)
        ablation = peak_rss_mib(lambda xs=xs: ablation_scores(model, layer, xs, channels, groups=4))
        fmt = (lambda v: "n/a" if v is None else f"{v:.0f} MiB")
        print(f"    peak memory at {n:>3} images: flip pass {fmt(ours)}, ablation {fmt(ablation)}")


def _has_captum() -> bool:
    try:
        import captum  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
