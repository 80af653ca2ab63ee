"""Known answers for the reliance rankings: the probe knock-out score, spread normalisation, cell canvases."""

import numpy as np
import pytest
import torch

from poschan.data.sources import ImageSet
from poschan.errors import UserError
from poschan.locate.reliance import cell_canvases, pooled_spread, probe_knockout, spread_normalised
from poschan.measure.readout import fit_readout


def features(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel 0 codes the cell (one of 4), channel 1 is noise, channel 2 a weak copy of the cell."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.arange(n) % 4
    x = torch.stack([cells.double() * 2 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64),
                     torch.randn(n, generator=g, dtype=torch.float64),
                     cells.double() * 0.2 + torch.randn(n, generator=g, dtype=torch.float64)], 1)
    return x + 5.0, cells  # + 5: knocking a channel out (to 0) moves it far from its values


def test_probe_knockout_matches_refitting_nothing_and_zeroing_each_channel():
    train, train_cells = features(400, 0)
    test, test_cells = features(200, 1)
    scores = probe_knockout(train, train_cells, test, test_cells, seed=0)
    readout = fit_readout(train, train_cells, seed=0)

    def cross_entropy(x: torch.Tensor) -> float:
        p = readout.predict_proba(x.numpy())
        return float(-np.log(p[np.arange(len(x)), test_cells.numpy()]).mean())

    base = cross_entropy(test)
    for c in range(3):
        knocked = test.clone()
        knocked[:, c] = 0.0
        assert scores[c].item() == pytest.approx(cross_entropy(knocked) - base, rel=1e-6, abs=1e-9)
    assert scores[0] > 10 * max(scores[1].abs(), 1e-3)  # the cell channel matters, the noise channel hardly


def test_probe_knockout_needs_every_test_cell_in_training():
    train, cells = features(40, 0)
    with pytest.raises(UserError, match="cells \\[3\\]"):
        probe_knockout(train[cells < 3], cells[cells < 3], train, cells)


def test_spread_normalised_and_pooled_spread():
    x = torch.tensor([[1.0, -2.0, 3.0], [3.0, -2.0, 5.0]], dtype=torch.float64)
    magnitude, spread = pooled_spread(x)
    assert magnitude.tolist() == [2.0, 2.0, 4.0]
    assert spread.tolist() == pytest.approx([2 ** 0.5, 0.0, 2 ** 0.5])
    assert spread_normalised(torch.tensor([2.0, 5.0, 1.0], dtype=torch.float64), spread).tolist() == pytest.approx(
        [2 / 2 ** 0.5, 0.0, 1 / 2 ** 0.5])
    with pytest.raises(UserError):
        pooled_spread(x[:1])


def test_cell_canvases_place_item_i_in_cell_i_mod_9():
    items = ImageSet(torch.ones(10, 1, 28, 28), torch.zeros(10, dtype=torch.long), ("x",), (0.0,), (1.0,), "t", "t")
    canvases, cells = cell_canvases(items, 3, 96, in_chans=1, input_norm=None)
    assert cells.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 0]
    for canvas, cell in zip(canvases, cells.tolist()):
        row, col = divmod(cell, 3)
        lit = (canvas[0] > 0.5).nonzero()
        assert lit[:, 0].min() // 32 == row and lit[:, 1].min() // 32 == col and len(lit) == 28 * 28
