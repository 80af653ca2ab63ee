"""poschan.pgd.masked_pgd on a seeded toy conv net: the region and budget constraints hold exactly, and it attacks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poschan.control.pgd import masked_pgd
from poschan.data.regions import region_mask
from poschan.errors import UserError

EPS = 0.1
SIDE = 16


def toy_model() -> nn.Module:
    model = nn.Conv2d(1, 3, 3, padding=1)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def toy_batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(n, 1, SIDE, SIDE, generator=g)
    labels = torch.randint(0, 3, (n, SIDE, SIDE), generator=g)
    return images, labels


def region_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, region: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(images), labels, reduction="none")[:, region].mean())


def attack(model, images, labels, region, seed: int = 2, **kwargs):
    kwargs = {"eps": EPS, "steps": 10, "generator": torch.Generator().manual_seed(seed), **kwargs}
    return masked_pgd(model, images, labels, region, **kwargs)


def test_perturbation_confined_to_region_and_budget():
    model, (images, labels) = toy_model(), toy_batch()
    region = region_mask("q2", SIDE)
    delta = attack(model, images, labels, region) - images
    assert torch.equal(delta[:, :, ~region], torch.zeros_like(delta[:, :, ~region]))
    assert float(delta[:, :, region].abs().max()) <= EPS + 1e-6
    assert float(delta[:, :, region].abs().max()) > EPS / 2  # it does move inside the region


def test_per_image_region():
    model, (images, labels) = toy_model(), toy_batch(2)
    region = torch.stack([region_mask("left", SIDE), region_mask("bottom", SIDE)])
    delta = attack(model, images, labels, region) - images
    outside = ~region[:, None].expand_as(delta)
    assert torch.equal(delta[outside], torch.zeros_like(delta[outside]))
    assert bool((delta[~outside] != 0).any())


@pytest.mark.parametrize("tensor_bounds", [False, True])
def test_valid_range_respected(tensor_bounds):
    model, (images, labels) = toy_model(), toy_batch()
    lower, upper = (torch.tensor([[[0.05]]]), torch.tensor([[[0.95]]])) if tensor_bounds else (0.05, 0.95)
    images = images.clamp(0.05, 0.95)
    region = region_mask("center", SIDE)
    adv = attack(model, images, labels, region, eps=0.3, lower=lower, upper=upper)
    assert float(adv.min()) >= 0.05 and float(adv.max()) <= 0.95
    assert float((adv - images).abs().max()) <= 0.3 + 1e-6
    assert torch.equal(adv[:, :, ~region], images[:, :, ~region])


def test_attack_raises_region_loss_above_clean_and_random():
    model, (images, labels) = toy_model(), toy_batch()
    region = region_mask("right", SIDE)
    signs = torch.randint(0, 2, images.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    noisy = images + EPS * signs * region
    clean, random, adv = (region_loss(model, x, labels, region)
                          for x in (images, noisy, attack(model, images, labels, region)))
    assert adv > clean + 0.05 and adv > random + 0.05


def test_parameters_untouched():
    model, (images, labels) = toy_model(), toy_batch()
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    attack(model, images, labels, region_mask("top", SIDE))
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert model.training


def test_zero_eps_returns_inputs():
    model, (images, labels) = toy_model(), toy_batch()
    adv = attack(model, images, labels, region_mask("left", SIDE), eps=0.0)
    assert torch.equal(adv, images)


def test_deterministic_for_fixed_generator():
    model, (images, labels) = toy_model(), toy_batch()
    region = region_mask("q4", SIDE)
    first, second = (attack(model, images, labels, region, seed=5) for _ in range(2))
    assert torch.equal(first, second)
    assert not torch.equal(first, attack(model, images, labels, region, seed=6))


def test_bad_input():
    model, (images, labels) = toy_model(), toy_batch()
    region = region_mask("left", SIDE)
    with pytest.raises(UserError):
        attack(model, images, labels, region, eps=-0.1)
    with pytest.raises(UserError):
        attack(model, images, labels, region, steps=0)
    with pytest.raises(UserError):
        attack(model, images, labels, region_mask("left", SIDE - 1))
    with pytest.raises(UserError):
        attack(model, images, labels, torch.stack([region] * 3))  # 3 masks for 4 images
    with pytest.raises(UserError):
        masked_pgd(model, images, labels, region, eps=EPS, steps=3)  # random start without a generator


def test_per_channel_budget_in_raw_intensity_units():
    """RGB normalised with per-channel mean/std: eps of 4/255 in raw intensity is eps/std_c per channel, and the
    adversarial image stays in [0, 1] raw on every channel (one averaged std would over- or under-shoot)."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    model = nn.Conv2d(3, 3, 3, padding=1)
    g = torch.Generator().manual_seed(3)
    raw = torch.rand(2, 3, SIDE, SIDE, generator=g)
    raw[:, 2, :4] = 0.0  # blue at the bottom of its range: the lower bound binds there
    labels = torch.randint(0, 3, (2, SIDE, SIDE), generator=g)
    region, eps = region_mask("top", SIDE), 4 / 255
    adv = attack(model, (raw - mean) / std, labels, region, eps=eps / std, steps=5,
                 lower=(0 - mean) / std, upper=(1 - mean) / std)
    adv_raw = adv * std + mean
    change = (adv_raw - raw).abs()
    assert float(change.max()) <= eps + 1e-6 and float(adv_raw.min()) >= -1e-6 and float(adv_raw.max()) <= 1 + 1e-6
    for c in range(3):  # every channel reaches its own budget (signed steps of 2.5·eps/steps saturate)
        assert float(change[:, c][:, region].max()) == pytest.approx(eps, abs=1e-6)
    assert torch.equal(adv[:, :, ~region], ((raw - mean) / std)[:, :, ~region])
