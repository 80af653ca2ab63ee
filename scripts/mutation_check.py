"""Do the tests catch the bugs they exist for? Plant each known bug in turn and run the suite.

Every entry of MUTATIONS replaces one exact snippet of one source file (it must occur exactly once, or the
mutation is refused), runs ``pytest -x -q -p no:cacheprovider`` on the test files expected to kill it (so a kill
is fast) and, if they pass, on ``tests`` (the whole ``make test`` suite), and restores the file whatever happens.
A mutation is killed when the suite fails (the expected test files are first run unmutated: they must pass).
Prints a table and "killed K/N"; exit 1 if any survived.

    .venv/bin/python scripts/mutation_check.py                # all mutations
    .venv/bin/python scripts/mutation_check.py --only NAME    # one (repeatable)
    .venv/bin/python scripts/mutation_check.py --list

Source files are edited in place, so other processes importing poschan from the same tree meanwhile see the bug:
on a shared tree, point ``--root`` at a scratch copy (``cp -r``); the tests then import poschan from that copy.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    original: str
    mutated: str
    killers: tuple[str, ...]  # the test files expected to kill it


# One entry per planted bug: ``original`` must occur exactly once in ``file``; ``killers`` are the test files (relative
# to the root) that should fail with ``mutated`` in its place.
MUTATIONS = [
    # ---- execution (precision, compile) and the check behind the precision defaults
    Mutation("auto-bf16-only-with-amx", "src/poschan/execution.py",
             'return cpu["amx_bf16"] or cpu["avx512_bf16"]', 'return cpu["amx_bf16"]',
             ("tests/test_execution.py",)),
    Mutation("compile-decided-on-the-steps-left", "src/poschan/engine.py",
             "resolve_compile(compile, epochs * steps)", "resolve_compile(compile, (epochs - start) * steps)",
             ("tests/test_execution.py",)),
    Mutation("precision-check-decides-on-the-mean", "scripts/precision_check.py",
             "bool(-BOUND <= d[\"ci95\"][0] and d[\"ci95\"][1] <= BOUND)", "bool(-BOUND <= d[\"mean\"] <= BOUND)",
             ("tests/test_precision_check.py",)),
    # ---- retraining beside post-hoc debiasing; compiled permutation
    Mutation("negated-interval-not-reversed", "src/poschan/stats.py",
             '"ci95": [-stat["ci95"][1], -stat["ci95"][0]]}', '"ci95": [-stat["ci95"][0], -stat["ci95"][1]]}',
             ("tests/test_stats_pairs.py",)),
    Mutation("retraining-cost-not-negated", "src/poschan/control/augshift_study.py",
             '"cost": negated(paired[key + "accuracy"])', '"cost": paired[key + "accuracy"]',
             ("tests/experiments/test_debias_cmd.py",)),
    Mutation("retrained-views-unchecked", "src/poschan/experiments/debias.py",
             "    if theirs != ours:", "    if False:",
             ("tests/experiments/test_debias_cmd.py",)),
    Mutation("permutation-compiled", "src/poschan/models/heads.py",
             "    @torch.compiler.disable\n", "",
             ("tests/models/test_heads.py",)),
    # ---- the budget response: cells, trends and their verdicts
    Mutation("budget-slope-per-unit-of-log", "src/poschan/measure/budget_response.py",
             "x = np.log2(np.asarray(samples, dtype=float))", "x = np.log(np.asarray(samples, dtype=float))",
             ("tests/measure/test_budget_response.py",)),
    Mutation("budget-slope-uncentred", "src/poschan/measure/budget_response.py",
             "centred = x - x.mean()", "centred = x",
             ("tests/measure/test_budget_response.py",)),
    Mutation("budget-trend-without-a-flat-band", "src/poschan/measure/budget_response.py",
             "if -FLAT_PER_DOUBLING < lo and hi < FLAT_PER_DOUBLING:", "if False:",
             ("tests/measure/test_budget_response.py",)),
    Mutation("budget-share-read-as-accuracy", "src/poschan/measure/budget_response.py",
             "return (means[..., 0] - chance) / (means[..., 1] - chance)", "return means[..., 0]",
             ("tests/measure/test_budget_response.py",)),
    Mutation("budget-epochs-grow-with-the-budget", "src/poschan/measure/budget_response.py",
             "round(c.base_epochs * multiple ** 0.5)", "round(c.base_epochs * multiple)",
             ("tests/measure/test_budget_response.py",)),
    Mutation("budget-trend-claim-ignores-direction", "src/poschan/report/claims.py",
             'direction(slope, t["toward"], FLAT_PER_DOUBLING)', 'direction(slope, 1, FLAT_PER_DOUBLING)',
             ("tests/report/test_claims.py",)),
    # ---- permutation controls
    Mutation("test-only-per-sample", "src/poschan/measure/gap_study.py",
             "with permute_channels(model, layer_of(model), where=\"input\"):",
             "with permute_channels(model, layer_of(model), per_sample=True, where=\"input\"):",
             ("tests/measure/test_permutation_known_answers.py",)),
    Mutation("permute-input-always-per-sample", "src/poschan/taps.py",
             "permute = ChannelPermute(per_sample, generator)", "permute = ChannelPermute(True, generator)",
             ("tests/measure/test_permutation_known_answers.py",)),
    Mutation("permute-fixed-reversal", "src/poschan/models/heads.py",
             "return x[:, torch.randperm(c, device=where, generator=self.generator).to(x.device)]",
             "return x[:, torch.arange(c - 1, -1, -1, device=x.device)]",
             ("tests/measure/test_permutation_known_answers.py",)),
    Mutation("per-sample-shared-order", "src/poschan/models/heads.py",
             "order = torch.rand(b, c, device=where, generator=self.generator).argsort(dim=1).to(x.device)",
             "order = torch.rand(1, c, device=where, generator=self.generator).argsort(dim=1).repeat(b, 1).to(x.device)",
             ("tests/measure/test_permutation_known_answers.py",)),
    Mutation("permute-input-never-per-sample", "src/poschan/taps.py",
             "permute = ChannelPermute(per_sample, generator)", "permute = ChannelPermute(False, generator)",
             ("tests/measure/test_permutation_known_answers.py",)),
    # ---- training engine
    Mutation("engine-no-epoch-reseed", "src/poschan/engine.py",
             "            torch.manual_seed(epoch_seed(seed, epoch))\n            net.train()\n",
             "            net.train()\n",
             ("tests/test_engine.py",)),
    Mutation("engine-no-eval-rng-fork", "src/poschan/engine.py",
             "                with seeded_torch_rng(evaluation_seed(seed, epoch)):\n"
             "                    row.update(evaluate(model, epoch + 1))\n",
             "                torch.manual_seed(evaluation_seed(seed, epoch))\n"
             "                row.update(evaluate(model, epoch + 1))\n",
             ("tests/test_engine.py",)),
    Mutation("initial-weights-from-the-global-rng", "src/poschan/training.py",
             "    with seeded_torch_rng(seed):\n        model = make_model()\n", "    model = make_model()\n",
             ("tests/test_training.py",)),
    # ---- torchrun: rows of every batch, weighted losses, synchronised BatchNorm, merged passes
    Mutation("ddp-rows-not-split", "src/poschan/engine.py", "x, y = rows(x), rows(y)", "x, y = x, y",
             ("tests/test_engine_ddp.py",)),
    Mutation("ddp-rank-losses-unweighted", "src/poschan/engine.py",
             "loss = loss_fn(net, to_channels_last(x, fast), y) * (share * world)",
             "loss = loss_fn(net, to_channels_last(x, fast), y)", ("tests/test_engine_ddp.py",)),
    Mutation("ddp-batchnorm-not-synced", "src/poschan/engine.py",
             "with channels_last(model, fast), synced_batchnorm(model):", "with channels_last(model, fast):",
             ("tests/test_engine_ddp.py",)),
    Mutation("cpu-syncbn-local-statistics", "src/poschan/distributed.py", "total = all_reduce(local)",
             "total = local", ("tests/test_engine_ddp.py",)),
    Mutation("ranking-merge-drops-a-rank", "src/poschan/locate/designs.py",
             "for real, null in merge((design.real, design.null))",
             "for real, null in merge((design.real, design.null))[:1]", ("tests/test_torchrun.py",)),
    Mutation("null-pairs-across-batches-not-rolled", "src/poschan/locate/designs.py",
             "return pos, a, last_b.roll(1, dims=0)", "return pos, a, last_b", ("tests/locate/test_ranking.py",)),
    Mutation("ablate-confusions-not-gathered", "src/poschan/control/ablation.py",
             "for confusions in gather_in_order(batches):", "for confusions in [c for _, c in batches]:",
             ("tests/test_torchrun.py",)),
    # ---- rankings and masks
    Mutation("ranking-ascending", "src/poschan/locate/ranking.py",
             "torch.sort(scores, descending=True, stable=True)", "torch.sort(scores, descending=False, stable=True)",
             ("tests/locate/test_ranking.py",)),
    Mutation("mask-parent-layer", "src/poschan/taps.py",
             "target = get_layer(model, layer)\n    idx =", "target = get_layer(model, layer.rpartition('.')[0] or layer)\n    idx =",
             ("tests/test_taps.py",)),
    Mutation("mask-whole-model", "src/poschan/taps.py",
             "target = get_layer(model, layer)\n    idx =", "target = model\n    idx =",
             ("tests/test_taps.py",)),
    # ---- segmentation applications
    Mutation("ablate-masks-nothing", "src/poschan/control/ablation.py",
             "idx = None if channels is None else torch.as_tensor(channels, dtype=torch.long).flatten()",
             "idx = None", ("tests/experiments/test_segmentation_known_answers.py", "tests/control/test_ablation.py")),
    Mutation("reused-ranking-reversed", "src/poschan/control/ablation.py",
             "return {seed: ranking.order(key, seed=seed) for seed in ranking.per_seed}",
             "return {seed: ranking.order(key, seed=seed).flip(0) for seed in ranking.per_seed}",
             ("tests/experiments/test_segmentation_known_answers.py", "tests/control/test_ablation.py")),
    Mutation("attack-overall-ranking", "src/poschan/control/attack.py",
             "ranked_orders(ranked, target)", 'ranked_orders(ranked, "overall")',
             ("tests/experiments/test_segmentation_known_answers.py", "tests/control/test_attack.py")),
    Mutation("matched-random-anywhere", "src/poschan/control/channel_sets.py",
             "near = candidates[distance.argsort()[:pool]]", "near = candidates", ("tests/control/test_channel_sets.py",)),
    Mutation("probe-knockout-to-the-mean", "src/poschan/locate/reliance.py",
             "knocked = (0.0 - scaler.mean_) / scaler.scale_", "knocked = 0.0 * scaler.mean_",
             ("tests/locate/test_reliance.py",)),
    Mutation("seg-flip-image-only", "src/poschan/data/stream.py",
             "return _where_flipped(flip, images), _where_flipped(flip, targets)",
             "return _where_flipped(flip, images), targets", ("tests/data/test_stream.py", "tests/data/test_scenes.py")),
    Mutation("region-miou-counts-predicted-classes", "src/poschan/metrics/segmentation.py",
             "return _mean_over(_class_ious(counts), (_split(counts)[1] > 0).astype(np.float64))",
             "return _mean_over(_class_ious(counts), (_split(counts)[1] + _split(counts)[2] > 0).astype(np.float64))",
             ("tests/metrics/test_segmentation.py",)),
    Mutation("channels-last-without-workaround", "src/poschan/execution.py",
             "    return (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)",
             "    return False and (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)",
             ("tests/test_execution.py",)),
    Mutation("channels-last-subsample-offset", "src/poschan/execution.py",
             "return (args[0][..., ::sy, ::sx], *args[1:])", "return (args[0][..., 1::sy, 1::sx], *args[1:])",
             ("tests/test_execution.py",)),
    Mutation("one-cycle-not-resumed", "src/poschan/engine.py",
             "            scheduler.load_state_dict(state[\"scheduler\"])", "            pass",
             ("tests/test_engine.py",)),
    Mutation("pgd-eps-10x", "src/poschan/control/attack.py", "budget, lower, upper = eps / s,",
             "budget, lower, upper = 10 * eps / s,",
             ("tests/experiments/test_segmentation_known_answers.py", "tests/control/test_attack.py")),
    Mutation("seg-weights-ignored", "src/poschan/experiments/seg_train.py",
             "        if c.weights is not None:\n            _load_weights(model, c.weights)",
             "        if c.weights is not None:\n            pass",
             ("tests/experiments/test_segmentation_known_answers.py",)),
    # ---- data splits
    Mutation("folder-without-split-subfolder", "src/poschan/data/sources.py",
             "    folder = Path(path) / split\n",
             "    folder = Path(path) / split if (Path(path) / split).is_dir() else Path(path)\n",
             ("tests/data/test_sources.py", "tests/experiments/test_data_splits.py")),
    Mutation("overlap-by-split-name", "src/poschan/data/fingerprint.py",
             "    shared = shared_images(a.images, b.images)",
             "    shared = len(b) if a.split == b.split else 0",
             ("tests/data/test_fingerprint.py", "tests/experiments/test_data_splits.py")),
    Mutation("seg-ranking-guard-by-name", "src/poschan/locate/ranking.py",
             "and ranked == eval_images:", "and ranked is eval_images:",
             ("tests/locate/test_segmenter_rankings.py",)),
    # ---- statistics and verdicts
    Mutation("old-two-level-bootstrap-swapped-back", "src/poschan/stats.py",
             "        found.t, out[\"method\"] = _unit_t(gs, fn, values, bounds, unit, item)\n"
             "        if found.t is not None:\n            out[\"ci95\"] = found.t.interval()\n",
             "        rng = np.random.default_rng(seed)  # units with replacement, then items within each unit\n"
             "        per_unit = np.stack([fn(g[rng.integers(0, len(g), (1000, len(g)))].mean(axis=1)) for g in gs])\n"
             "        drawn = rng.integers(0, len(gs), (1000, len(gs)))\n"
             "        dist = per_unit[drawn, np.arange(1000)[:, None]].mean(axis=1)\n"
             "        out[\"ci95\"] = [float(np.quantile(dist, 0.025)), float(np.quantile(dist, 0.975))]\n"
             "        out[\"method\"] = \"two-level percentile bootstrap\"\n",
             ("tests/test_stats_calibration.py",)),
    Mutation("crossed-items-ignored", "src/poschan/stats.py",
             "    return float(np.var(values, ddof=1)) / units, max(0.0, ms_items - ms_residual) / (units * items)",
             "    return float(np.var(values, ddof=1)) / units, 0.0",
             ("tests/test_stats_calibration.py",)),
    Mutation("satterthwaite-df-with-estimated-weights", "src/poschan/stats.py",
             "    t_units, t_items = _st.t.ppf(0.975, units - 1), _st.t.ppf(0.975, items - 1)\n",
             "    t_units = t_items = _st.t.ppf(0.975, var ** 2 / (v_units ** 2 / (units - 1) + v_items ** 2 / (items - 1)))\n",
             ("tests/test_stats_calibration.py",)),
    Mutation("paired-difference-unpaired", "src/poschan/stats.py",
             "    joined, left, right = _joined(a, b, metric)\n    kind =",
             "    joined, left, right = _joined(a, [g[::-1] for g in b], metric)\n    kind =",
             ("tests/test_stats.py",)),
    Mutation("verdict-ignores-the-interval", "src/poschan/report/claims.py",
             "    if lo > 0:\n        return \"reproduced\"\n",
             "    if lo + hi > 0:\n        return \"reproduced\"\n",
             ("tests/report/test_claims.py",)),
    Mutation("not-reproduced-without-a-smallest-effect", "src/poschan/report/claims.py",
             "    if hi < sesoi:\n", "    if hi <= 0:\n", ("tests/report/test_claims.py",)),
    Mutation("attack-decided-on-raw-selectivity", "src/poschan/report/claims.py",
             "direction(versus, +1, MIOU_SESOI)", "direction(r[\"selectivity\"], +1, MIOU_SESOI)",
             ("tests/report/test_claims.py",)),
    Mutation("no-false-discovery-control", "src/poschan/report/claims.py",
             "out[i].verdict == \"reproduced\" and q >= FDR", "out[i].verdict == \"reproduced\" and q > 1",
             ("tests/report/test_claims.py",)),
    Mutation("undetermined-curve-called-flat", "src/poschan/stats.py",
             "    if -FLAT_SLOPE < lo and hi < FLAT_SLOPE:\n", "    if lo <= 0 <= hi:\n",
             ("tests/test_stats_plateaus.py",)),
    Mutation("random-draws-shared-by-networks", "src/poschan/control/ranking_comparison.py",
             "random_draws=random_draws, control_seed=index,", "random_draws=random_draws, control_seed=0,",
             ("tests/experiments/test_segmentation_cmds.py",)),
    Mutation("no-variation-pooled-over-units", "src/poschan/stats.py",
             "    units, items = len(gs), max(len(g) for g in gs)\n", "    units, items = len(gs), sum(len(g) for g in gs)\n",
             ("tests/test_stats.py",)),
    Mutation("gap-comparison-against-the-wrong-net", "src/poschan/measure/gap_study.py",
             "        base = Variant(v.task, v.head, v.padding, v.grid)",
             "        base = Variant(v.task, \"gap-fc\", v.padding, v.grid)",
             ("tests/experiments/test_gap_study.py",)),
    # ---- resume and bad input
    Mutation("resume-accepts-changed-settings", "src/poschan/results.py", "        if changed:\n",
             "        if False:\n", ("tests/test_results.py", "tests/test_resume_cli.py")),
    Mutation("non-finite-accepted", "src/poschan/config.py", "        if not math.isfinite(value):\n",
             "        if False:\n", ("tests/test_config.py", "tests/test_bad_input_cli.py")),
    Mutation("divergence-not-stopped", "src/poschan/engine.py", "                if not math.isfinite(value):\n",
             "                if False:\n", ("tests/test_bad_input_cli.py",)),
    Mutation("partial-kept-after-bad-input", "src/poschan/cli.py", "        run.discard_if_new()\n",
             "        pass\n", ("tests/test_bad_input_cli.py",)),
    # ---- many runs (poschan.executor)
    Mutation("results-in-completion-order", "src/poschan/executor.py", "            self.results[i] = value\n",
             "            self.results[self.results.index(None)] = value\n", ("tests/test_executor.py",)),
    Mutation("failed-jobs-never-retried", "src/poschan/executor.py",
             "if retry and self.attempts[i] <= self.retries", "if False", ("tests/test_executor.py",)),
    Mutation("jobs-threads-left-to-the-executor", "src/poschan/executor.py",
             "    torch.set_num_threads(threads)\n    try:\n", "    try:\n", ("tests/test_executor.py",)),
    Mutation("resume-refuses-another-executor", "src/poschan/results.py",
             'SCHEDULING_KEYS = frozenset({"executor", "workers", "address", "world_size"})',
             'SCHEDULING_KEYS = frozenset({"world_size"})',
             ("tests/test_executor.py",)),
    Mutation("reproduce-trusts-a-stale-report", "src/poschan/cli.py",
             "    if report.exists() and all(finished(step, out) for step in steps):",
             "    if report.exists():",
             ("tests/experiments/test_reproduce.py",)),
    # ---- the public API
    Mutation("head-keys-kept", "src/poschan/models/weights.py",
             "            if is_head(key) and rename(key) not in backbone:", "            if False:",
             ("tests/models/test_weights.py", "tests/locate/test_rank_channels.py")),
    Mutation("plain-images-on-canvases", "src/poschan/locate/rank.py",
             'flip_input="canvas" if canvas else "image"', 'flip_input="canvas"',
             ("tests/locate/test_rank_channels.py",)),
    Mutation("per-seed-images-ignored", "src/poschan/locate/rank.py",
             "per_seed = sets if callable(images) else sets * len(seeds)", "per_seed = sets[:1] * len(seeds)",
             ("tests/locate/test_rank_channels.py",)),
    Mutation("seed-overlap-of-a-seed-with-itself", "src/poschan/locate/rank.py",
             "top_shared(per_seed[i][key], per_seed[j][key], n)", "top_shared(per_seed[i][key], per_seed[i][key], n)",
             ("tests/experiments/test_rank_cmd.py",)),
    Mutation("probe-test-channels-not-permuted", "src/poschan/measure/probe_study.py",
             '"accuracy_permuted_test": lambda: readout_outcomes(plain, test_perm, test_y)',
             '"accuracy_permuted_test": lambda: readout_outcomes(plain, test_x, test_y)',
             ("tests/measure/test_probe_study.py",)),
    Mutation("position-map-control-not-shuffled", "src/poschan/measure/position_map_study.py",
             "shuffled = (shuffle_positions(train_f, shuffle), shuffle_positions(test_f, shuffle))",
             "shuffled = (train_f, test_f)", ("tests/experiments/test_position_map.py",)),
    Mutation("permute-output-untouched", "src/poschan/taps.py",
             "lambda _m, _inp, out: permute(out)", "lambda _m, _inp, out: out", ("tests/test_taps.py",)),
    Mutation("augshift-latent-ignored", "src/poschan/control/augshift.py",
             "loss = loss + self.lam * self.latent_term(*latents.chunk(2))", "loss = loss + 0 * self.lam",
             ("tests/control/test_augshift.py",)),
    Mutation("order-free-code-keeps-the-order", "src/poschan/measure/readout.py",
             "        return x.sort(dim=1, descending=True).values\n", "        return x\n",
             ("tests/measure/test_probe_study.py",)),
]


@dataclass
class Outcome:
    status: str  # killed, survived, timeout (counts as killed), error (pytest could not run: counts as not killed)
    seconds: float
    by: str  # the first failing test


def _git_dirty(root: Path) -> str | None:
    """Why ``root``/src may not be mutated without --allow-dirty, or None."""
    done = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"{root} is not a git work tree ({done.stderr.strip()})"
    if done.stdout.strip():
        return f"uncommitted changes in {root / 'src'}:\n{done.stdout.rstrip()}"
    return None


def _drop_bytecode(path: Path) -> None:
    """Remove the cached bytecode of ``path``: a mutant and its original may share size and mtime second."""
    Path(importlib.util.cache_from_source(str(path))).unlink(missing_ok=True)


def _refusal(m: Mutation, root: Path) -> str | None:
    """Why ``m`` cannot be applied to ``root`` (its snippet must occur exactly once and change), or None."""
    if m.mutated == m.original:
        return f"mutation {m.name}: the mutated snippet equals the original"
    count = (root / m.file).read_text().count(m.original)
    return None if count == 1 else f"mutation {m.name}: the snippet occurs {count} times in {m.file} (must be once)"


def _apply(m: Mutation, root: Path) -> tuple[Path, bytes, bytes]:
    """Write the mutant; returns the file, its original bytes and the mutant's."""
    if why := _refusal(m, root):
        raise SystemExit(why)
    path = root / m.file
    original = path.read_bytes()
    mutant = original.decode().replace(m.original, m.mutated).encode()
    path.write_bytes(mutant)
    _drop_bytecode(path)
    return path, original, mutant


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0].split(" ", 1)[1]
    return ""


