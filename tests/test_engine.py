import pytest
import torch
from torch import nn

from poschan.engine import fit, load_checkpoint
from poschan.errors import UserError
from poschan.models.heads import ChannelPermute
from poschan.results import atomic_torch_save


class Blobs:
    """Two Gaussian blobs; each epoch is a pure function of (seed, epoch)."""

    def __init__(self, n_batches: int = 4, seed: int = 0):
        self.n, self.seed = n_batches, seed

    def __len__(self) -> int:
        return self.n

    def epoch(self, epoch, device=None):
        g = torch.Generator().manual_seed(self.seed * 100 + epoch)
        for _ in range(self.n):
            y = torch.randint(0, 2, (16,), generator=g)
            x = torch.randn(16, 2, generator=g) + 3 * y[:, None].float()
            yield x, y


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))


def test_learns_and_writes_checkpoint(tmp_path):
    model = make_model()
    hist = fit(model, Blobs(), epochs=3, lr=1e-2, checkpoint=tmp_path / "c.pt", log_csv=tmp_path / "m.csv",
               progress=False)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["epoch"] == 3 and len(state["history"]) == 3
    assert (tmp_path / "m.csv").read_text().count("\n") == 4


def dropout_model():
    """Draws from the global torch RNG on every training forward."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))


def permute_model():
    """The paper's PermuteNet in small: a fresh channel permutation (global RNG) on every forward."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), ChannelPermute(), nn.Linear(8, 2))


RANDOM_MODELS = [dropout_model, permute_model]


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("make", RANDOM_MODELS)
def test_training_draws_from_the_seeded_global_rng(make):
    a, b, c = make(), make(), make()
    for model, seed in ((a, 0), (b, 0), (c, 1)):
        fit(model, Blobs(), epochs=1, lr=1e-2, seed=seed, progress=False)
    assert same_weights(a, b) and not same_weights(a, c)


@pytest.mark.parametrize("schedule", ["constant", "one-cycle"])
@pytest.mark.parametrize("make", [make_model, *RANDOM_MODELS])
def test_resume_equals_uninterrupted_bit_for_bit(tmp_path, monkeypatch, make, schedule):
    full = make()
    full_hist = fit(full, Blobs(), epochs=3, lr=1e-2, progress=False, schedule=schedule)

    import poschan.engine as engine

    def save_then_die(obj, path):
        atomic_torch_save(obj, path)
        if obj["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "atomic_torch_save", save_then_die)
    killed = make()
    with pytest.raises(KeyboardInterrupt):
        fit(killed, Blobs(), epochs=3, lr=1e-2, checkpoint=tmp_path / "c.pt", progress=False, schedule=schedule)
    monkeypatch.undo()
    resumed = make()
    torch.manual_seed(12345)  # a new process: its global RNG is anywhere
    hist = fit(resumed, Blobs(), epochs=3, lr=1e-2, checkpoint=tmp_path / "c.pt", progress=False, schedule=schedule)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in full_hist]
    assert same_weights(full, resumed)


@pytest.mark.parametrize("make", RANDOM_MODELS)
def test_evaluation_leaves_training_and_the_global_rng_untouched(make):
    def noisy_evaluate(model, epoch):  # draws random numbers, through the model (train mode) and directly
        return {"noise": float(torch.rand(1)) + float(model(torch.randn(4, 2)).detach().sum())}

    plain, evaluated = make(), make()
    plain_hist = fit(plain, Blobs(), epochs=3, lr=1e-2, progress=False)
    plain_rng = torch.get_rng_state()
    evaluated_hist = fit(evaluated, Blobs(), epochs=3, lr=1e-2, progress=False, evaluate=noisy_evaluate)
    assert [h["train_loss"] for h in evaluated_hist] == [h["train_loss"] for h in plain_hist]
    assert len({h["noise"] for h in evaluated_hist}) == 3
    assert same_weights(plain, evaluated)
    assert torch.equal(torch.get_rng_state(), plain_rng)  # what the caller draws next does not depend on it


def test_one_cycle_rises_to_the_peak_rate_then_anneals(monkeypatch):
    """The rate of every step: torch's one-cycle shape (warm-up to ``lr`` over 30% of the steps, then cosine
    annealing far below it) over all epochs; constant: ``lr`` throughout."""
    rates: dict[str, list[float]] = {"constant": [], "one-cycle": []}
    step = torch.optim.Adam.step
    current: list[list[float]] = []

    def recording_step(self, *args, **kwargs):
        current[-1].append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    for schedule, seen in rates.items():
        current.append(seen)
        fit(make_model(), Blobs(n_batches=10), epochs=2, lr=0.01, progress=False, schedule=schedule)
    assert rates["constant"] == [0.01] * 20
    cycle = rates["one-cycle"]
    peak = max(range(20), key=cycle.__getitem__)
    assert len(cycle) == 20 and 4 <= peak <= 7 and cycle[peak] == pytest.approx(0.01, rel=0.02)
    assert cycle[0] == pytest.approx(0.01 / 25) and cycle[-1] < 0.01 / 25
    assert all(a < b for a, b in zip(cycle[:peak], cycle[1:peak + 1]))
    assert all(a > b for a, b in zip(cycle[peak:-1], cycle[peak + 1:]))


def test_unknown_schedule_is_refused():
    with pytest.raises(UserError, match="one-cycle"):
        fit(make_model(), Blobs(), epochs=1, progress=False, schedule="cosine")
