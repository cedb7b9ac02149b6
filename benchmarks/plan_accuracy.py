"""Issue 17 item 4, measured: does the plan made from live estimates predict a camera's event F1 better
than the plan made from the package's validation figures? (benchmarks/live_learning.py `plan_errors`;
`python benchmarks/live_learning.py --quick --only plan` runs it alone.)

Both predictions go through the Planner's own path: the app as the package describes it (validation
frame precision/recall measured on the package's own world, the package's event length) and the same
app after `stemcell.learning.live_plan.live_app` put the camera's live estimate in (live recall, live
event precision, the camera's event length), each turned into event F1 by
`stemcell.scheduling.event_f1` at the rate the camera is served (every frame). Measured: event F1 of
the served answers against ground truth on every frame (`stemcell.eval.event_metrics`). The teacher
is the oracle, so live figures are against ground truth too (a real teacher's errors would add to
the live error, not to validation's).

- whole run (`plan_f1_error_*`): the plan made from all of a camera's samples vs the F1 over its
  whole stream (join to end), as earlier sessions measured;
- rolling (`plan_f1_error_*_rolling`): every `--plan-period-s` a plan from the samples captured so
  far, once there are `--plan-min-samples`, vs the F1 measured over the *next* period: what a plan
  is for. Validation is scored on the same periods. `plan_f1_error_past_measured_rolling`: the same
  periods predicted by the event F1 *measured* so far (ground truth on every past frame), the best
  any estimate from the past can do: in this world a period holds 1-3 events and the scene changes,
  so the next period's F1 is mostly unpredictable (README, issue 17).
- `plan_f1_error_live_frame_precision`: the earlier live plan (frame precision, the package's event
  length), to show what the event figures change.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np
from ams_common import Setup, build_world

from stemcell.eval import print_table
from stemcell.eval.event_metrics import event_score
from stemcell.learning import AmsConfig
from stemcell.learning.live_plan import live_app
from stemcell.learning.live_stats import Confusion, Estimate, LiveStats
from stemcell.learning.published import model_logits
from stemcell.models import AppModel
from stemcell.scheduling.event_f1 import event_f1
from stemcell.scheduling.problem import AppSpec, Candidate
from stemcell.training import binary_metrics, world_frames
from stemcell.world import CLASSES, extract_events

CORRELATION = 0.5  # the Planner's default miss correlation (ScheduleProblem.correlation)


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan-period-s", type=float, default=60.0,
                        help="rolling plan errors: a plan every this many video seconds, scored on the next period")
    parser.add_argument("--plan-min-samples", type=int, default=50,
                        help="live samples before a plan uses them (serve.yaml's live_min_samples is 200; the "
                             "benchmark's cameras stream 2-4 minutes at ~1 sample/s)")


def validation_spec(setup: Setup, model: AppModel, args: argparse.Namespace, config: AmsConfig) -> AppSpec:
    """The app as the package knows it: frame precision/recall and event length on its own world."""
    target = CLASSES.index(args.app)
    source = build_world(setup, 2, args.seed + 1000)
    data, _ = world_frames(source, range(2), 200, seed=args.seed + 7)
    val = binary_metrics(model_logits(model, data.frames, config) > 0, data.presence[:, target])
    lengths = [e.stop - e.start for e in extract_events(source.camera(0).presence()[:, target].astype(bool))]
    return AppSpec(args.app, (Candidate(args.branchpoint, float(val.precision), float(val.recall)),),
                   event_length_frames=float(np.mean(lengths)) if lengths else 10.0)


def predicted_f1(spec: AppSpec) -> float:
    c = spec.candidates[0]
    rho = CORRELATION if c.correlation is None else c.correlation
    return float(event_f1(c.precision, c.recall, spec.event_length_frames, 1, rho))


def live_spec(spec: AppSpec, estimate: Estimate, min_samples: int, fps: float) -> AppSpec:
    return live_app(spec, {spec.candidates[0].branchpoint: estimate}, min_samples, fps)


def frame_only(estimate: Estimate) -> Estimate:
    """The estimate without its event figures: the plan earlier sessions made."""
    return dataclasses.replace(estimate, event_precision=None, event_length_s=None, miss_correlation=None)


def whole_run(pred: np.ndarray, truth: np.ndarray, estimate: Estimate, spec: AppSpec,
              args: argparse.Namespace) -> dict[str, Any]:
    """One camera's plan from all its samples vs its whole stream, with the evidence behind it."""
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    measured = event_score(pred, truth)
    lengths = [(e.stop - e.start) / args.fps for e in extract_events(truth)]
    live = live_spec(spec, estimate, args.plan_min_samples, args.fps)
    return {
        "samples": estimate.samples, "live_precision": estimate.precision, "live_precision_ci": estimate.precision_ci,
        "live_recall": estimate.recall, "live_recall_ci": estimate.recall_ci,
        "frame_precision": tp / (tp + fp) if tp + fp else None, "frame_recall": tp / (tp + fn) if tp + fn else None,
        "live_event_precision": estimate.event_precision, "live_event_precision_ci": estimate.event_precision_ci,
        "event_precision": measured.precision, "events": measured.true_events,
        "predicted_events": measured.predicted_events,
        "live_event_length_s": estimate.event_length_s, "event_length_s": float(np.mean(lengths)) if lengths else None,
        "package_event_length_s": spec.event_length_frames / args.fps,
        "f1_validation": predicted_f1(spec), "f1_live": predicted_f1(live),
        "f1_live_frame_precision": predicted_f1(live_spec(spec, frame_only(estimate), args.plan_min_samples,
                                                          args.fps)),
        "f1_measured": measured.f1, "live_used": live != spec}


