"""Live continual learning: drifting cameras the package never saw, learning off / live AMS / AMS + zoo.

The learning side of the serving path, in one process and on video time: every camera's frames go
through `LiveSampler` (ASR rate from the trainer's answer, batches of `--live-batch`), the oracle
teacher labels the batch, `LiveLearning.measure` scores the deployed model (and the app's other
candidates) on it, the samples enter `AmsTrainer`'s buffer, due jobs retrain (with the safety check),
and in zoo mode drift (or a camera's first batch) asks the zoo for an expert (a strict lead on the
batch: `--switch-margin`), a switch is undone if the replaced model wins one of the next
`--own-batches` batches, and retrained models are offered to the zoo: the same
objects the RetrainWorker actor wraps. What is not here: HTTP, Ray and the GPU (the Serve path is
covered by tests/integration/test_ams_http.py). The served model is the job's model itself, as
after a hot swap.

The world (RECL's recurring scenes): the cameras share a small pool of scene types (`--scene-types`
4, each camera cycling through `--haunts` 3 of them in 30-60 s stretches), none of them in the
package's source world, and join the fleet one after another (`--stagger-s` 20 s apart), so the
scene a camera drifts into, or starts in, is often one another camera has already been in.

Modes, same teacher and the same frames: (a) `off` (the package's model as trained; the samples are
still labelled, for the live estimates), (b) `ams`, (c) `zoo`. Accuracy against ground truth on
every frame a camera streams. Keys (issue 17): rows [{mode, minute, accuracy, event_f1}],
gain_learning (b - a, points), gain_zoo ((c) - (b) over the minutes after each scene change and
each late camera's join; `gain_zoo_scene_changes` and `gain_zoo_joins` alone; `gain_zoo_per_seed`
on `--zoo-seeds` worlds), plan_f1_error_validation / _live (|predicted - measured event F1| of the
deployed candidate, predicted from the package's validation precision/recall or from the live
estimates of mode a), learning_gpu_fraction, p99_ms_learning_on/off (inference latency per frame
with a retraining thread running beside it, or not), real_agreement_start/end (vtest.avi zones
where people come and go, OpenCV HOG people teacher on the zone at full resolution enlarged x1.5,
the student at model size). `slicing_gain_over_round_robin` (with `slicing_per_seed`):
gain-driven slicing minus round-robin, mean live accuracy in points, on item 5's mixed fleet of
benchmarks/slicing_fleet.py (8 cameras sharing the retraining GPU; 4 static, in one stable scene and
adapted to it before the run, 4 drifting and unadapted; `--slicing-fleet`, `--slicing-seeds`).

    python benchmarks/live_learning.py --quick --out out/live_learning_quick.json
    python benchmarks/live_learning.py --out out/live_learning.json   # full: 8 cameras, 8 minutes
    python benchmarks/live_learning.py --quick --only plan --out X.json   # item 4 alone (benchmarks/plan_accuracy.py)
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ams_common import Setup, fresh_app, pretrained_base
from live_real_clip import real_clip
from plan_accuracy import add_plan_arguments, plan_figures, validation_spec
from slicing_fleet import add_fleet_arguments, finish_fleet_arguments, measure
from zoo_changes import after_changes, join_frame, zoo_gains

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.event_metrics import event_score
from stemcell.eval.plotting import plt
from stemcell.learning import AmsConfig, AmsTrainer, OracleTeacher
from stemcell.learning.live import LiveSampler
from stemcell.learning.serving import LiveLearning
from stemcell.learning.teachers import (
    FrameMeta,
    presence,
)
from stemcell.learning.zoo import ModelZoo, ZooConfig, ZooStore
from stemcell.models import SegmentedNet
from stemcell.world import CLASSES, World, WorldConfig

MODES = ("off", "ams", "zoo")
# Item 5's mixed fleet: 4 of 8 cameras static and adapted to their scene before the run (200 Adam steps).
SLICING_FULL = "--static-cameras 4 --adapt-static 200 --static-segment-s 100000"
SLICING_QUICK = SLICING_FULL + " --windows 4 --pretrain-frames 200 --size 32"


@dataclass
class ModeRun:
    predictions: dict[str, np.ndarray]  # camera -> served answer on every frame
    live: LiveLearning
    retrain_s: float
    infer_s: float


def ams_config(args: argparse.Namespace) -> AmsConfig:
    return AmsConfig(input_size=args.size, iterations=args.iters, batch_size=args.batch, lr=args.lr,
                     safety_holdout=args.holdout, horizon_s=args.horizon_s)


def run_mode(mode: str, world: World, base: SegmentedNet, cams: list[int], args: argparse.Namespace,
             zoo_root: Path) -> ModeRun:
    """Stream every camera frame by frame through the live-learning components in `mode`."""
    target, app = CLASSES.index(args.app), args.app
    trainer = AmsTrainer(ams_config(args))
    ids = {f"cam{c}": c for c in cams}
    for cid in ids:
        trainer.add_job(cid, app, fresh_app(base, args.branchpoint, app), target, {"branchpoint": args.branchpoint})
    zoo = ModelZoo(ZooStore(zoo_root), base, ZooConfig(k=args.zoo_k, gamma=2, input_size=args.size)) \
        if mode == "zoo" else None
    # one candidate (the app's at --branchpoint): the other candidates' estimates are not measured here
    live = LiveLearning(trainer, lambda a, bp: fresh_app(base, bp, a), lambda a: [args.branchpoint], zoo=zoo,
                        drift_threshold=args.drift, switch_margin=args.switch_margin, own_batches=args.own_batches,
                        decisions_kept=1_000_000)  # benchmarks/live_zoo.py reads them all
    now = [0.0]
    sampler = LiveSampler(batch_size=args.live_batch, max_wait_s=args.live_batch, clock=lambda: now[0])
    teacher = OracleTeacher(world)
    n = int(args.duration_s * args.fps)
    predictions = {cid: np.zeros(n, bool) for cid in ids}
    retrain_s = infer_s = 0.0
    for i in range(n):
        now[0] = t = i / args.fps
        for cid, cam in ids.items():
            if i < join_frame(cam, args):
                continue  # not streaming yet
            frame = world.camera(cam).frame(i)
            started = time.perf_counter()
            predictions[cid][i] = trainer.job(cid, app).predict(frame[None])[0] > 0
            infer_s += time.perf_counter() - started
            batch = sampler.offer(cid, [frame], [t])
            if batch is None:
                continue
            indices = np.rint(np.asarray(batch.timestamps) * args.fps).astype(np.int64)
            labels = presence(teacher.label(batch.frames, FrameMeta(cam, indices)), CLASSES)
            drifted = live.measure(cid, [app], batch.timestamps, batch.frames, labels)
            if mode == "off":
                continue
            advice = trainer.add_samples(cid, np.asarray(batch.timestamps), batch.frames, labels)
            sampler.set_rate(cid, advice["sampling_fps"])
            for a in drifted:
                live.switch(cid, a, batch.frames, labels)
            started = time.perf_counter()
            for published in trainer.run_pending():
                if not published.kept_back:
                    live.offer(published)
            retrain_s += time.perf_counter() - started
    return ModeRun(predictions, live, retrain_s, infer_s)


def minute_rows(mode: str, run: ModeRun, world: World, cams: list[int], args: argparse.Namespace) -> list[dict]:
    span, target, rows = int(60 * args.fps), CLASSES.index(args.app), []
    n = len(next(iter(run.predictions.values())))
    for m in range(max(1, n // span)):
        accs, f1s = [], []
        for c in cams:
            a, b = max(m * span, join_frame(c, args)), (m + 1) * span
            if a >= b:
                continue
            pred, truth = run.predictions[f"cam{c}"][a:b], world.camera(c).presence()[a:b, target].astype(bool)
            accs.append(float((pred == truth).mean()))
            f1s.append(event_score(pred, truth).f1)
        rows.append({"mode": mode, "minute": m, "accuracy": float(np.mean(accs)), "event_f1": float(np.mean(f1s))})
    return rows


def zoo_seeds(base: SegmentedNet, setup: Setup, cams: list[int], args: argparse.Namespace) -> list[float | None]:
    """gain_zoo on the worlds of seeds seed+1 .. seed+zoo_seeds-1 (same package, AMS vs AMS + zoo)."""
    out = []
    for k in range(1, args.zoo_seeds):
        world = world_of(setup, argparse.Namespace(**{**vars(args), "seed": args.seed + k}))
        with tempfile.TemporaryDirectory() as tmp:
            runs = {m: run_mode(m, world, base, cams, args, Path(tmp) / m) for m in ("ams", "zoo")}
        out.append(zoo_gains(runs, world, cams, args)["all"])
    return out


def plan_errors(off: ModeRun, world: World, base: SegmentedNet, cams: list[int], args: argparse.Namespace) -> dict:
    """|predicted - measured event F1| of the deployed candidate of mode (a), predicted by the Planner's path
    from the package's validation figures or from the camera's live estimate (benchmarks/plan_accuracy.py:
    whole run, rolling, and per camera the evidence)."""
    target = CLASSES.index(args.app)
    spec = validation_spec(setup_of(args), fresh_app(base, args.branchpoint, args.app), args, ams_config(args))
    cameras = {f"cam{c}": (join_frame(c, args), world.camera(c).presence()[:, target].astype(bool)) for c in cams}
    return plan_figures(off.predictions, cameras, off.live.stats, spec, args)


def latency_p99(run: ModeRun, world: World, cams: list[int], args: argparse.Namespace, learning: bool) -> float:
    """p99 ms of one frame's inference, with a retraining thread running beside it (learning) or not."""
    trainer = run.live.trainer
    cid, cam = f"cam{cams[0]}", cams[0]
    stop = threading.Event()

    def retrain_forever() -> None:
        session = trainer.session(cid)
        while not stop.is_set():
            session.jobs[args.app].retrain(session.buffer)

    worker = threading.Thread(target=retrain_forever, daemon=True) if learning else None
    if worker is not None:
        worker.start()
    times = []
    for i in range(args.latency_frames):
        frame = world.camera(cam).frame(i)
        started = time.perf_counter()
        trainer.job(cid, args.app).predict(frame[None])
        times.append((time.perf_counter() - started) * 1000)
    stop.set()
    if worker is not None:
        worker.join()
    return float(np.percentile(times, 99))


