"""`stemcell demo`: the whole system on one machine, no GPU and no downloads needed."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stemcell.config import TrainConfig, load_config
from stemcell.package import MPackage, PackageError, load_package
from stemcell.package.planning import problem_from_manifest
from stemcell.scheduling import Schedule, format_schedule, get_scheduler

log = logging.getLogger(__name__)


def obtain_package(config_path: Path, workdir: Path, use_ray: bool) -> MPackage:
    """Reuse the package cached in `workdir/pkg` when it verifies, else run the M-Trainer."""
    pkg_dir = workdir / "pkg"
    try:
        package = load_package(pkg_dir)
        log.info("reusing cached M-Package %s", pkg_dir)
        return package
    except PackageError as exc:
        log.info("training a new M-Package (%s)", exc)
    from stemcell.training.mtrainer import run_trials_locally, train_package

    config = load_config(config_path, TrainConfig)
    runner = run_trials_locally
    if use_ray:
        from actors.trial_runner import RayTrialRunner

        runner = RayTrialRunner(config.trainer.cpus_per_trial, config.trainer.gpus_per_trial)
    train_package(config, pkg_dir, runner)
    return load_package(pkg_dir)


def plan(package: MPackage, apps: list[str], budget_models: float) -> Schedule:
    """Mainstream greedy for the demo's apps with a budget of `budget_models` full models at full rate."""
    m = package.manifest
    full_model_s = sum(m.latency.per_frame_segment_s(8)) + m.latency.head_s["8"] / 8
    problem = problem_from_manifest(m, apps, budget_models * full_model_s * m.fps)
    schedule = get_scheduler("mainstream")(problem)
    print(format_schedule(schedule))
    return schedule


def run_demo(args: argparse.Namespace) -> int:
    from app.reports import print_manifest_summary
    from app.runtime import ensure_ray

    ensure_ray(dashboard=True)
    package = obtain_package(args.config, args.workdir, use_ray=True)
    print_manifest_summary(package.manifest)
    plan(package, [a.name for a in package.manifest.apps], args.budget_models)
    return 0
