"""Config fields are declared once, with their flags: generated flags, per-command defaults, one declaration each."""

import argparse
import dataclasses
import importlib
from dataclasses import dataclass

import pytest

import poschan.config
import poschan.experiments.settings
from poschan.cli import EXPERIMENTS, build_parser, main
from poschan.config import add_flags, build_config, class_mapping, flag_metadata, setting
from poschan.errors import UserError

RUN_FLAGS = {"-h", "--help", "--preset", "--config", "--seeds", "--seed", "--device", "--data-root", "--out",
             "--resume", "--no-progress"}
# The flags each command had before its flags were generated from its config fields (besides RUN_FLAGS).
FLAGS_BEFORE = {
    "train": "--task --grid --canvas --background --data --model --width --pretrained --weights --head --padding "
             "--permute --permute-per-sample --epochs --batch-size --lr --train-size --test-size",
    "position-map": "--model --width --pretrained --weights --no-pretrained --layers --paddings --targets --sigma "
                    "--image-size --feature-size --train-images --test-images --test-photos --steps --batch-pixels "
                    "--lr",
    "gap-study": "--model --width --pretrained --weights --data --background --design --tasks --heads --paddings "
                 "--grids --permutes --stage --epochs --batch-size --lr --train-size --test-size",
    "budget-response": "--model --width --pretrained --weights --data --background --tasks --permutes --batch-size "
                       "--lr --test-size --budgets --base-samples --base-epochs --wide --extra-seeds "
                       "--readout-train-size --readout-test-size",
    "probe": "--task --grid --canvas --background --data --model --width --pretrained --weights --padding --layers "
             "--train-size --test-size --batch-size --readout-c",
    "rank": "--model --width --pretrained --weights --method --layer --data --split --eval-split --limit --image-size "
            "--grid --canvas --background --flip-input --semantic-pairs --padding --head --num-classes --batch-size "
            "--top-n",
    "augshift": "--methods --lambda --lambdas --ce --latent --crop --canvas --max-shift --filt-size --data --model "
                "--width --pretrained --weights --padding --epochs --batch-size --lr --train-size --test-size "
                "--test-passes",
    "seg-train": "--data --side --min-items --max-items --layout-prior --layout --grouping --model --width --padding "
                 "--dilate-last --aspp-channels --weights --epochs --batch-size --lr --train-size --test-size",
    "ablate": "--checkpoint --n --random-seeds --rank-scenes --test-size --batch-size --ranking --mode",
    "attack": "--checkpoint --n --random-seeds --rank-scenes --test-size --batch-size --region --methods --grid --eps "
              "--pgd-steps --pgd-size",
    "debias": "--method --layer --eval-split --ranking --n --mode --canvas --crop --max-shift --data --image-size "
              "--model --weights --width --pretrained --padding --head --test-size --batch-size --num-classes "
              "--rank-split --rank-size --score --random-draws --passes --save",
    "census": "--grid --canvas --background --data --image-size --padding --train-size --test-size --batch-size "
              "--models --twins --no-twins --pictures --picture-layer --rank-size --top-n --readout-c",
}
USER_INPUTS = {"ablate": ["--checkpoint", "ck.pt"], "attack": ["--checkpoint", "ck.pt"]}


def _config_class(command: str) -> type:
    return importlib.import_module(EXPERIMENTS[command]).Config


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _resolve(command: str, *flags: str, preset: str = "smoke"):
    """The config `poschan COMMAND --preset PRESET FLAGS` runs with (as cli._experiment_command builds it)."""
    module = importlib.import_module(EXPERIMENTS[command])
    args = build_parser(command).parse_args([command, "--preset", preset, "--out", "o", *USER_INPUTS.get(command, []),
                                             *flags])
    names = [f.name for f in dataclasses.fields(module.Config)]
    return build_config(module.Config, module.EXPERIMENT, args.preset, args.config,
                        {k: getattr(args, k, None) for k in names})