def slicing_on_mixed_fleet(args: argparse.Namespace) -> dict[str, Any]:
    """Item 5: gain-driven slicing minus round-robin (mean live accuracy, points) on the mixed fleet of
    benchmarks/slicing_fleet.py, one value per seed: `--slicing-fleet` flags, half the cameras static
    and adapted to their scene before the run, the others drifting and unadapted."""
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
    per_seed, drop_per_seed, static_share = [], [], []
    for seed in range(args.slicing_seeds):
        policies = "gain,gain_drop,round_robin"
        fleet = parser.parse_args([*args.slicing_fleet.split(), "--seed", str(seed), "--policies", policies])
        finish_fleet_arguments(parser, fleet, args.quick)
        summary, _ = measure(fleet)
        by_policy = {s["policy"]: s for s in summary}
        per_seed.append(float(by_policy["gain"]["vs_round_robin_points"]))
        drop_per_seed.append(float(by_policy["gain_drop"]["vs_round_robin_points"]))
        static_share.append({p: int(s["static_micro_windows"]) for p, s in by_policy.items()})
    return {"slicing_gain_over_round_robin": float(np.mean(per_seed)), "slicing_per_seed": per_seed,
            # item 5's fix: expected gain = agreement drop since the last update, not the probe's gain
            "slicing_drop_prior_over_round_robin": float(np.mean(drop_per_seed)),
            "slicing_drop_prior_per_seed": drop_per_seed,
            "slicing_static_micro_windows": static_share, "slicing_fleet": args.slicing_fleet}


