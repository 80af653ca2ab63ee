"""Every packaged preset of every command resolves and validates; the paper presets hold the paper's protocol."""

import dataclasses
import importlib
from importlib import resources

import pytest
import yaml

from poschan.cli import EXPERIMENTS
from poschan.config import PRESETS, build_config, preset_values
from poschan.errors import UserError
from poschan.experiments.train import TrainingSettings


def _presets_in_file(command: str) -> list[str]:
    """The top-level keys of the packaged configs/<command>.yaml, read here with yaml, not through poschan."""
    text = resources.files("poschan").joinpath("configs", f"{command}.yaml").read_text()
    return list(yaml.safe_load(text))


PAIRS = [(command, preset) for command in EXPERIMENTS for preset in _presets_in_file(command)]

# The protocol of the paper's classification training (Islam et al., ICCV 2021, official PermuteNet code; see
# shared/reference/paper-notes.md §2.3): full-width ResNet-18 (64 base channels), 20 epochs, batch 48,
# Adam with lr 1e-3 and betas (0.5, 0.999). Written out here on purpose, not read from poschan.
PAPER_PROTOCOL = {"width": 64, "epochs": 20, "batch_size": 48, "lr": 1e-3, "betas": (0.5, 0.999)}
CLASSIFICATION_TRAINING = ("train", "gap-study", "augshift", "budget-response")
# Inputs a command needs from its user whatever the preset (flags without a default): given here as a user would.
USER_INPUTS = {"ablate": {"checkpoint": "runs/seg/seed0/checkpoint.pt"},
               "attack": {"checkpoint": "runs/seg/seed0/checkpoint.pt"}}


def _module(command: str):
    return importlib.import_module(EXPERIMENTS[command])


@pytest.mark.parametrize("command", list(EXPERIMENTS))
def test_every_command_has_the_three_contract_presets(command):
    presets = _presets_in_file(command)
    assert set(PRESETS) <= set(presets), f"{command}: presets {presets} lack some of {PRESETS}"
    assert len(presets) == len(set(presets))


@pytest.mark.parametrize("command, preset", PAIRS)
def test_preset_sets_only_known_keys(command, preset):
    names = {f.name for f in dataclasses.fields(_module(command).Config)}
    values = preset_values(command, preset)
    assert isinstance(values, dict)
    unknown = {str(k).replace("-", "_") for k in values} - names
    assert not unknown, f"{command} --preset {preset} sets unknown keys {sorted(unknown)}"


@pytest.mark.parametrize("command, preset", PAIRS)
def test_preset_resolves_and_validates(command, preset):
    module = _module(command)
    assert module.EXPERIMENT == command
    config = build_config(module.Config, module.EXPERIMENT, preset, overrides=USER_INPUTS.get(command))  # validates
    assert isinstance(config, module.Config)
    if "preset" in {f.name for f in dataclasses.fields(module.Config)}:
        assert config.preset == preset
    for key, value in preset_values(command, preset).items():  # the preset's own values arrive unchanged
        got = getattr(config, str(key).replace("-", "_"))
        assert (list(got) if isinstance(got, tuple) else got) == value, f"{command}/{preset}: {key}"


@pytest.mark.parametrize("command", sorted(USER_INPUTS))
def test_user_inputs_are_needed_and_not_set_by_presets(command):
    """The inputs supplied above really are required (validate refuses without them) and no preset sets them."""
    module = _module(command)
    for key in USER_INPUTS[command]:
        with pytest.raises(UserError, match=key):
            build_config(module.Config, module.EXPERIMENT, "smoke")
        assert all(key not in preset_values(command, p) for p in _presets_in_file(command))


@pytest.mark.parametrize("command", CLASSIFICATION_TRAINING)
def test_paper_preset_follows_the_paper_protocol(command):
    module = _module(command)
    config = build_config(module.Config, module.EXPERIMENT, "paper")
    assert config.width == PAPER_PROTOCOL["width"]
    assert config.epochs == PAPER_PROTOCOL["epochs"]
    assert config.batch_size == PAPER_PROTOCOL["batch_size"]
    assert config.lr == pytest.approx(PAPER_PROTOCOL["lr"], rel=0, abs=1e-12)
    assert tuple(config.betas) == pytest.approx(PAPER_PROTOCOL["betas"], rel=0, abs=1e-12)


def test_the_pinned_list_covers_every_classification_training_command():
    """A new command built on the shared training settings must get its paper values pinned above too."""
    trainers = {c for c in EXPERIMENTS if issubclass(_module(c).Config, TrainingSettings)}
    assert trainers == set(CLASSIFICATION_TRAINING)
