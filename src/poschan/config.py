"""Typed experiment configurations resolved from defaults < preset < YAML file < command-line flags.

A config field is declared once, with its flag: ``name: int = setting(3, help="...")``; ``add_flags(parser, cls)``
makes the command-line flags of a config dataclass from its fields. A command's config class may hold
``DEFAULTS`` (its own defaults of shared fields, the lowest layer) and ``FLAGS`` (its own flag metadata of shared
fields, e.g. a help text); both are merged along the class's bases.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import math
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from poschan.errors import UserError

PRESETS = ("smoke", "quick", "paper")  # every experiment has these; some add more
C = TypeVar("C")


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{origin} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{origin} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def preset_values(experiment: str, preset: str) -> dict:
    """The keys the packaged ``configs/<experiment>.yaml`` sets for ``preset`` (smoke, quick, paper, or an
    experiment's own extra preset such as ``long``)."""
    text = resources.files("poschan").joinpath("configs", f"{experiment}.yaml").read_text()
    presets = _read_yaml(text, f"configs/{experiment}.yaml")
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r} for {experiment}; allowed: {', '.join(presets)}")
    return presets[preset] or {}


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # refused by _coerce, which names the key


def _coerce(cls_name: str, key: str, hint: Any, value: Any) -> Any:
    """Check (and gently convert) ``value`` against the field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(cls_name, key, option, value)
            except UserError:
                continue
        raise UserError(f"config key {key!r}: {value!r} is not a valid {hint}")
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        if isinstance(value, str):  # comma-separated text (a flag): its numbers are read here
            value = [_number(v) if item is float else v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key!r}: expected a list, got {value!r}")
        items = [_coerce(cls_name, key, item, v) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key {key!r}: expected true/false, got {value!r}")
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise UserError(f"config key {key!r}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if hint in (int, str) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    raise UserError(f"config key {key!r}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def build_config(cls: type[C], experiment: str, preset: str, config_file: str | None = None,
                 overrides: dict[str, Any] | None = None) -> C:
    """Defaults of ``cls`` (its ``DEFAULTS`` included, see ``command_defaults``) < the preset < keys of
    ``config_file`` < non-None ``overrides``."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    layers: list[tuple[str, dict]] = [(f"preset {preset!r}", preset_values(experiment, preset))]
    if config_file is not None:
        path = Path(config_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise UserError(f"cannot read --config {config_file}: {exc.strerror or exc}") from None
        layers.append((f"--config {config_file}", _read_yaml(text, f"--config {config_file}")))
    layers.append(("flags", {k: v for k, v in (overrides or {}).items() if v is not None}))
    for origin, layer in layers:
        for key, value in layer.items():
            key = str(key).replace("-", "_")
            if key not in names:
                close = difflib.get_close_matches(key, names, n=2)
                hint = f"did you mean {' or '.join(close)}?" if close else f"allowed: {', '.join(names)}"
                raise UserError(f"unknown config key {key!r} in {origin}; {hint}")
            values[key] = _coerce(cls.__name__, key, hints[key], value)
            choices = flag_metadata(cls, key).get("choices")
            if choices and isinstance(values[key], str) and values[key] not in choices:  # files too, not only flags
                raise UserError(f"config key {key!r} in {origin}: {values[key]!r} is not one of {', '.join(choices)}")
    if "preset" in names:
        values["preset"] = preset
    config = cls(**values)
    if "seeds" in names:
        check_seeds(config.seeds)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def derive(cls: type[C], source: object, **changes: Any) -> C:
    """A ``cls`` config holding the fields it shares with config ``source`` (copies), with ``changes`` applied: a
    command's sub-config (e.g. the training of each of its variants) composed once, never field by field."""
    shared = {f.name: copy.deepcopy(getattr(source, f.name)) for f in dataclasses.fields(cls)
              if hasattr(source, f.name)}
    return cls(**{**shared, **changes})


def derive_checked(cls: type[C], source: object, **changes: Any) -> C:
    """``derive``, then the sub-config's own ``validate()`` (a UserError before anything is written)."""
    config = derive(cls, source, **changes)
    config.validate()
    return config


def check_seeds(seeds: list[int]) -> None:
    """The one rule for the seeds of every command: at least one, distinct, each >= 0."""
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"seeds must be distinct and >= 0, at least one seed (e.g. --seeds 0,1,2), got {seeds}")


