"""Command line: ``poschan <command> ...`` (exit 0 ok, 2 bad input with a one-line message, 1 internal error)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from poschan import distributed
from poschan.config import PRESETS, add_flags, as_dict, build_config
from poschan.errors import UserError
from poschan.models.weights import ModelNote
from poschan.results import RunDir
from poschan.stats import p_text
from poschan.tables import format_stat


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UserError(f"{self.prog}: {message}")


def _add_study_args(p: argparse.ArgumentParser, what: str) -> None:
    """The arguments of the command line itself, not config keys: the preset, the output folder, progress bars."""
    p.add_argument("--preset", default="quick", help=f"size preset{what}: {', '.join(PRESETS)} (default: quick)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """The arguments every experiment command takes besides its config's flags (the results contract)."""
    _add_study_args(p, "")
    p.add_argument("--config", help="YAML file whose keys override the preset")
    p.add_argument("--seed", type=int, help="a single seed (same as --seeds N)")
    p.add_argument("--out", required=True, help="results directory (must not exist or be empty)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run at OUT.partial")


def _overrides(args: argparse.Namespace, keys: Sequence[str]) -> dict:
    values = {k: getattr(args, k, None) for k in keys}
    if args.seed is not None:
        if args.seeds is not None:
            raise UserError("give either --seed or --seeds, not both")
        values["seeds"] = [args.seed]
    else:
        values["seeds"] = args.seeds
    return values


def _run_experiment(args: argparse.Namespace, module, config) -> int:
    """Validate (``module.prepare``), then run into OUT.partial and publish OUT atomically.

    Under torchrun every rank validates and runs; rank 0 alone checks, creates, writes and renames OUT (the
    others wait for it), and a bad input seen by any rank ends every rank with its one-line message."""
    distributed.start(config.device)
    world = distributed.rank_world()[1]
    main_rank = distributed.is_main()
    run = RunDir(args.out, {**as_dict(config), "world_size": world}, resume=args.resume)
    try:
        if main_rank:
            run.check()  # before the (possibly slow) preparation: a taken OUT or a changed resume fails at once
        plan = module.prepare(config)
    except UserError as exc:
        distributed.agree(str(exc))
    distributed.agree(None)  # every rank's input is good: only now is OUT.partial created
    try:
        work = run.open() if main_rank else run.work
    except UserError as exc:
        distributed.agree(str(exc))
    distributed.agree(None)
    began = time.perf_counter()
    try:
        metrics = module.run(plan, work, progress=args.progress and main_rank)
    except UserError:
        run.discard_if_new()
        raise
    if main_rank:
        run.write_results(module.EXPERIMENT, metrics, list(config.seeds), config.device,
                          time.perf_counter() - began, command=shlex.join(["poschan", *args.argv]))
        out = run.commit()
        getattr(module, "print_summary", _print_metrics)(metrics)
        print(f"results: {out}/results.json")
    distributed.barrier()
    return 0


def _print_metrics(metrics: dict) -> None:
    for key, value in metrics.items():
        if isinstance(value, dict) and "ci95" in value:
            value = f"{format_stat(value, p=True)}  n={value['n']}"
        elif isinstance(value, dict) and "p_value" in value:  # a test: its p-value and what it tested
            value = f"{p_text(value)}  {value.get('test', '')}".rstrip()
        print(f"{key:>16}: {value}")


# Experiment commands: each module provides EXPERIMENT, HELP, Config (a dataclass whose fields declare their flags,
# see config.setting and experiments/settings.py), prepare(config) -> plan, run(plan, work, progress) -> metrics
# and optionally print_summary(metrics).
EXPERIMENTS = {
    "train": "poschan.experiments.train",
    "position-map": "poschan.experiments.position_map",
    "gap-study": "poschan.experiments.gap_study",
    "budget-response": "poschan.experiments.budget_response",
    "probe": "poschan.experiments.probe",
    "rank": "poschan.experiments.rank",
    "augshift": "poschan.experiments.augshift",
    "seg-train": "poschan.experiments.seg_train",
    "ablate": "poschan.experiments.ablate",
    "attack": "poschan.experiments.attack",
    "debias": "poschan.experiments.debias",
    "census": "poschan.experiments.census",
}


def _experiment_command(module):
    def command(args: argparse.Namespace) -> int:
        keys = [f.name for f in dataclasses.fields(module.Config)]
        config = build_config(module.Config, module.EXPERIMENT, args.preset, args.config, _overrides(args, keys))
        return _run_experiment(args, module, config)

    return command


