"""What the budget response costs here, before it runs: the training throughput of each of its cells in the exact
configuration it trains with (the quick preset's width, batch, memory format, precision and ``--compile auto``
resolved for the cell's number of steps), against this machine's fp32 matmul rate, and the hours it implies.

Each cell trains every variant of its GAP study (location and semantic: unpermuted, per-batch, per-sample) for
every seed; its executor runs ``workers`` trainings at once with ``cores / workers`` threads each, so the
throughput is measured with that many threads and the hours assume the workers run side by side without slowing
each other (an optimistic bound when memory bandwidth is shared). Evaluation and the backbone readouts are not
counted (a few per cent of a cell at the quick sizes).
"""

from __future__ import annotations

import copy
import os
import statistics

import torch

from common import timed
from poschan.config import build_config
from poschan.data.sources import load_dataset
from poschan.data.stream import CanvasStream
from poschan.execution import resolve_compile
from poschan.experiments.budget_response import Config
from poschan.measure.budget_response import cells
from poschan.measure.gap_study import variants
from poschan.models.registry import build_model
from train_loop import fit_loop, flops_per_image, matmul_rate

CPU = torch.device("cpu")
BATCHES = 8


def main() -> None:
    config = build_config(Config, "budget-response", "quick")
    options = config.fit_options(CPU)
    workers = config.workers if config.executor != "sequential" else 1
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    data = load_dataset("fashion-mnist", "train", limit=config.batch_size * BATCHES)
    stream = CanvasStream(data, "location", config.grids[0], config.batch_size, seed=0)
    trainings = len(variants(config))
    rates = [matmul_rate()]
    print(f"budget_cost: {torch.get_num_threads()} threads per training, {workers} trainings at once; fp32 matmul "
          f"{rates[0] / 1e9:.0f} GFLOP/s; {trainings} trainings per seed and cell")
    total = 0.0
    for cell in cells(config):
        steps = cell.samples // config.batch_size
        compiled = resolve_compile(options["compile"], steps)
        torch.manual_seed(0)
        model = build_model(config.model, 9, 1, width=cell.width)
        flops = flops_per_image(copy.deepcopy(model), *next(iter(stream.epoch(0))))
        run, _first = fit_loop(model, stream, options["memory_format"], options["precision"], compiled)
        seconds = statistics.median(timed(run) for _ in range(3))
        rates.append(matmul_rate())
        ips = config.batch_size * BATCHES / seconds
        hours = trainings * len(cell.seeds) * cell.samples / (ips * workers) / 3600
        total += hours
        print(f"  {cell.key:<7} {cell.samples:>8,} samples, {steps:>6,} steps, {len(cell.seeds)} seeds, "
              f"{options['memory_format']} {options['precision']} compile {compiled}: {ips:5.0f} img/s per training "
              f"({ips * flops / statistics.median(rates):5.1%} of fp32 matmul), {hours:4.1f} h")
    print(f"  the whole budget response: {total:.1f} h of training on this machine")


if __name__ == "__main__":
    main()