def world_of(setup: Setup, args: argparse.Namespace) -> World:
    """The cameras under test: a small pool of scene types they all share (`--scene-types`), each camera
    cycling through `--haunts` of them in `--segment-s` stretches, so the scene a camera drifts into is
    often one another camera (or itself, earlier) has been in: RECL's recurring scenes, where a zoo
    expert can bring a camera back at once. The pool is the target world's own (seed), never the
    source world the package was trained on."""
    return World(WorldConfig(seed=args.seed, num_cameras=args.cameras, height=setup.size, width=setup.size,
                             fps=setup.fps, duration_s=setup.duration_s, class_coverage=setup.class_coverage,
                             num_scene_types=args.scene_types, scenes_per_camera=args.haunts,
                             segment_s=tuple(args.segment_s)))


def setup_of(args: argparse.Namespace) -> Setup:
    return Setup(size=args.size, fps=args.fps, duration_s=args.duration_s, app_class=args.app,
                 branchpoint=args.branchpoint, pretrain_frames=args.pretrain_frames, pretrain_epochs=2, seed=args.seed)


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        ax.plot([r["minute"] for r in mine], [r["accuracy"] for r in mine], marker="o", label=mode)
    ax.set_xlabel("minute of video")
    ax.set_ylabel("accuracy vs ground truth")
    ax.set_title("Live continual learning on unseen drifting cameras")
    ax.legend()
    save_plot(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 cameras, 4 minutes of video")
    parser.add_argument("--out", type=Path, default=Path("out/live_learning.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cameras", type=int, help="drifting cameras (default 6 quick / 8 full)")
    parser.add_argument("--duration-s", type=float, help="video seconds per camera (default 240 / 480)")
    parser.add_argument("--fps", type=float, default=2.0, help="stream rate")
    parser.add_argument("--scene-types", type=int, default=4, help="scene types the cameras share")
    parser.add_argument("--haunts", type=int, default=3, help="scene types each camera cycles through")
    parser.add_argument("--stagger-s", type=float, default=20.0, help="camera c joins the fleet at c x this (video s)")
    parser.add_argument("--segment-s", type=float, nargs=2, default=(30.0, 60.0), metavar=("MIN", "MAX"),
                        help="length range of one scene segment (video seconds)")
    parser.add_argument("--size", type=int, default=32, help="frame side = model input")
    parser.add_argument("--app", default="car")
    parser.add_argument("--branchpoint", type=int, default=4)
    parser.add_argument("--iters", type=int, default=10, help="Adam steps per retraining phase")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--horizon-s", type=float, default=240.0, help="T_horizon of the AMS buffer (AMS's value)")
    parser.add_argument("--holdout", type=int, default=8, help="safety check: newest samples held out")
    parser.add_argument("--live-batch", type=int, default=8, help="sampled frames per teacher call")
    parser.add_argument("--drift", type=float, default=0.1, help="zoo.drift_threshold")
    parser.add_argument("--zoo-k", type=int, default=5)
    parser.add_argument("--switch-margin", type=float, default=0.0, help="zoo.switch_margin")
    parser.add_argument("--own-batches", type=int, default=8, help="zoo.own_batches")
    parser.add_argument("--zoo-seeds", type=int, default=3, help="world seeds gain_zoo is measured on (seed, seed+1, ..)")
    parser.add_argument("--pretrain-frames", type=int, help="source-world frames per camera (default 200 / 600)")
    parser.add_argument("--latency-frames", type=int, default=200)
    parser.add_argument("--real-fps", type=float, help="vtest.avi samples per second (default 1 quick / 2 full)")
    parser.add_argument("--real-hog-scale", type=float, default=1.5, help="zones enlarged this much for HOG")
    parser.add_argument("--slicing-seeds", type=int, help="seeds of the mixed slicing fleet (default 2 / 3)")
    parser.add_argument("--only", choices=("plan",), help="plan: item 4's plan errors alone (mode a, plan_errors)")
    add_plan_arguments(parser)
    parser.add_argument("--slicing-fleet", help="benchmarks/slicing_fleet.py flags of the mixed fleet "
                        f"(default quick {SLICING_QUICK!r}, full {SLICING_FULL!r})")
    args = parser.parse_args(argv)
    for name, quick, full in (("cameras", 6, 8), ("duration_s", 240.0, 480.0), ("real_fps", 1.0, 2.0),
                              ("pretrain_frames", 200, 600), ("slicing_seeds", 2, 3),
                              ("slicing_fleet", SLICING_QUICK, SLICING_FULL)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    setup = setup_of(args)
    base = pretrained_base(setup)
    world = world_of(setup, args)
    cams = list(range(args.cameras))
    if args.only == "plan":
        with tempfile.TemporaryDirectory() as tmp:
            only = {"only": "plan", **plan_errors(run_mode("off", world, base, cams, args, Path(tmp)), world, base, cams,
                                                  args)}
        save_results({**only, "config": {k: str(v) for k, v in vars(args).items()},
                      "elapsed_s": time.perf_counter() - started}, args.out)
        return
    runs, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            runs[mode] = run_mode(mode, world, base, cams, args, Path(tmp) / mode)
            rows += minute_rows(mode, runs[mode], world, cams, args)
        zoo_view = runs["zoo"].live.zoo_view()  # while its directory exists
    mean = {m: float(np.mean([r["accuracy"] for r in rows if r["mode"] == m])) for m in MODES}
    spans, gains = after_changes(world, cams, args), zoo_gains(runs, world, cams, args)
    per_seed = [gains["all"], *zoo_seeds(base, setup, cams, args)]
    b = runs["ams"]
    result: dict[str, Any] = {
        "benchmark": "live_learning", "quick": args.quick, "rows": rows,
        "gain_learning": 100 * (mean["ams"] - mean["off"]),
        "gain_zoo": gains["all"], "gain_zoo_scene_changes": gains["change"], "gain_zoo_joins": gains["join"],
        "gain_zoo_per_seed": per_seed, "gain_zoo_seed_mean": float(np.mean([g for g in per_seed if g is not None])),
        "scene_changes": len(spans["change"]), "joins": len(spans["join"]),
        **plan_errors(runs["off"], world, base, cams, args),
        "learning_gpu_fraction": b.retrain_s / (b.retrain_s + b.infer_s),
        "p99_ms_learning_on": latency_p99(b, world, cams, args, learning=True),
        "p99_ms_learning_off": latency_p99(b, world, cams, args, learning=False),
        **slicing_on_mixed_fleet(args),
        **real_clip(base, args, ams_config(args)),
        "kept_back": {m: sum(j.stats.kept_back for s in runs[m].live.trainer.sessions.values() for j in s.jobs.values())
                      for m in MODES},
        "zoo": {**{k: v for k, v in zoo_view.items() if k != "experts"}, "experts": len(zoo_view["experts"])},
        "mean_accuracy": mean,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "goals": {"gain_learning >= 5 points (full mode)": None, "gain_zoo > 0": None,
                  "plan_f1_error_live <= plan_f1_error_validation / 2": None},
    }
    result["goals"] = {
        "gain_learning >= 5 points (full mode)": result["gain_learning"] >= 5,
        "gain_zoo > 0": result["gain_zoo"] is not None and result["gain_zoo"] > 0,
        "plan_f1_error_live <= plan_f1_error_validation / 2": result["plan_f1_error_live"] is not None
        and result["plan_f1_error_live"] <= result["plan_f1_error_validation"] / 2}
    result["elapsed_s"] = time.perf_counter() - started
    print_table([{k: v for k, v in r.items()} for r in rows], title="accuracy per minute and mode")
    print_table([{k: result[k] for k in ("gain_learning", "gain_zoo", "gain_zoo_seed_mean", "plan_f1_error_validation", "plan_f1_error_live",
                                         "learning_gpu_fraction", "p99_ms_learning_on", "p99_ms_learning_off",
                                         "real_agreement_start", "real_agreement_end", "elapsed_s")}],
                title="live learning")
    save_results(result, args.out)
    plot(rows, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
