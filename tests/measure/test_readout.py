import pytest
import torch

from poschan.errors import UserError
from poschan.measure.readout import fit_readout, permute_features, readout_accuracy, readout_outcomes


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_permute_features_keeps_each_row_multiset_and_permutes_per_sample():
    x = torch.arange(6 * 50, dtype=torch.float32).view(6, 50)
    p = permute_features(x, generator(0))
    assert torch.equal(p.sort(dim=1).values, x)  # each row keeps its own values
    assert not torch.equal(p, x)
    assert len({tuple((p[i] - 50 * i).tolist()) for i in range(6)}) == 6  # row i holds 50i + its own permutation


def test_permute_features_is_seeded():
    x = torch.randn(4, 32, generator=generator(5))
    assert torch.equal(permute_features(x, generator(1)), permute_features(x, generator(1)))
    assert not torch.equal(permute_features(x, generator(1)), permute_features(x, generator(2)))


def test_permute_features_refuses_feature_maps():
    with pytest.raises(UserError, match=r"\(N, C\)"):
        permute_features(torch.zeros(2, 3, 4, 4), generator(0))


def blobs(n: int, seed: int, separated: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator(seed)
    y = torch.randint(4, (n,), generator=g)
    centres = torch.eye(4, 16) * (8.0 if separated else 0.0)
    return centres[y] + torch.randn(n, 16, generator=g), y


def test_readout_separates_separable_classes_and_not_label_free_features():
    readout = fit_readout(*blobs(200, 0, True), seed=0)
    assert readout_accuracy(readout, *blobs(200, 1, True)) == 1.0
    blind = fit_readout(*blobs(400, 0, False), seed=0)
    assert abs(readout_accuracy(blind, *blobs(2000, 1, False)) - 0.25) < 0.05


def test_readout_outcomes_are_the_per_row_hits_behind_the_accuracy():
    (x, y), (tx, ty) = blobs(300, 0, True), blobs(200, 1, False)  # test rows without class signal: some misses
    readout = fit_readout(x, y, seed=0)
    hits = readout_outcomes(readout, tx, ty)
    assert hits.shape == (200,) and set(hits.tolist()) == {0.0, 1.0}
    assert hits.tolist() == (readout.predict(tx.double().numpy()) == ty.numpy()).tolist()
    assert readout_accuracy(readout, tx, ty) == hits.mean() == pytest.approx(readout.score(tx.numpy(), ty.numpy()))


def test_readout_standardises_so_feature_scale_does_not_matter():
    scale = torch.logspace(-4, 4, 16)  # class signal in the tiny-scale channels 0..3
    (x, y), (tx, ty) = blobs(200, 0, True), blobs(200, 1, True)
    assert readout_accuracy(fit_readout(x * scale, y, seed=0), tx * scale, ty) == 1.0


def test_fit_readout_refuses_mismatched_shapes():
    with pytest.raises(UserError, match="features"):
        fit_readout(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long), seed=0)