@dataclass
class _Toy:
    count: int = setting(3, "a count")
    rate: float = setting(0.5, "a rate")
    name: str = setting("a", "a name", choices=("a", "b"))
    limit: int | None = setting(None, "a limit")
    sizes: list[int] = setting([1, 2], "sizes")
    on: bool = setting(False, "a switch")
    lam: float = setting(1.0, "lambda", flag="--lambda", metavar="LAMBDA")
    hidden: list[float] = setting([0.5], "no flag", cli=False)


def test_generated_flags_parse_into_the_field_types():
    parser = argparse.ArgumentParser()
    add_flags(parser, _Toy)
    args = parser.parse_args(["--count", "7", "--rate", "2", "--name", "b", "--limit", "4", "--sizes", "3,5", "--on",
                              "--lambda", "0.25"])
    assert (args.count, args.rate, args.name, args.limit, args.on, args.lam) == (7, 2.0, "b", 4, True, 0.25)
    assert type(args.count) is int and type(args.rate) is float and type(args.limit) is int
    assert args.sizes == "3,5"  # comma-separated text, read by build_config
    absent = parser.parse_args([])
    assert all(getattr(absent, f.name, None) is None for f in dataclasses.fields(_Toy))  # absent: keep the preset
    assert not hasattr(absent, "hidden")
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "c"])  # choices are kept
    assert _Toy().sizes == [1, 2] and _Toy().sizes is not _Toy().sizes  # list defaults are copied


def test_flag_values_resolve_to_the_field_types():
    c = _resolve("train", "--grid", "5", "--lr", "0.5", "--padding", "circular", "--train-size", "64")
    assert (c.grid, c.lr, c.padding, c.train_size) == (5, 0.5, "circular", 64) and type(c.lr) is float
    assert _resolve("gap-study", "--grids", "3,5").grids == [3, 5]
    lambdas = _resolve("augshift", "--lambdas", "0.1,1,10").lambdas
    assert lambdas == [0.1, 1.0, 10.0] and all(type(v) is float for v in lambdas)
    assert _resolve("augshift", "--lambda", "2").lam == 2.0
    assert _resolve("attack", "--region", "left,q1").region == ["left", "q1"]
    for bad, match in ((["augshift", "--lambdas", "0.1,x"], "lambdas"), (["augshift", "--lambdas", "1,nan"], "finite"),
                       (["gap-study", "--grids", "3,x"], "grids")):
        with pytest.raises(UserError, match=match):
            _resolve(*bad)


def test_a_bool_field_is_a_store_true_flag_whose_absence_keeps_the_preset(monkeypatch):
    action = next(a for a in _subparser("train")._actions if a.dest == "permute_per_sample")
    assert isinstance(action, argparse._StoreTrueAction) and action.default is None
    real = poschan.config.preset_values
    monkeypatch.setattr(poschan.config, "preset_values",
                        lambda experiment, preset: {**real(experiment, "smoke"), "permute_per_sample": True})
    assert _resolve("train").permute_per_sample is True  # no flag: the preset's value
    assert _resolve("train", "--permute-per-sample").permute_per_sample is True
    monkeypatch.setattr(poschan.config, "preset_values", lambda experiment, preset: real(experiment, "smoke"))
    assert _resolve("train").permute_per_sample is False  # the field's default
    assert _resolve("train", "--permute-per-sample").permute_per_sample is True


def test_position_map_keeps_its_no_pretrained_flag():
    assert _resolve("position-map").pretrained is True  # default None: the packaged weights of efficientnet-lite0
    assert _resolve("position-map", "--no-pretrained").pretrained is False
    assert _resolve("position-map", "--model", "resnet18-paper").pretrained is False


