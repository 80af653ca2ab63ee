"""Which channels of a named layer encode position: three channel rankings from ONE streaming pass.

Every method forms, per image, a few inputs (its *views*), takes the layer's globally average-pooled features
through the taps, and adds them to running per-channel statistics. Memory is O(C) (shift: O(C·k²)) whatever
the number of images. Statistics are float64 and mergeable: plain sums for the flip differences, and counts,
means and sums of squared deviations (co-deviations for pairs) merged batch by batch with the pairwise
updates of Chan, Golub & LeVeque (1979), so scores do not depend on the batch size beyond float64 rounding.
Per-image random draws (cells, partners, signs) are made up front from ``seed`` and indexed by the image's
position in the stream (a few integers per image), so they do not depend on the batch size either.
Under torchrun each rank takes every world-th batch, and the ranks' statistics are merged (poschan.distributed):
the same scores as one process, up to float64 rounding.
Cells are numbered row-major (row, col = divmod(cell, k)); "left" means a cell centre left of the vertical
midline, "top" above the horizontal one (image y grows downwards).

flip (Islam et al., ICCV 2021, as in their released code), sign convention:
  x has its content in the LEFT half. Canvas input: the image pasted in a random cell whose centre lies left of
  the vertical midline (any row). Image input (photos as they are): "left" is the layout of the original image,
  "right" that of its mirror. Δh = f(x) − f(hflip x) per channel;
  ``overall`` = mean |Δh| (the paper's score), ``left`` = mean Δh (large: fires more when the content is on the
  left), ``right`` = −mean Δh. Likewise x_v has its content in the TOP half (canvas: a random cell above the
  midline, any column; image input: the image itself), Δv = f(x_v) − f(vflip x_v); ``top`` = mean Δv,
  ``bottom`` = −mean Δv.
  Null: x_i is paired with the mirror of the previous image of the stream (the first with the last) and the
  difference gets a random sign s_i: overall_null = mean |f(x_i) − f(flip x_{i−1})| (the scale of differences
  between unrelated images: an ``overall`` top list that matches the null's merely picks channels of large
  spread), signed nulls = mean s_i·(f(x_i) − f(flip x_{i−1})) (≈ 0: the noise level of the signed scores).

shift (ours): every image is pasted in every cell j of the k×k grid. Per cell and channel the standardised
  mean difference (Cohen's d) d_j = (m_in − m_out) / s_p, where m_in is the mean pooled value over canvases
  with the content in cell j, m_out over canvases with the content in any other cell, and
  s_p = sqrt((SS_in + SS_out) / (n_in + n_out − 2)) the pooled within-group standard deviation (SS = sum of
  squared deviations from the group's own mean; s_p is floored at 1e-12, so a perfect cell indicator scores
  huge rather than infinite). Keys: ``cell:j``; each region of REGIONS (the group is the cells whose centre
  lies in the region; q1..q4 = top-left, top-right, bottom-left, bottom-right; center = centre inside the
  middle half of both axes; empty regions are left out); ``overall`` = mean over cells of |d_j|.
  Null: per image a random permutation of the cell labels.

dimest (Esser et al., CVPR 2020, as used by Islam et al., ICLR 2021): per image i three canvases,
  A = image i at cell u_i, P = the previous image of the stream at the same cell u_i, S = image i ("item"), or
  a random other image of its class ("class"), at a cell w_i ≠ u_i. (A, P) share position, (A, S) semantics.
  Per factor f: c_f,d = mean over pairs (a_d − μ_f,d)(b_d − μ_f,d) with the joint mean μ_f = (mean a + mean b)/2,
  V = Σ_d variance_d over all pair members (A, a member of both its pairs, counts twice), s_f = Σ_d c_f,d / V;
  softmax over [s_position, s_semantic, 1.0 (residual)] → N_f = floor(softmax_f · C), residual = C − the others.
  Per-channel scores c_f,d / V (keys ``position``, ``semantic``). Note: a factor with s_f = 0 still receives
  floor(C / (2 + e)) ≈ 21% of the channels; the null shows that floor.
  Null: A_i is paired with P and S of the previous image (unrelated content and, independently drawn, cells).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import reduce
from typing import Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from poschan.data.canvas import canvas_side, hflip, make_background, paste_in_grid, vflip
from poschan.data.sources import ImageSet
from poschan.distributed import gather_in_order, merge, shard
from poschan.errors import UserError
from poschan.locate.moments import CoMoments, DiffSums, Moments, dimension_counts, region_cells, standardised_difference
from poschan.runtime import eval_mode
from poschan.taps import pooled_features

METHODS = ("flip", "shift", "dimest")
FLIP_INPUTS = ("canvas", "image")
SEMANTIC_PAIRS = ("item", "class")
BACKGROUNDS = ("mean", "black")  # deterministic fills: a canvas must not depend on the batch it is drawn in
REGIONS = ("left", "right", "top", "bottom", "center", "q1", "q2", "q3", "q4")
MIN_IMAGES = 3  # the nulls pair an image with the one before; dimest's null needs images i, i−1 and i−2 distinct
_V_FLOOR = 1e-300


# ---- per-method statistics ---------------------------------------------------------------------------------

@dataclass
class FlipStats:
    horizontal: DiffSums
    vertical: DiffSums

    @classmethod
    def zero(cls, channels: int) -> FlipStats:
        return cls(DiffSums.zero(channels), DiffSums.zero(channels))

    def __add__(self, other: FlipStats) -> FlipStats:
        return FlipStats(self.horizontal + other.horizontal, self.vertical + other.vertical)

    def scores(self) -> dict[str, Tensor]:
        h, v = self.horizontal, self.vertical
        return {"overall": h.mean_abs, "left": h.mean, "right": -h.mean, "top": v.mean, "bottom": -v.mean}


@dataclass
class ShiftStats:
    cells: list[Moments]  # one per cell label, row-major
    grid: int

    @classmethod
    def zero(cls, channels: int, grid: int) -> ShiftStats:
        return cls([Moments.zero(channels) for _ in range(grid * grid)], grid)

    def __add__(self, other: ShiftStats) -> ShiftStats:
        return ShiftStats([a + b for a, b in zip(self.cells, other.cells)], self.grid)

    def _selectivity(self, mask: Tensor) -> Tensor:
        inside = reduce(Moments.__add__, [m for m, keep in zip(self.cells, mask.tolist()) if keep])
        outside = reduce(Moments.__add__, [m for m, keep in zip(self.cells, mask.tolist()) if not keep])
        return standardised_difference(inside, outside)

    def cell_scores(self) -> Tensor:
        """(k², C) selectivity of every channel for every cell."""
        eye = torch.eye(len(self.cells), dtype=torch.bool)
        return torch.stack([self._selectivity(eye[j]) for j in range(len(self.cells))])

    def scores(self) -> dict[str, Tensor]:
        cells = self.cell_scores()
        out = {"overall": cells.abs().mean(0)}
        for name, mask in region_cells(self.grid).items():
            if 0 < int(mask.sum()) < mask.numel():
                out[name] = self._selectivity(mask)
        return out | {f"cell:{j}": cells[j] for j in range(len(cells))}


@dataclass
class DimEstStats:
    position: CoMoments
    semantic: CoMoments
    total: Moments  # every pair member

    @classmethod
    def zero(cls, channels: int) -> DimEstStats:
        return cls(CoMoments.zero(channels), CoMoments.zero(channels), Moments.zero(channels))

    def __add__(self, other: DimEstStats) -> DimEstStats:
        return DimEstStats(self.position + other.position, self.semantic + other.semantic, self.total + other.total)

    def scores(self) -> dict[str, Tensor]:
        v = float(self.total.variance.sum())
        return {"position": self.position.joint_mean_covariance() / max(v, _V_FLOOR),
                "semantic": self.semantic.joint_mean_covariance() / max(v, _V_FLOOR)}

    def dims(self) -> dict:
        s = self.scores()
        return dimension_counts(float(s["position"].sum()), float(s["semantic"].sum()), s["position"].numel())


Stats = FlipStats | ShiftStats | DimEstStats


@dataclass
class Tally:
    """The statistics of real pairs and of the shuffled null, both mergeable (``+``) across passes."""

    real: Stats
    null: Stats

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.real + other.real, self.null + other.null)


# ---- what to feed the network ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RankSpec:
    """A ranking method and its inputs (see the module doc)."""

    method: str = "flip"
    grid: int = 3
    canvas: int | None = None
    background: str = "mean"
    flip_input: str = "canvas"
    semantic_pairs: str = "item"

    def validate(self) -> None:
        for value, allowed, what in ((self.method, METHODS, "method"), (self.flip_input, FLIP_INPUTS, "flip input"),
                                     (self.semantic_pairs, SEMANTIC_PAIRS, "semantic pairs"),
                                     (self.background, BACKGROUNDS, "background")):
            if value not in allowed:
                raise UserError(f"unknown {what} {value!r} for ranking; allowed: {', '.join(allowed)}")
        if self.uses_canvas and self.grid < 2:
            raise UserError(f"{self.method} ranking needs a grid of at least 2×2 cells, got grid {self.grid}")

    @property
    def uses_canvas(self) -> bool:
        return not (self.method == "flip" and self.flip_input == "image")


class _Items:
    """Images of the set by index, as the model takes them, and pasted into grid cells."""

    def __init__(self, images: ImageSet, spec: RankSpec, in_chans: int | None,
                 input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None, device: torch.device | str):
        self.images, self.spec, self.device = images, spec, device
        self.in_chans = images.channels if in_chans is None else in_chans
        self.input_norm = input_norm
        ref = self._set(torch.arange(1))
        self.side = canvas_side(spec.grid, max(images.images.shape[-2:]), spec.canvas) if spec.uses_canvas else 0
        self.background = (make_background(spec.background, 1, self.in_chans, self.side, mean=ref.mean, std=ref.std,
                                           device=device) if spec.uses_canvas else None)

    def _set(self, index: Tensor) -> ImageSet:
        sub = dataclasses.replace(self.images, images=self.images.images[index], labels=self.images.labels[index])
        return sub.for_model(self.in_chans, self.input_norm)

    def __call__(self, index: Tensor) -> Tensor:
        """(B, in_chans, h, w) images ``index`` of the set, re-normalised for the model, on the device."""
        return self._set(index).images.to(self.device)

    def canvas(self, index: Tensor, cells: Tensor) -> Tensor:
        """Images ``index`` pasted in ``cells`` of the grid."""
        return paste_in_grid(self(index), cells, self.spec.grid, self.background)


class _Previous:
    """Pairs the a-side of stream item i with the b-side of item i − 1 (item 0 with the last): inside a batch at
    once, across batches at the close from each batch's first a-side and last b-side, so that batches may come in
    any order or be shared among ranks."""

    def __init__(self):
        self._ends: list[tuple[int, tuple[Tensor, Tensor, Tensor]]] = []

    def pairs(self, pos: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(positions of the a-sides, a-sides, their partners) of the pairs inside this batch."""
        self._ends.append((int(pos[0]), (pos[:1], a[:1], b[-1:])))
        return pos[1:], a[1:], b[:-1]

    def closing(self) -> tuple[Tensor, Tensor, Tensor]:
        """The pairs across batches (every rank's): each batch's first item with the last of the batch before,
        the first batch's with the last item of the stream."""
        pos, a, last_b = (torch.cat(side) for side in zip(*gather_in_order(self._ends)))
        return pos, a, last_b.roll(1, dims=0)


