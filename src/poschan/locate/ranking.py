"""The channel ranking of one layer (scores, the shuffled-pair null, top channels) and THE ``ranking.json`` file.

Every command that ranks (``rank``, ``ablate``, ``attack``) writes this schema and every command that reads a
ranking (``ablate --ranking``) reads it, so a ranking computed once feeds any later analysis of the same weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from poschan.errors import UserError
from poschan.results import atomic_write_text

SCHEMA = "poschan-ranking/1"


def ranking_order(scores: Tensor) -> Tensor:
    """Channel indices by descending score (ties keep channel order)."""
    return torch.sort(scores, descending=True, stable=True).indices


def top_shared(a: Tensor, b: Tensor, n: int) -> Tensor:
    """(n,) 0/1: whether each of the top ``n`` channels of scores ``a`` (best first) is among the top ``n`` of ``b``."""
    top_b = set(ranking_order(b)[:n].tolist())
    return torch.tensor([float(ch in top_b) for ch in ranking_order(a)[:n].tolist()], dtype=torch.float64)


def top_overlap(a: Tensor, b: Tensor, n: int) -> int:
    """How many of the top ``n`` channels of scores ``a`` are also among the top ``n`` of ``b``."""
    return int(top_shared(a, b, n).sum())


def _scores(values: Any, what: str) -> Tensor:
    try:
        t = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{what} must be a list of numbers") from None
    if t.dim() != 1 or not len(t):
        raise UserError(f"{what} must be a non-empty list of numbers, one per channel")
    return t


@dataclass
class ChannelRanking:
    """Per-channel position scores of ``layer`` by ``method`` (flip, shift, dimest): for each key (``overall``,
    ``left``, ``cell:4``, ...) one score per channel, higher = more position; ``null`` the same scores from
    shuffled pairs (the control: a top list that the null shares merely picks channels of large spread);
    ``per_seed`` the scores of each ranking seed (``scores`` pools them). ``weights`` fingerprints the ranked
    model's state (see :func:`weights_fingerprint`) and ``data`` describes the ranked images (source, split and
    the content fingerprint of the images), so a reader can refuse a ranking of other weights or of its own
    evaluation images."""

    layer: str
    method: str
    scores: dict[str, Tensor]
    null: dict[str, Tensor] = field(default_factory=dict)
    per_seed: dict[int, dict[str, Tensor]] = field(default_factory=dict)
    n_images: int = 0
    model: str = ""
    weights: str | None = None
    data: dict = field(default_factory=dict)
    design: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.scores:
            raise UserError("a ranking needs the scores of at least one key")
        sizes = {len(s) for group in (self.scores, self.null, *self.per_seed.values()) for s in group.values()}
        if len(sizes) != 1:
            raise UserError(f"every score list of a ranking must have one entry per channel, got lengths {sorted(sizes)}")

    @property
    def channels(self) -> int:
        return len(next(iter(self.scores.values())))

    @property
    def keys(self) -> list[str]:
        return list(self.scores)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.per_seed)

    def _key(self, key: str) -> Tensor:
        if key not in self.scores:
            raise UserError(f"ranking of {self.layer!r} by {self.method} has no key {key!r}; keys: {', '.join(self.keys)}")
        return self.scores[key]

    def order(self, key: str = "overall", seed: int | None = None) -> Tensor:
        """Channel indices by descending score of ``key`` (pooled over seeds, or of ranking seed ``seed``)."""
        self._key(key)
        if seed is None:
            return ranking_order(self.scores[key])
        if seed not in self.per_seed:
            raise UserError(f"ranking has no seed {seed}; seeds: {', '.join(map(str, self.seeds)) or 'none recorded'}")
        return ranking_order(self.per_seed[seed][key])

    def top(self, key: str = "overall", n: int = 10, seed: int | None = None) -> Tensor:
        """The ``n`` channels with the highest score of ``key``."""
        if not 1 <= n <= self.channels:
            raise UserError(f"n must be in 1..{self.channels} (the layer's channels), got {n}")
        return self.order(key, seed)[:n]

    def cell_scores(self) -> Tensor:
        """(k², C): a shift ranking's selectivity of every channel for every cell of its grid (keys ``cell:j``)."""
        cells = sum(key.startswith("cell:") for key in self.scores)
        if not cells:
            raise UserError(f"ranking of {self.layer!r} by {self.method} has no cell scores (a shift ranking has)")
        return torch.stack([self.scores[f"cell:{j}"] for j in range(cells)])

    def to_dict(self) -> dict:
        def plain(group: dict[str, Tensor]) -> dict[str, list[float]]:
            return {k: v.tolist() for k, v in group.items()}

        return {"schema": SCHEMA, "model": self.model, "weights": self.weights, "layer": self.layer,
                "channels": self.channels, "method": self.method, "n_images": self.n_images, "seeds": self.seeds,
                "data": self.data, "design": self.design,
                "keys": {k: {"order": ranking_order(s).tolist(), "scores": s.tolist(),
                             **({"null": self.null[k].tolist()} if k in self.null else {})}
                         for k, s in self.scores.items()},
                "per_seed": {str(seed): plain(group) for seed, group in self.per_seed.items()}}

    def save(self, path: str | Path) -> Path:
        """Write the ranking as JSON, atomically."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict()) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict, source: str = "ranking") -> ChannelRanking:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise UserError(f"{source} is not a poschan ranking file (schema {SCHEMA!r}); write one with "
                            "`poschan rank` or ChannelRanking.save")
        try:
            keys = d["keys"]
            scores = {k: _scores(v["scores"], f"{source}: scores of {k!r}") for k, v in keys.items()}
            null = {k: _scores(v["null"], f"{source}: null of {k!r}") for k, v in keys.items() if "null" in v}
            per_seed = {int(s): {k: _scores(v, f"{source}: seed {s} {k!r}") for k, v in group.items()}
                        for s, group in d.get("per_seed", {}).items()}
            return cls(layer=str(d["layer"]), method=str(d["method"]), scores=scores, null=null, per_seed=per_seed,
                       n_images=int(d.get("n_images", 0)), model=str(d.get("model", "")), weights=d.get("weights"),
                       data=dict(d.get("data") or {}), design=dict(d.get("design") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise UserError(f"{source} is not a valid poschan ranking file ({type(err).__name__}: {err})") from None

    @classmethod
    def load(cls, path: str | Path) -> ChannelRanking:
        """Read a ranking written by :meth:`save` (one-line UserError when it is not one)."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read ranking {str(path)!r}: {err}") from None
        return cls.from_dict(d, str(path))

    def check_for(self, layer: str, channels: int, *, weights: str | None = None,
                  eval_images: dict | None = None, source: str = "ranking") -> None:
        """Refuse (UserError) a ranking of another layer or channel count, of other weights (when both
        fingerprints are known), or of the evaluation images themselves (``eval_images``: their content
        fingerprint, see ``poschan.data.fingerprint.image_fingerprint``)."""
        if self.channels != channels or self.layer != layer:
            raise UserError(f"{source} is for {self.channels} channels of layer {self.layer!r}; this model's "
                            f"{layer!r} has {channels}")
        if weights is not None and self.weights is not None and self.weights != weights:
            raise UserError(f"{source} was computed for other weights ({self.weights}, these {weights}); rank this "
                            "model")
        ranked = self.data.get("images")
        if ranked is not None and eval_images is not None and ranked == eval_images:
            raise UserError(f"{source} was computed on the evaluation images (the same {ranked.get('n')} images, by "
                            "content); rank on another split")
