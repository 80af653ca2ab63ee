import pytest
import torch
import torch.nn.functional as F

from poschan.control.augshift import AugShiftLoss
from poschan.data.shift_pairs import ShiftPairStream, ShiftPairTransform
from poschan.data.sources import ImageSet
from poschan.engine import fit
from poschan.errors import UserError
from poschan.models.registry import build_model
from poschan.runtime import seeded_generator
from poschan.taps import forward_with_latent


def _images(b=6, c=2, h=7, w=9, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _expected_view(image, offset, shift):
    """Independent reference: the image centred on a zero S x S canvas, then the s x s window at offset."""
    c, h, w = image.shape
    canvas = torch.zeros(c, shift.canvas, shift.canvas)
    top, left = (shift.canvas - h) // 2, (shift.canvas - w) // 2
    canvas[:, top:top + h, left:left + w] = image
    t, l = (int(v) for v in offset)
    return canvas[:, t:t + shift.crop, l:l + shift.crop]


def test_each_view_is_the_image_shifted_by_its_recorded_offset():
    shift = ShiftPairTransform(crop=12, canvas=16)
    images = _images()
    v1, v2, o1, o2 = shift(images, torch.Generator().manual_seed(3))
    assert v1.shape == v2.shape == (6, 2, 12, 12) and o1.shape == o2.shape == (6, 2)
    assert not torch.equal(o1, o2)
    for b in range(6):
        assert torch.equal(v1[b], _expected_view(images[b], o1[b], shift))
        assert torch.equal(v2[b], _expected_view(images[b], o2[b], shift))


def test_offsets_cover_the_whole_range_and_are_seeded():
    shift = ShiftPairTransform(crop=32)
    assert shift.canvas == 37 and ShiftPairTransform(224).canvas == 256
    o = shift.draw(2000, torch.Generator().manual_seed(0))
    assert int(o.min()) == 0 and int(o.max()) == shift.max_offset == 5
    images = _images()
    a = shift(images, torch.Generator().manual_seed(1))
    b = shift(images, torch.Generator().manual_seed(1))
    c = shift(images, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[2], c[2])
    assert torch.equal(shift.centre(3), torch.full((3, 2), 2))


def test_bad_geometry_is_a_user_error():
    with pytest.raises(UserError, match="canvas"):
        ShiftPairTransform(crop=32, canvas=30)
    with pytest.raises(UserError, match="do not fit"):
        ShiftPairTransform(crop=8, canvas=10).place(torch.zeros(1, 1, 12, 12))


def _image_set(n=10, side=8):
    images = torch.randn(n, 1, side, side, generator=torch.Generator().manual_seed(0))
    return ImageSet(images, torch.arange(n) % 3, ("a", "b", "c"), (0.0,), (1.0,), "toy", "train")


def test_stream_batches_are_a_pure_function_of_seed_epoch_batch():
    shift = ShiftPairTransform(crop=10, canvas=14)
    stream = ShiftPairStream(_image_set(), shift, batch_size=4, seed=5)
    first, again = list(stream.epoch(1)), list(stream.epoch(1))
    assert len(stream) == len(first) == 3
    assert all(torch.equal(x, y) and torch.equal(a, b) for (x, a), (y, b) in zip(first, again))
    x, y = first[0]
    assert x.shape == (8, 1, 10, 10) and y.shape == (4,)
    assert not torch.equal(x, list(stream.epoch(2))[0][0])
    centre = ShiftPairStream(_image_set(), shift, batch_size=4, seed=5, pairs=False)
    xc, yc = next(iter(centre.epoch(1)))
    assert xc.shape == (4, 1, 10, 10) and torch.equal(yc, y)  # same seed: same image order
    ordered = ShiftPairStream(_image_set(), shift, batch_size=4, seed=5, pairs=False, shuffle=False)
    xo, _ = next(iter(ordered.epoch(0)))
    assert all(torch.equal(xo[b], _expected_view(_image_set().images[b], (2, 2), shift)) for b in range(4))


def _model():
    torch.manual_seed(0)
    return build_model("resnet18-paper", 5, 1, width=4).eval()


def test_forward_with_latent_is_one_forward_giving_logits_and_pooled():
    model, x = _model(), torch.randn(4, 1, 16, 16)
    logits, z = forward_with_latent(model, x)
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-6)
        assert torch.allclose(z, model.pooled(x), atol=1e-6)


def test_loss_with_lambda_zero_is_ce_on_both_views():
    model, x, y = _model(), torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 4])
    logits = model(x)
    expected = F.cross_entropy(logits[:3], y) + F.cross_entropy(logits[3:], y)
    assert torch.allclose(AugShiftLoss(lam=0.0).training_loss(model, x, y), expected, atol=1e-6)


def test_latent_term_is_zero_for_identical_views_and_matches_mse_otherwise():
    model, v, y = _model(), torch.randn(3, 1, 16, 16), torch.tensor([0, 1, 4])
    same = torch.cat([v, v])
    assert torch.allclose(AugShiftLoss(lam=10.0).training_loss(model, same, y), 2 * F.cross_entropy(model(v), y), atol=1e-6)
    x = torch.cat([v, torch.roll(v, 3, dims=-1)])
    z1, z2 = model.pooled(x).chunk(2)
    l1 = model(x)[:3]
    for latent, (a, b) in (("mse", (z1, z2)), ("normalized-mse", (F.normalize(z1), F.normalize(z2)))):
        loss = AugShiftLoss(lam=2.0, ce="first", latent=latent).training_loss(model, x, y)
        expected = F.cross_entropy(l1, y) + 2.0 * ((a - b) ** 2).mean()
        assert float((a - b).detach().abs().max()) > 1e-4
        assert torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"lam": -1.0}, {"lam": float("nan")}, {"ce": "second"}, {"latent": "l1"}])
def test_bad_loss_settings_are_user_errors(kwargs):
    with pytest.raises(UserError):
        AugShiftLoss(**kwargs)


def test_one_backbone_forward_per_training_step():
    shift = ShiftPairTransform(crop=10, canvas=14)
    stream = ShiftPairStream(_image_set(12), shift, batch_size=4, seed=0)
    model = build_model("resnet18-paper", 3, 1, width=4)
    calls = []
    model.backbone.register_forward_hook(lambda m, i, out: calls.append(len(out)))
    fit(model, stream, epochs=1, loss_fn=AugShiftLoss(lam=1.0).training_loss, progress=False)
    assert calls == [8, 8, 8]  # 3 steps, each ONE forward of the 2B = 8 concatenated views
    with pytest.raises(UserError, match="2B views"):
        AugShiftLoss().training_loss(model, torch.zeros(3, 1, 10, 10), torch.zeros(3, dtype=torch.long))


def test_seeded_generator_depends_on_every_key():
    draw = [torch.rand(1, generator=seeded_generator(*k)).item() for k in ((0, 1, 2), (0, 1, 2), (0, 2, 1), (1, 1, 2))]
    assert draw[0] == draw[1] and len(set(draw)) == 3
