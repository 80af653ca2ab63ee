"""The training recipe of the classification commands (poschan.training): initial weights a function of the seed
alone without touching the global RNG, and `train_classifier` giving the numbers of `poschan train`."""

import json

import torch
from torch import nn

import poschan
from poschan.cli import main
from poschan.config import build_config
from poschan.data.stream import TensorStream
from poschan.experiments.train import Config
from poschan.training import train_seed


def test_initial_weights_are_those_of_the_seed_and_the_global_rng_is_left_alone(tmp_path):
    torch.manual_seed(7)
    expected = nn.Linear(4, 3)  # drawn right after manual_seed(7)
    stream = TensorStream(torch.zeros(4, 4), torch.zeros(4, dtype=torch.long), batch_size=2, seed=0)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    model, history = train_seed(Config(epochs=0), lambda: nn.Linear(4, 3), stream, 7, tmp_path / "run",
                                progress=False)
    assert history == [] and torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))


def test_library_call_gives_the_numbers_of_the_command(tmp_path):
    result = poschan.train_classifier(build_config(Config, "train", "smoke"), tmp_path / "lib")
    assert main(["train", "--preset", "smoke", "--no-progress", "--out", str(tmp_path / "cli")]) == 0
    metrics = json.loads((tmp_path / "cli" / "results.json").read_text())["metrics"]
    assert json.loads(json.dumps(result.metrics())) == metrics
    assert [row["epoch"] for row in result.curves] == [1]
