
import pytest

from poschan.config import build_config
from poschan.errors import UserError
from poschan.experiments.train import Config


def test_layers_of_precedence(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 5\nlr: 0.01\n")
    c = build_config(Config, "train", "smoke", str(cfg_file), {"lr": 0.5, "grid": None})
    assert c.width == 8 and c.epochs == 5 and c.lr == 0.5 and c.grid == 3 and c.preset == "smoke"


def test_unknown_key_is_named_with_suggestion(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epoch: 5\n")
    with pytest.raises(UserError, match="unknown config key 'epoch'.*epochs"):
        build_config(Config, "train", "smoke", str(cfg_file))


@pytest.mark.parametrize("text, match", [("grid: three\n", "grid"), ("- 1\n", "mapping"), ("a: [\n", "YAML"),
                                         ("seeds: []\n", "seeds"), ("epochs: 0\n", "epochs")])
def test_bad_values(tmp_path, text, match):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    with pytest.raises(UserError, match=match):
        build_config(Config, "train", "smoke", str(cfg_file))


def test_unknown_preset_and_missing_file():
    with pytest.raises(UserError, match="preset"):
        build_config(Config, "train", "huge")
    with pytest.raises(UserError, match="cannot read"):
        build_config(Config, "train", "smoke", "/nonexistent/c.yaml")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(UserError, match="finite"):
        build_config(Config, "train", "smoke", overrides={"lr": value})
    with pytest.raises(UserError, match="finite"):
        build_config(Config, "train", "smoke", overrides={"betas": [0.5, value]})


def test_a_config_file_value_outside_a_fields_choices_is_refused(tmp_path):
    from poschan.experiments.debias import Config

    path = tmp_path / "c.yaml"
    path.write_text("mode: middle\n")
    with pytest.raises(UserError, match="config key 'mode' in --config .*: 'middle' is not one of zero, mean"):
        build_config(Config, "debias", "smoke", str(path))
