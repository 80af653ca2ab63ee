"""Every command that reads ``folder:PATH`` refuses a folder without split sub-folders and splits sharing images."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from poschan.cli import main
from poschan.experiments import probe, train

COMMANDS = {
    "train": ["train"],
    "gap-study": ["gap-study"],
    "augshift": ["augshift"],
    "probe": ["probe"],
    "rank": ["rank", "--split", "train", "--eval-split", "test"],
}


def write_split(root: Path, seed: int) -> None:
    """Three random 12×12 RGB PNGs (distinct for each seed) in each of the classes a/ and b/ under ``root``."""
    rng = np.random.default_rng(seed)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def make_folder(root: Path, layout: str) -> Path:
    """flat: classes right under root; copy: test/ a copy of train/; link: test/ a symlink to train/;
    proper: different images in train/ and test/."""
    if layout == "flat":
        write_split(root, seed=0)
        return root
    write_split(root / "train", seed=0)
    if layout == "copy":
        shutil.copytree(root / "train", root / "test")
    elif layout == "link":
        (root / "test").symlink_to(root / "train", target_is_directory=True)
    else:
        write_split(root / "test", seed=1)
    return root


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("layout, match", [
    ("flat", "has no split sub-folder"),
    ("copy", "6 of the 6 images of split"),
    ("link", "6 of the 6 images of split"),
])
def test_leaky_folders_exit_2_one_line_no_output(tmp_path, capsys, command, layout, match):
    data = make_folder(tmp_path / "imgs", layout)
    out = tmp_path / "out"
    args = [*COMMANDS[command], "--data", f"folder:{data}", "--preset", "smoke", "--no-progress", "--out", str(out)]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("poschan: error:") and match in err, err
    assert captured.out == "" and not out.exists() and not (tmp_path / "out.partial").exists()


def test_proper_folder_splits_load(tmp_path):
    data = f"folder:{make_folder(tmp_path / 'imgs', 'proper')}"
    for train_set, test_set in (train.load_data(train.Config(data=data)), probe.split_sets(probe.Config(data=data))):
        assert (len(train_set), len(test_set), train_set.split, test_set.split) == (6, 6, "train", "test")