def _pytest(root: Path, tests: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run pytest on ``root``'s tests, importing poschan from ``root``/src, writing no bytecode."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "src"), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def run_mutation(m: Mutation, root: Path, timeout: float) -> Outcome:
    began = time.perf_counter()
    path, original, mutant = _apply(m, root)
    try:
        done = _pytest(root, list(m.killers), timeout)  # pytest would merge them into the tree order of "tests"
        if done.returncode == 0:
            done = _pytest(root, ["tests"], max(1.0, timeout - (time.perf_counter() - began)))
    except subprocess.TimeoutExpired:
        return Outcome("timeout", time.perf_counter() - began, "")
    finally:
        if path.read_bytes() != mutant:
            print(f"\nwarning: {path} was edited during the run; restoring it to its content before the mutation",
                  file=sys.stderr)
        path.write_bytes(original)
        _drop_bytecode(path)
        if path.read_bytes() != original:
            raise SystemExit(f"could not restore {path}: check it by hand")
    seconds = time.perf_counter() - began
    if done.returncode == 0:
        return Outcome("survived", seconds, "")
    if done.returncode in (1, 2):  # test failures; errors during collection (e.g. the mutant does not import)
        by = _first_failure(done.stdout) or f"pytest exit {done.returncode}"
        expected = by.split("::")[0] in m.killers
        return Outcome("killed", seconds, by if expected else f"{by} (not an expected killer)")
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
    return Outcome("error", seconds, f"pytest exit {done.returncode}: {' '.join(tail)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", metavar="NAME", help="run this mutation only (repeatable)")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--allow-dirty", action="store_true", help="mutate even with uncommitted changes in src/")
    p.add_argument("--root", type=Path, default=REPO, help="the checkout to mutate and test (default: this one)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per mutation before it counts as killed")
    args = p.parse_args(argv)
    names = [m.name for m in MUTATIONS]
    assert len(set(names)) == len(names), "mutation names must be unique"
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:<34}{m.file:<42}{', '.join(m.killers)}")
        return 0
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    root = args.root.resolve()
    if not args.allow_dirty and (why := _git_dirty(root)):
        print(f"refusing: {why}\n(commit or stash, or pass --allow-dirty)", file=sys.stderr)
        return 2
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    refusals = [why for m in chosen if (why := _refusal(m, root))]
    if refusals:  # a stale table is refused before anything is mutated
        print("\n".join(refusals), file=sys.stderr)
        return 2
    killers = list(dict.fromkeys(k for m in chosen for k in m.killers))
    baseline = _pytest(root, killers, args.timeout)
    if baseline.returncode != 0:  # else every mutation would count as killed
        print(f"refusing: the expected killers fail without any mutation ({_first_failure(baseline.stdout)})",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally restoring the file runs
    outcomes = {}
    for m in chosen:
        print(f"{m.name} ...", end=" ", flush=True)
        outcomes[m.name] = o = run_mutation(m, root, args.timeout)
        print(f"{o.status} ({o.seconds:.0f} s)", flush=True)
    print(f"\n{'mutation':<34}{'status':<10}{'seconds':>8}  killed by")
    for m in chosen:
        o = outcomes[m.name]
        print(f"{m.name:<34}{o.status:<10}{o.seconds:>8.0f}  {o.by}")
    killed = sum(o.status in ("killed", "timeout") for o in outcomes.values())
    print(f"\nkilled {killed}/{len(chosen)}")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