def test_command_defaults_apply_below_the_preset(monkeypatch):
    probe = _config_class("probe")
    concern = {f.name: f.default for f in dataclasses.fields(poschan.experiments.settings.ModelSettings)}
    assert concern["model"] == "resnet18-paper" and probe.DEFAULTS["model"] == "efficientnet-lite0"
    assert probe().model == "efficientnet-lite0" and probe().batch_size == 200  # Config() agrees with the CLI
    assert _resolve("probe").model == "efficientnet-lite0"  # the command's default over the concern's
    assert probe.DEFAULTS["batch_size"] == 200 and _resolve("probe", preset="smoke").batch_size == 60  # preset wins
    # defaults of a concern base (SegEvalSettings) merge with the command's own
    assert class_mapping(_config_class("attack"), "DEFAULTS")["test_size"] == 2000
    attack = _resolve("attack", preset="quick")
    assert attack.n == ["25%"] and attack.batch_size == 64
    real = poschan.config.preset_values
    monkeypatch.setattr(poschan.config, "preset_values",
                        lambda experiment, preset: {**real(experiment, "smoke"), "model": "vgg11"})
    assert _resolve("probe").model == "vgg11"
    assert _resolve("probe", "--model", "resnet18-paper").model == "resnet18-paper"  # and a flag over both


def test_command_defaults_are_not_shared_between_configs():
    a, b = _resolve("train"), _resolve("train")
    a.seeds.append(99)
    assert b.seeds == [0] and _resolve("train").seeds == [0]


@pytest.mark.parametrize("command", list(EXPERIMENTS))
def test_defaults_and_flag_metadata_name_fields(command):
    cls = _config_class(command)
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(class_mapping(cls, "DEFAULTS")) <= names
    assert set(class_mapping(cls, "FLAGS")) <= names


def test_no_field_is_declared_in_two_config_classes():
    """Each field of every command's Config is declared (annotated) by exactly one class of the package."""
    declared: dict[str, set[type]] = {}
    for command in EXPERIMENTS:
        cls = _config_class(command)
        names = {f.name for f in dataclasses.fields(cls)}
        for klass in cls.__mro__:
            own = {k for k, v in vars(klass).get("__annotations__", {}).items() if "ClassVar" not in str(v)}
            own -= set(vars(klass).get("DEFAULTS", {}))  # a command's own default of an inherited field
            for name in own & names:
                declared.setdefault(name, set()).add(klass)
    twice = {name: sorted(f"{k.__module__}.{k.__qualname__}" for k in classes)
             for name, classes in declared.items() if len(classes) > 1}
    assert not twice, f"fields declared more than once: {twice}"
    assert {"model", "seeds", "batch_size", "data"} <= set(declared)


@pytest.mark.parametrize("command", list(EXPERIMENTS))
def test_every_field_has_a_flag_or_is_marked(command):
    cls = _config_class(command)
    parser = _subparser(command)
    dests = {a.dest for a in parser._actions}
    for f in dataclasses.fields(cls):
        meta = flag_metadata(cls, f.name)
        assert f.name in dests or not meta["cli"], f"{command}: field {f.name} has no flag and is not cli=False"
        if meta["cli"]:
            assert meta["help"], f"{command}: the flag of {f.name} has no help"
    for action in parser._actions:  # and no flag without a field (besides the run arguments)
        if set(action.option_strings) - RUN_FLAGS:
            assert action.dest in {f.name for f in dataclasses.fields(cls)}, action.option_strings


@pytest.mark.parametrize("command", list(EXPERIMENTS))
def test_the_flags_of_before_still_exist(command):
    flags = {o for a in _subparser(command)._actions for o in a.option_strings}
    missing = set(FLAGS_BEFORE[command].split()) - flags
    assert not missing, f"{command} lost flags {sorted(missing)}"
    assert RUN_FLAGS <= flags


@pytest.mark.parametrize("command", list(EXPERIMENTS))
def test_help_works(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: poschan {command}" in out and "--out OUT" in out and "--preset" in out
    if command in ("train", "probe", "gap-study"):
        assert "use the model's packaged weights" in out
    if command == "ablate":
        assert "5%,10%,25%" in out  # a % in a help text is printed as written