def _choose(mask: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` cells drawn uniformly among those where ``mask`` is true."""
    allowed = mask.nonzero().flatten()
    return allowed[torch.randint(len(allowed), (n,), generator=generator)]


class _Design(Protocol):
    views: int

    def inputs(self, pos: Tensor) -> Tensor: ...

    real: Stats | None
    null: Stats | None

    def update(self, pos: Tensor, feats: Tensor) -> None: ...

    def closing(self) -> Stats | None: ...  # the null's pairs across batches (a collective under torchrun)


class _Flip:
    def __init__(self, items: _Items, order: Tensor, generator: torch.Generator):
        n, spec = len(order), items.spec
        self.items, self.order, self.image_input = items, order, spec.flip_input == "image"
        if not self.image_input:
            regions = region_cells(spec.grid)
            self.cell_h, self.cell_v = _choose(regions["left"], n, generator), _choose(regions["top"], n, generator)
        self.sign = torch.randint(2, (n,), generator=generator).double() * 2 - 1
        self.views = 3 if self.image_input else 4
        self.pairing = (_Previous(), _Previous())
        self.real = self.null = None

    def inputs(self, pos: Tensor) -> Tensor:
        index = self.order[pos]
        if self.image_input:
            x = self.items(index)
            return torch.cat([x, hflip(x), vflip(x)])
        xh, xv = self.items.canvas(index, self.cell_h[pos]), self.items.canvas(index, self.cell_v[pos])
        return torch.cat([xh, hflip(xh), xv, vflip(xv)])

    def update(self, pos: Tensor, feats: Tensor) -> None:
        f = feats.view(self.views, len(pos), -1)
        pairs = ((f[0], f[1]), (f[0], f[2])) if self.image_input else ((f[0], f[1]), (f[2], f[3]))
        if self.real is None:
            self.real, self.null = FlipStats.zero(f.shape[-1]), FlipStats.zero(f.shape[-1])
        self.real += FlipStats(*(DiffSums.of(a - b) for a, b in pairs))
        self.null += FlipStats(*(self._null(*pairing.pairs(pos, a, b)) for pairing, (a, b) in zip(self.pairing, pairs)))

    def _null(self, pos: Tensor, a: Tensor, b: Tensor) -> DiffSums:
        return DiffSums.of(self.sign[pos, None] * (a - b))

    def closing(self) -> FlipStats:
        return FlipStats(*(self._null(*p.closing()) for p in self.pairing))


class _Shift:
    def __init__(self, items: _Items, order: Tensor, generator: torch.Generator):
        self.items, self.order, self.cells = items, order, items.spec.grid ** 2
        self.views = self.cells
        self.null_labels = torch.rand(len(order), self.cells, generator=generator).argsort(1)
        self.real = self.null = None

    def inputs(self, pos: Tensor) -> Tensor:
        index = self.order[pos].repeat_interleave(self.cells)
        return self.items.canvas(index, torch.arange(self.cells).repeat(len(pos)))

    def update(self, pos: Tensor, feats: Tensor) -> None:
        f = feats.view(len(pos), self.cells, -1)
        if self.real is None:
            self.real, self.null = (ShiftStats.zero(f.shape[-1], self.items.spec.grid) for _ in range(2))
        labels = self.null_labels[pos]
        self.real += ShiftStats([Moments.of(f[:, j]) for j in range(self.cells)], self.real.grid)
        self.null += ShiftStats([Moments.of(f[labels == j]) for j in range(self.cells)], self.real.grid)

    def closing(self) -> None:
        return None


class _DimEst:
    views = 3

    def __init__(self, items: _Items, order: Tensor, generator: torch.Generator):
        n, cells = len(order), items.spec.grid ** 2
        self.items, self.order = items, order
        self.cell_u = torch.randint(cells, (n,), generator=generator)
        self.cell_w = (self.cell_u + torch.randint(1, cells, (n,), generator=generator)) % cells
        self.previous = order.roll(1)
        self.semantic = (order if items.spec.semantic_pairs == "item"
                         else _same_class_partners(items.images.labels, order, generator))
        self.pairing = (_Previous(), _Previous())
        self.real = self.null = None

    def inputs(self, pos: Tensor) -> Tensor:
        u = self.cell_u[pos]
        return torch.cat([self.items.canvas(self.order[pos], u), self.items.canvas(self.previous[pos], u),
                          self.items.canvas(self.semantic[pos], self.cell_w[pos])])

    def update(self, pos: Tensor, feats: Tensor) -> None:
        a, p, s = feats.view(3, len(pos), -1)
        if self.real is None:
            self.real, self.null = DimEstStats.zero(a.shape[-1]), DimEstStats.zero(a.shape[-1])
        self.real += _dimest(a, p, a, s)
        (_, a1, p1), (_, a2, s2) = (pairing.pairs(pos, a, b) for pairing, b in zip(self.pairing, (p, s)))
        self.null += _dimest(a1, p1, a2, s2)

    def closing(self) -> DimEstStats:
        (_, a1, p1), (_, a2, s2) = (pairing.closing() for pairing in self.pairing)
        return _dimest(a1, p1, a2, s2)


def _dimest(a_pos: Tensor, b_pos: Tensor, a_sem: Tensor, b_sem: Tensor) -> DimEstStats:
    return DimEstStats(CoMoments.of(a_pos, b_pos), CoMoments.of(a_sem, b_sem),
                       Moments.of(torch.cat([a_pos, b_pos, a_sem, b_sem])))


def _same_class_partners(labels: Tensor, order: Tensor, generator: torch.Generator) -> Tensor:
    """For each image order[p], a random OTHER image of its class (itself when it is alone in its class)."""
    own = labels[order]
    partners = order.clone()
    for label in own.unique().tolist():
        members = (labels == label).nonzero().flatten()
        at = (own == label).nonzero().flatten()
        if len(members) < 2:
            continue
        self_rank = torch.searchsorted(members, order[at])
        r = torch.randint(len(members) - 1, (len(at),), generator=generator)
        partners[at] = members[r + (r >= self_rank).long()]
    return partners


_DESIGNS = {"flip": _Flip, "shift": _Shift, "dimest": _DimEst}


# ---- the pass ----------------------------------------------------------------------------------------------

@torch.no_grad()
def accumulate(model: nn.Module, layer: str, images: ImageSet, spec: RankSpec, *, seed: int = 0,
               batch_size: int = 64, device: torch.device | str = "cpu", in_chans: int | None = None,
               input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
               progress: bool = False) -> Tally:
    """One pass of ``spec.method`` over ``images`` (in an order drawn with ``seed``): the statistics of the real
    and of the null pairs of ``layer``'s pooled features (``model`` already on ``device``). ``batch_size`` images
    per step (each gives 4 (flip; 3 with image input), k² (shift) or 3 (dimest) inputs); ``in_chans`` and
    ``input_norm`` re-normalise the images for the model batch by batch (see ImageSet.for_model).
    Scores: ``tally.real.scores()``, ``tally.null.scores()``."""
    spec.validate()
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    n = len(images)
    if n < MIN_IMAGES:
        raise UserError(f"ranking needs at least {MIN_IMAGES} images, got {n} ({images.name}, {images.split})")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    design: _Design = _DESIGNS[spec.method](_Items(images, spec, in_chans, input_norm, device), order, generator)
    with eval_mode(model):
        for _, start in shard(tqdm(range(0, n, batch_size), desc=f"rank {spec.method}", leave=False,
                                   disable=None if progress else True)):
            pos = torch.arange(start, min(start + batch_size, n))
            feats = pooled_features(model, design.inputs(pos), [layer])[layer]
            design.update(pos, feats.detach().cpu().double())
    return _close(design)


def _close(design: _Design) -> Tally:
    """The pass's statistics: every rank's batches merged in rank order, then the null's pairs across batches."""
    closing = design.closing()
    parts = [Tally(real, null) for real, null in merge((design.real, design.null)) if real is not None]
    total = reduce(Tally.__add__, parts)
    return Tally(total.real, total.null + closing) if closing is not None else total