def cmd_models(_args: argparse.Namespace) -> int:
    from poschan.models.registry import list_models

    for name, description in list_models():
        print(f"{name:<28} {description}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from poschan.models.registry import build_model, load_factory
    from poschan.models.segmentation import TV_SEGMENTER_NAMES, build_segmentation_model, first_conv_channels
    from poschan.taps import layer_shapes

    if args.model in TV_SEGMENTER_NAMES:  # the names and shapes ablate / attack / rank see (weights change neither)
        seg = build_segmentation_model(args.model, args.num_classes)
        model, in_chans = seg.module.eval(), seg.in_chans
    elif args.segmenter:
        model = load_factory(args.model).eval()
        in_chans = first_conv_channels(model) or args.in_chans
    else:
        model = build_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans, width=args.width or 64,
                            pretrained=bool(args.pretrained), weights=args.weights).eval()
        in_chans = model.in_chans
    x = torch.zeros(1, in_chans, args.input_size, args.input_size)
    for name, shape in layer_shapes(model, x):
        print(f"{name:<40} {shape}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from poschan.report.claims import claims
    from poschan.report.document import section
    from poschan.report.render import build_report, figure_folder, to_html, to_markdown
    from poschan.results import atomic_write_text

    out = Path(args.out)
    fmt = args.format or ("md" if out.suffix.lower() == ".md" else "html")
    for taken in (out, figure_folder(out)) if fmt == "md" else (out,):
        if taken.exists():
            raise UserError(f"--out: {taken} already exists; choose a new file")
    sections = [section(run) for run in args.runs]
    report = build_report(sections, claims([s.run for s in sections]), args.title)
    text = to_markdown(report, out) if fmt == "md" else to_html(report)
    try:
        atomic_write_text(out, text)
    except OSError as exc:
        raise UserError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    print(f"report: {out}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from poschan.experiments.reproduce import StudyRunSettings, check_preset, study
    from poschan.studies import finished, run_study

    check_preset(args.preset)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(StudyRunSettings)}
    settings = StudyRunSettings(**{k: v for k, v in given.items() if v is not None})
    settings.check_executor()
    out = Path(args.out)
    report = out / "report.html"
    steps = study(args.preset, out)
    if report.exists() and all(finished(step, out) for step in steps):
        print(f"every step of {out} has finished; report: {report}")
        return 0
    common = [*(["--data-root", args.data_root] if args.data_root else []),
              *(["--device", args.device] if args.device else []), *([] if args.progress else ["--no-progress"])]
    code = run_study(steps, args.preset, out, common, settings, run_command=main, progress=args.progress)
    if code:
        return code
    runs = [str(out / step.name) for step in steps]
    report.unlink(missing_ok=True)  # one written before a step that just ran: it no longer covers the study
    return cmd_report(argparse.Namespace(runs=runs, out=str(report), format="html",
                                         title=f"poschan reproduce --preset {args.preset}"))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``command`` given) one whose other experiment commands are bare names: a command
    then imports only its own module, so the CLI starts (and refuses bad input) quickly."""
    from poschan.experiments.settings import ExecutorSettings, PlaceSettings

    parser = _Parser(prog="poschan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for name, module_name in EXPERIMENTS.items():
        if command is not None and name != command:
            sub.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        add_flags(p, module.Config)
        _add_run_args(p)
        p.set_defaults(func=_experiment_command(module))

    p = sub.add_parser("models", help="list the model names")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("layers", help="list a model's layer names and output shapes")
    p.add_argument("model")
    p.add_argument("--width", type=int)
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--weights")
    p.add_argument("--num-classes", dest="num_classes", type=int, default=10)
    p.add_argument("--in-chans", dest="in_chans", type=int, default=1)
    p.add_argument("--input-size", dest="input_size", type=int, default=84)
    p.add_argument("--segmenter", action="store_true",
                   help="MODEL is a segmentation network (tv:deeplabv3_resnet50 etc. always are), as ablate loads it")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("report", help="one self-contained HTML (or Markdown) report of finished runs: their "
                                      "tables with intervals, figures, commands, environments and configs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories (holding results.json)")
    p.add_argument("--out", required=True, help="report file to write (.html, or .md for Markdown); must not exist")
    p.add_argument("--format", choices=("html", "md"), help="default: from the --out suffix")
    p.add_argument("--title", default="poschan report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("reproduce", help="the whole study (gap-study, probe, position-map, rank, augshift, and "
                                         "seg-train + ablate + attack over layout priors) as one resumable "
                                         "pipeline ending with its report; re-run it to skip the finished steps",
                       description="The executor runs the study's independent jobs: each step alone, except each "
                                   "segmentation condition's seg-train, ablate, attack, which run in order.")
    _add_study_args(p, " of every step")
    p.add_argument("--out", required=True, help="study directory (one sub-folder per step, then report.html)")
    add_flags(p, PlaceSettings)
    add_flags(p, ExecutorSettings)
    p.set_defaults(func=cmd_reproduce)
    return parser


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning of a command as one line on stderr (a ModelNote: a note of what poschan chose)."""
    kind = "note" if issubclass(category, ModelNote) else f"warning ({category.__name__})"
    print(f"poschan: {kind}: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _one_line
        try:
            argv = list(sys.argv[1:] if argv is None else argv)
            args = build_parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
            args.argv = argv
            return args.func(args)
        except UserError as exc:
            print(f"poschan: error: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
