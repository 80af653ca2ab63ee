"""The one weights loader of poschan: state-dict files (never pickled code) into any model, and their fingerprint."""

from __future__ import annotations

import hashlib

from pathlib import Path

import torch
from torch import Tensor, nn

from poschan.errors import UserError
from poschan.results import read_tensor_file


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
