"""Real image datasets, batched canvas operations, and seeded streams of canvas batches."""

from poschan.data.canvas import (
    BACKGROUNDS,
    canvas_side,
    crop,
    hflip,
    make_background,
    paste_at,
    paste_in_grid,
    random_cells,
    roll,
    vflip,
)
from poschan.data.sources import (
    DATASETS,
    FASHION_MNIST_DEBIAN,
    ImageSet,
    find_fashion_mnist,
    load_dataset,
    match_channels,
)
from poschan.data.stream import TASKS, CanvasStream

__all__ = [
    "BACKGROUNDS", "DATASETS", "FASHION_MNIST_DEBIAN", "TASKS",
    "CanvasStream", "ImageSet",
    "canvas_side", "crop", "find_fashion_mnist", "hflip", "load_dataset", "make_background",
    "match_channels", "paste_at", "paste_in_grid", "random_cells", "roll", "vflip",
]
