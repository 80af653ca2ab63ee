"""`poschan reproduce`: the whole study as one resumable pipeline, ending with its report.

Each step is one experiment command run in this process through the command line (so each keeps the results
contract: it works in ``OUT/<step>.partial`` and appears as ``OUT/<step>`` only when complete). A re-run of the
same command skips the finished steps, resumes an interrupted one (``--resume``) and starts the others; the
report ``OUT/report.html`` is written when every step has finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from poschan.config import PRESETS
from poschan.errors import UserError

# Layout priors of the segmentation steps (seg-train, then ablate and attack of its first seed's checkpoint)
PRIORS = {"smoke": ("0.9",), "quick": ("0", "0.9"), "paper": ("0", "0.5", "0.9", "1")}


@dataclass(frozen=True)
class Step:
    name: str  # its folder in OUT
    argv: tuple[str, ...]  # the command and its own flags (preset, out and the common flags are added)


def study(preset: str, out: Path) -> list[Step]:
    """The steps of the whole study at ``preset``: the GAP study, the probe, position maps, the channel ranking,
    AugShift, and for each layout prior a segmenter with its reliance (ablate) and region attack."""
    steps = [Step(name, (name,)) for name in ("gap-study", "probe", "position-map", "rank", "augshift")]
    for prior in PRIORS[preset]:
        train = f"seg-train-p{prior}"
        checkpoint = str(out / train / "seed0" / "checkpoint.pt")
        steps += [Step(train, ("seg-train", "--layout-prior", prior)),
                  Step(f"ablate-p{prior}", ("ablate", "--checkpoint", checkpoint)),
                  Step(f"attack-p{prior}", ("attack", "--checkpoint", checkpoint, "--region", "left,right"))]
    return steps


def run_steps(steps: Sequence[Step], preset: str, out: Path, common: Sequence[str], *,
              run_command: Callable[[list[str]], int], progress: bool = True) -> int:
    """Run the unfinished ``steps`` in order (a finished step has ``OUT/<step>/results.json``); stop at the first
    that fails and return its exit code, else 0."""
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(steps, desc="reproduce", unit="step", disable=None if progress else True)
    for step in bar:
        target = out / step.name
        bar.set_postfix_str(step.name)
        if (target / "results.json").is_file():
            print(f"{step.name}: finished earlier, skipped", flush=True)
            continue
        resume = ["--resume"] if target.with_name(target.name + ".partial").exists() else []
        code = run_command([*step.argv, "--preset", preset, *common, *resume, "--out", str(target)])
        if code != 0:
            return code
    return 0


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} for reproduce; allowed: {', '.join(PRESETS)}")
