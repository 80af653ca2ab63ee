"""CanvasStream and TensorStream: deterministic epochs, correct labels, random flips, validation."""

import pytest
import torch
from tests.data.flips import flipped_samples, half_flipped

from poschan.data.canvas import crop
from poschan.data.sources import load_dataset
from poschan.data.stream import CanvasStream, TensorStream
from poschan.errors import UserError
from poschan.runtime import seeded_generator


@pytest.fixture(scope="module")
def data():
    return load_dataset("fashion-mnist", "test", limit=200)


def _all(stream: CanvasStream, epoch: int, **kw) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(stream.epoch(epoch, **kw))


def _cell_crops(x: torch.Tensor, cells: torch.Tensor, grid: int, size: int) -> torch.Tensor:
    cell = x.shape[-1] // grid
    offsets = torch.stack([cells // grid, cells % grid], 1) * cell + (cell - size) // 2
    return crop(x, offsets, size)


def test_same_seed_and_epoch_give_identical_batches(data):
    a = _all(CanvasStream(data, "location", 3, 48, seed=5, background="noise"), 2)
    b = _all(CanvasStream(data, "location", 3, 48, seed=5, background="noise"), 2)
    assert len(a) == 5 and all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))


def test_epochs_and_seeds_redraw_positions(data):
    stream = CanvasStream(data, "location", 3, 200, seed=5, shuffle=False)
    (x0, y0), = _all(stream, 0)
    (x1, y1), = _all(stream, 1)
    (_, z0), = _all(CanvasStream(data, "location", 3, 200, seed=6, shuffle=False), 0)
    assert (y0 != y1).float().mean() > 0.7 and (y0 != z0).float().mean() > 0.7  # 8/9 expected


def test_location_labels_name_the_cell_holding_the_image(data):
    stream = CanvasStream(data, "location", 3, 64, seed=0, shuffle=False, background="photo")
    assert stream.side == 84 and stream.num_classes == 9 and stream.chance == pytest.approx(1 / 9)
    seen = 0
    for x, y in stream.epoch(0):
        assert x.shape[1:] == (1, 84, 84) and y.dtype == torch.int64
        assert y.min() >= 0 and y.max() < 9
        assert torch.equal(_cell_crops(x, y, 3, 28), data.images[seen:seen + len(y)])
        seen += len(y)
    assert seen == 200


def test_semantic_labels_are_the_source_labels(data):
    stream = CanvasStream(data, "semantic", 4, 50, seed=1, canvas=120, channels=3)
    assert stream.num_classes == 10 and stream.chance == pytest.approx(0.1) and stream.side == 120
    batches = _all(stream, 0)
    labels = torch.cat([y for _, y in batches])
    assert batches[0][0].shape == (50, 3, 120, 120)
    assert not torch.equal(labels, data.labels)  # shuffled ...
    assert torch.equal(labels.sort().values, data.labels.sort().values)  # ... a permutation of the labels
    ordered = CanvasStream(data, "semantic", 4, 50, seed=1, shuffle=False)
    assert torch.equal(torch.cat([y for _, y in ordered.epoch(0)]), data.labels)


def test_last_partial_batch_and_resume_from_a_batch(data):
    stream = CanvasStream(data, "location", 2, 48, seed=3)
    full = _all(stream, 4)
    assert len(stream) == 5 and [len(y) for _, y in full] == [48, 48, 48, 48, 8]
    resumed = _all(stream, 4, start_batch=3)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(full[3:], resumed, strict=True))


@pytest.mark.parametrize("kw, match", [
    (dict(task="where"), "task"),
    (dict(background="white"), "background"),
    (dict(batch_size=0), "batch_size"),
    (dict(grid=0), "grid"),
    (dict(canvas=80), "does not fit"),
    (dict(channels=2), "channels"),
    (dict(seed=-1), "seed"),
])
def test_invalid_configuration(data, kw, match):
    args = dict(data=data, task="location", grid=3, batch_size=8, seed=0) | kw
    with pytest.raises(UserError, match=match):
        CanvasStream(**args)


def test_invalid_epoch_arguments(data):
    stream = CanvasStream(data, "location", 3, 8, seed=0)
    with pytest.raises(UserError, match="epoch"):
        stream.epoch(-1)
    with pytest.raises(UserError, match="start_batch"):
        stream.epoch(0, start_batch=len(stream) + 1)


def test_tensor_stream_is_a_seeded_permutation_per_epoch():
    x, y = torch.arange(10).float().view(10, 1), torch.arange(10)
    stream = TensorStream(x, y, batch_size=4, seed=3)
    first = [b for b in stream.epoch(0)]
    assert len(stream) == len(first) == 3
    seen = torch.cat([yy for _, yy in first])
    assert sorted(seen.tolist()) == list(range(10)) and all(torch.equal(xx.view(-1).long(), yy) for xx, yy in first)
    assert torch.equal(seen, torch.cat([yy for _, yy in stream.epoch(0)]))
    assert not torch.equal(seen, torch.cat([yy for _, yy in stream.epoch(1)]))
    with pytest.raises(UserError):
        TensorStream(x, y[:3], batch_size=4, seed=0)


@pytest.fixture(scope="module")
def pairs():
    """Random images (N, 3, 8, 8) and masks (N, 8, 8)."""
    generator = seeded_generator(11)
    return torch.randn(400, 3, 8, 8, generator=generator), torch.randint(0, 5, (400, 8, 8), generator=generator)


def test_tensor_stream_without_hflip_is_the_seeded_order_split_into_batches(pairs):
    x, y = pairs
    order = torch.randperm(len(x), generator=seeded_generator(3, 2))
    for hflip in ({}, {"hflip": False}):
        batches = list(TensorStream(x, y, 48, seed=3, **hflip).epoch(2))
        assert len(batches) == 9
        assert all(torch.equal(bx, x[i]) and torch.equal(by, y[i]) for (bx, by), i in zip(batches, order.split(48)))


def test_tensor_stream_hflip_mirrors_about_half_the_samples_image_and_mask_together(pairs):
    plain = TensorStream(*pairs, batch_size=16, seed=5)
    flipped = TensorStream(*pairs, batch_size=16, seed=5, hflip=True)
    flips = [flipped_samples(p, f) for p, f in zip(plain.epoch(1), flipped.epoch(1), strict=True)]
    assert all(0 < int(f.sum()) < len(f) for f in flips)  # a coin per sample, not per batch
    assert half_flipped(int(torch.cat(flips).sum()), len(pairs[0]))


def test_tensor_stream_hflip_batches_are_a_pure_function_of_seed_epoch_batch(pairs):
    full = list(TensorStream(*pairs, batch_size=48, seed=7, hflip=True).epoch(3))
    resumed = list(TensorStream(*pairs, batch_size=48, seed=7, hflip=True).epoch(3, start_batch=6))
    assert len(full) == 9 and len(resumed) == 3
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(full[6:], resumed))


def test_tensor_stream_hflip_needs_masks_as_wide_as_the_images():
    with pytest.raises(UserError, match="hflip"):
        TensorStream(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), 2, seed=0, hflip=True)