def check_at_least(config: object, minimum: float, *keys: str, optional: bool = False) -> None:
    """Refuse with one line the first of ``keys`` whose value is below ``minimum`` (``optional``: None, the
    command's default, passes)."""
    for key in keys:
        value = getattr(config, key)
        if not (optional and value is None) and (value is None or value < minimum):
            raise UserError(f"{key} must be >= {minimum}{' or null' if optional else ''}, got {value}")


def as_dict(config: object) -> dict:
    """A plain, YAML/JSON-ready dict of a config dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def setting(default: Any, help: str = "", *, flag: str | None = None, cli: bool = True,
            choices: tuple | None = None, metavar: str | None = None, negative: str | None = None,
            negative_help: str = "") -> Any:
    """A config field and its command-line flag: ``--field-name`` (or ``flag``); ``cli=False``: none (a run
    argument of every command, or a key of presets and --config files only); ``negative``: a second, store_false
    flag of a bool field. A list default is copied for every instance."""
    metadata = {"help": help, "cli": cli, "flag": flag, "choices": choices, "metavar": metavar,
                "negative": negative, "negative_help": negative_help}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def command_defaults(cls: type[C]) -> type[C]:
    """Class decorator, applied before ``@dataclass``: the class's own ``DEFAULTS`` become the defaults of the
    fields it inherits (same type, flag metadata and position), so ``Config()`` and ``build_config`` agree and no
    field is declared twice."""
    inherited: dict[str, dataclasses.Field] = {}
    for base in reversed(cls.__mro__[1:]):
        inherited.update(getattr(base, "__dataclass_fields__", {}))
    own = vars(cls).get("DEFAULTS", {})
    unknown = sorted(set(own) - set(inherited))
    if unknown:
        raise TypeError(f"{cls.__name__}.DEFAULTS names fields it does not inherit: {unknown}")
    annotations = dict(vars(cls).get("__annotations__", {}))
    for name, value in own.items():
        annotations[name] = inherited[name].type
        metadata = inherited[name].metadata
        if isinstance(value, (list, dict)):
            default = dataclasses.field(default_factory=lambda v=value: copy.deepcopy(v), metadata=metadata)
        else:
            default = dataclasses.field(default=value, metadata=metadata)
        setattr(cls, name, default)
    cls.__annotations__ = annotations
    return cls


def class_mapping(cls: type, name: str) -> dict:
    """The dict class attribute ``name`` (DEFAULTS, FLAGS) merged along the bases of ``cls``, subclasses winning."""
    merged: dict = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get(name, {}))
    return merged


def flag_metadata(cls: type, name: str) -> dict:
    """The flag metadata of field ``name`` of ``cls``: the field's own, updated by the class's ``FLAGS[name]``."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return {"help": "", "cli": True, **field.metadata, **class_mapping(cls, "FLAGS").get(name, {})}


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of config dataclass ``cls`` (``cli=False`` fields excepted), dest the field name,
    default None (an absent flag keeps the preset): bool fields are store_true flags, int and float fields parse
    as such, lists are comma-separated text that ``build_config`` reads."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        meta = flag_metadata(cls, field.name)
        if not meta["cli"]:
            continue
        hint = hints[field.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: a flag gives an X
            hint = next(h for h in typing.get_args(hint) if h is not type(None))
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": meta["help"].replace("%", "%%")}
        flag = meta.get("flag") or "--" + field.name.replace("_", "-")
        if hint is bool:
            parser.add_argument(flag, action="store_true", **kwargs)
            if meta.get("negative"):
                parser.add_argument(meta["negative"], action="store_false", dest=field.name, default=None,
                                    help=meta.get("negative_help", "").replace("%", "%%"))
            continue
        if hint in (int, float):
            kwargs["type"] = hint
        elif hint is not str and typing.get_origin(hint) not in (list, tuple):
            raise TypeError(f"{cls.__name__}.{field.name}: no flag for type {hint}; give it cli=False")
        for key in ("choices", "metavar"):
            if meta.get(key):
                kwargs[key] = meta[key]
        parser.add_argument(flag, **kwargs)
