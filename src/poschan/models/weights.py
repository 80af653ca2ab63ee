"""The one weights loader of poschan: state-dict files (never pickled code) into any model, and their fingerprint."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from poschan.errors import UserError
from poschan.models.poolnet import PoolNet
from poschan.results import read_tensor_file

# Top-level modules holding a torchvision / timm classifier's head (besides timm's pretrained_cfg['classifier']
# and torchvision's aux* heads); a backbone never has them.
HEAD_MODULES = ("fc", "classifier", "heads", "head", "head_dist", "AuxLogits")


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's state (names, shapes, values), 16 hex digits: tells one set of weights from another."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def read_state_dict(path: str | Path, what: str = "weights file") -> dict[str, Tensor]:
    """The state dict in ``path``: a dict of tensors, or one under key ``model`` or ``state_dict`` (checkpoints);
    files holding pickled code are refused (see ``read_tensor_file``)."""
    obj = read_tensor_file(path, what)
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserError(f"{what} {str(path)!r} does not hold a state dict (a dict of tensors, or one under key "
                        "'model' or 'state_dict')")
    return obj


class ModelNote(UserWarning):
    """Something poschan chose for the user that they should know (printed as one line by the command line)."""


def weights_shape(state: dict[str, Tensor]) -> tuple[int | None, int | None]:
    """What a state dict says of its model: the input channels of its first convolution (its first 4-D weight, in
    the file's order), and for a whole PoolNet (keys under ``head.``) the number of classes of its head (the
    output size of the head's last tensor); None where it says nothing."""
    stem = next((v.shape[1] for v in state.values() if v.dim() == 4), None)
    head = [v for k, v in state.items() if k.startswith("head.")]
    return (int(stem) if stem is not None else None), (int(head[-1].shape[0]) if head else None)


def follow_weights(state: dict[str, Tensor], in_chans: int, num_classes: int, source: str | Path) -> tuple[int, int]:
    """(input channels, classes) of a model built for ``state``: the file's where it names them (a note, a
    ``ModelNote`` warning, says so when they differ from the data's ``in_chans`` / ``num_classes``), else these."""
    stem, classes = weights_shape(state)
    changed = []
    if stem is not None and stem != in_chans:
        changed.append(f"{stem} input channels (the data's {in_chans}-channel images are given "
                       f"{'as ' + str(stem) + ' repeated channels' if in_chans == 1 else 'to it as it takes them'})")
        in_chans = stem
    if classes is not None and classes != num_classes:
        changed.append(f"{classes} classes (the data has {num_classes})")
        num_classes = classes
    if changed:
        warnings.warn(ModelNote(f"weights {str(source)!r}: the model is built with {' and '.join(changed)}, as the "
                                "file's tensors say"), stacklevel=3)
    return in_chans, num_classes


def load_weights(model: PoolNet, path: str | Path, state: dict[str, Tensor] | None = None) -> list[str]:
    """Load the state dict in ``path`` into ``model``; return the classifier keys dropped from it (sorted).

    Accepted: a state dict of the whole PoolNet, of its backbone, or of the classifier the backbone was cut from
    (a torchvision or timm checkpoint as users have it). From a classifier, keys under a head module
    (HEAD_MODULES, aux*, timm's ``pretrained_cfg['classifier']``) that the backbone lacks are dropped and named
    in a warning; the rest is taken in the backbone's naming as it is, without the one top-level module all its
    keys share (torchvision's ``features.``), or under the one the backbone's keys share (``net.`` of timm's
    FeatureForward), and must then match the backbone's keys and shapes exactly. Else: a one-line UserError.
    ``state``: the file's state dict when it has been read already.
    """
    state = read_state_dict(path) if state is None else state
    whole = model.state_dict()
    if set(state) == set(whole):
        load_state(model, state, path, whole)
        return []
    backbone = model.backbone.state_dict()
    is_head = _head_rule(model.backbone)
    tried = []
    for rename in _renamings(state, backbone, is_head):
        renamed, dropped = {}, []
        for key, value in state.items():
            if is_head(key) and rename(key) not in backbone:
                dropped.append(key)
            else:
                renamed[rename(key)] = value
        if set(renamed) == set(backbone):
            load_state(model.backbone, renamed, path, backbone)
            if dropped:
                dropped.sort()
                shown = ", ".join(dropped[:6]) + (f", ... ({len(dropped)} in all)" if len(dropped) > 6 else "")
                warnings.warn(f"weights {str(path)!r}: dropped the classifier's head keys {shown}; the model keeps "
                              "its own head", stacklevel=2)
            return dropped
        tried.append(set(renamed))
    expected, got, what = max([(set(whole), set(state), "model"), *((set(backbone), t, "backbone") for t in tried)],
                              key=lambda c: len(c[0] & c[1]))
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    raise UserError(f"weights {str(path)!r} match neither the model nor its backbone (closest: the {what}): "
                    f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}")


def _head_rule(backbone: nn.Module) -> Callable[[str], bool]:
    """Whether a classifier's key belongs to its head (timm: also the backbone's pretrained_cfg['classifier'])."""
    cfg = next((m.pretrained_cfg for m in backbone.modules() if isinstance(getattr(m, "pretrained_cfg", None), dict)),
               {})
    named = cfg.get("classifier") or ()
    prefixes = (named,) if isinstance(named, str) else tuple(named)

    def is_head(key: str) -> bool:
        top = key.split(".", 1)[0]
        return (top in HEAD_MODULES or top.lower().startswith("aux")
                or any(key == p or key.startswith(p + ".") for p in prefixes))

    return is_head


def _shared_top(keys: Iterable[str]) -> str:
    """``"name."`` when every key lies under the one top-level module ``name``, else ``""``."""
    tops = {key.split(".", 1)[0] if "." in key else "" for key in keys}
    return f"{tops.pop()}." if len(tops) == 1 and "" not in tops else ""


def _renamings(state: dict[str, Tensor], backbone: dict[str, Tensor],
               is_head: Callable[[str], bool]) -> list[Callable[[str], str]]:
    """Key renamings from a checkpoint's naming to the backbone's: as is, without the top-level module all its
    non-head keys share (torchvision: ``features.``), under the one all backbone keys share (FeatureForward: ``net.``)."""
    renamings: list[Callable[[str], str]] = [lambda key: key]
    inner = _shared_top(key for key in state if not is_head(key))
    if inner:
        renamings.append(lambda key: key.removeprefix(inner))
    outer = _shared_top(backbone)
    if outer:
        renamings.append(lambda key: outer + key)
    return renamings


def load_state(target: nn.Module, state: dict[str, Tensor], source: str | Path,
               expected: dict[str, Tensor] | None = None) -> None:
    """The one way poschan loads a state dict: ``target.load_state_dict(state)`` once its keys are those of
    ``expected`` (default: target's own state) and every shape matches; else a one-line UserError naming the first
    missing, unexpected or differing key (and, for a head, the class counts)."""
    expected = target.state_dict() if expected is None else expected
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(f"weights {str(source)!r} do not fit the model: {len(missing)} missing keys {missing[:3]}, "
                        f"{len(unexpected)} unexpected keys {unexpected[:3]}")
    wrong = [key for key, value in state.items() if value.shape != expected[key].shape]
    if wrong:
        key = wrong[0]
        got, want = tuple(state[key].shape), tuple(expected[key].shape)
        stem = next(k for k, v in expected.items() if v.dim() == 4) if len(want) == 4 else None
        hint = ""
        if key == stem and got[:1] + got[2:] == want[:1] + want[2:]:
            hint = f" (the model takes {want[1]}-channel images, the file {got[1]}-channel ones)"
        elif got[1:] == want[1:] and key in list(expected)[-2:]:  # the last layer's weight or bias: its classes
            hint = f" (the file's head has {got[0]} classes, the model {want[0]})"
        raise UserError(f"weights {str(source)!r} do not fit the model: size mismatch for {key}: {got} in the file, "
                        f"{want} in the model{hint} ({len(wrong)} tensors differ)")
    target.load_state_dict(state)