def rolling(pred: np.ndarray, truth: np.ndarray, join: int, confusion: Confusion, spec: AppSpec,
            args: argparse.Namespace) -> list[dict[str, float]]:
    """A plan every period from the samples so far vs the next period's measured event F1 (periods
    where the live estimate has enough samples)."""
    period, out = round(args.plan_period_s * args.fps), []
    for start in range(period, len(pred) - period + 1, period):
        estimate = confusion.until((join + start) / args.fps).estimate()
        live = live_spec(spec, estimate, args.plan_min_samples, args.fps)
        if live == spec:
            continue  # too few samples: the plan still uses validation figures
        measured = event_score(pred[start:start + period], truth[start:start + period]).f1
        so_far = event_score(pred[:start], truth[:start]).f1  # ground truth on every frame so far
        out.append({"validation": abs(predicted_f1(spec) - measured), "live": abs(predicted_f1(live) - measured),
                    "past_measured": abs(so_far - measured)})
    return out


def plan_figures(predictions: dict[str, np.ndarray], cameras: dict[str, tuple[int, np.ndarray]], stats: LiveStats,
                 spec: AppSpec, args: argparse.Namespace) -> dict[str, Any]:
    """`cameras`: id -> (join frame, ground truth on every frame); `predictions`: id -> served answers."""
    per_camera, periods = [], []
    bp = spec.candidates[0].branchpoint
    for cid, (join, truth_all) in cameras.items():
        pred = predictions[cid][join:]
        truth = truth_all[join:join + len(pred)]
        confusion = stats.confusion[(cid, args.app, bp)]
        per_camera.append({"camera": cid, **whole_run(pred, truth, confusion.estimate(), spec, args)})
        periods += rolling(pred, truth, join, confusion, spec, args)
    errors = {k: float(np.mean([abs(r[k] - r["f1_measured"]) for r in per_camera]))
              for k in ("f1_validation", "f1_live", "f1_live_frame_precision")}
    print_table([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                  if not k.endswith("_ci")} for r in per_camera], title="plan: predicted vs measured event F1")
    result = {"plan_f1_error_validation": errors["f1_validation"], "plan_f1_error_live": errors["f1_live"],
            "plan_f1_error_live_frame_precision": errors["f1_live_frame_precision"],
            "plan_f1_error_validation_rolling": float(np.mean([p["validation"] for p in periods])) if periods else None,
            "plan_f1_error_live_rolling": float(np.mean([p["live"] for p in periods])) if periods else None,
            "plan_f1_error_past_measured_rolling": float(np.mean([p["past_measured"] for p in periods]))
            if periods else None,
            "plan_rolling_periods": len(periods)}
    print_table([{k[len("plan_f1_error_"):] if k.startswith("plan_f1_error_") else k: v for k, v in result.items()}],
                title="plan errors (|predicted - measured event F1|)")
    return {**result, "plan_per_camera": per_camera}
