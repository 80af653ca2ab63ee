"""Command-line flags shared by experiment commands (each dest is a Config key; default None = keep preset)."""

from __future__ import annotations

import argparse

FOLDER_HELP = ("folder:PATH (one sub-folder per split: PATH/train/<class>/<image>, PATH/test/...; "
               "splits sharing an image are refused)")


def add_canvas_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=("location", "semantic"))
    p.add_argument("--grid", type=int, help="k of the k×k grid")
    p.add_argument("--canvas", type=int, help="canvas side in pixels (default: grid × image side)")
    p.add_argument("--background", help="canvas fill: mean, black, noise, photo")
    p.add_argument("--data", help=f"fashion-mnist (default), cifar10, photos, {FOLDER_HELP}")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (see `poschan models`) or path/file.py:factory")
    p.add_argument("--width", type=int, help="width multiplier of resnet18-paper / vgg (64 = paper)")
    p.add_argument("--pretrained", action="store_true", default=None, help="use the model's packaged weights")
    p.add_argument("--weights", help="state_dict file to load (never pickled code)")


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--train-size", dest="train_size", type=int, help="training images (default: all)")
    p.add_argument("--test-size", dest="test_size", type=int, help="test images (default: all)")
