import torch
from torch import nn

from poschan.engine import fit, load_checkpoint
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


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    full = make_model()
    fit(full, Blobs(), epochs=3, lr=1e-2, progress=False)

    import poschan.engine as engine

    def save_then_die(obj, path):
        atomic_torch_save(obj, path)
        if obj["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "atomic_torch_save", save_then_die)
    killed = make_model()
    try:
        fit(killed, Blobs(), epochs=3, lr=1e-2, checkpoint=tmp_path / "c.pt", progress=False)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    resumed = make_model()
    hist = fit(resumed, Blobs(), epochs=3, lr=1e-2, checkpoint=tmp_path / "c.pt", progress=False)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_evaluate_does_not_perturb_training():
    a, b = make_model(), make_model()
    fit(a, Blobs(), epochs=2, lr=1e-2, progress=False)
    fit(b, Blobs(), epochs=2, lr=1e-2, progress=False, evaluate=lambda m, e: {"noise": float(torch.rand(1))})
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
