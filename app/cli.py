"""`stemcell` command line: train candidates, plan, serve, stream cameras, run the demo."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stemcell.config import ConfigError
from stemcell.scheduling.registry import SCHEDULERS
from stemcell.scheduling.slicing import SLICING_POLICIES

log = logging.getLogger("stemcell")


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from stemcell.config import PretrainSection, TrainConfig, load_config
    from stemcell.training.mtrainer import BASE_CACHE, obtain_base

    config = load_config(args.config, TrainConfig)
    if args.weights is not None:
        config = config.model_copy(update={"base": config.base.model_copy(update={"weights": args.weights})})
    if args.image_folder is not None:
        pre = config.base.pretrain if isinstance(config.base.pretrain, PretrainSection) else PretrainSection()
        pre = pre.model_copy(update={"image_folder": args.image_folder})
        config = config.model_copy(update={"base": config.base.model_copy(update={"pretrain": pre})})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / BASE_CACHE).unlink(missing_ok=True)
    obtain_base(config, args.out)
    print(f"pretrained base written to {args.out / BASE_CACHE}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from stemcell.config import TrainConfig, load_config
    from stemcell.training.mtrainer import run_trials_locally, train_package

    config = load_config(args.config, TrainConfig)
    runner = run_trials_locally
    if not args.no_ray:
        from actors.trial_runner import RayTrialRunner
        from app.runtime import ensure_ray

        ensure_ray()
        runner = RayTrialRunner(config.trainer.cpus_per_trial, config.trainer.gpus_per_trial)
    manifest = train_package(config, args.out, runner)
    from app.reports import print_manifest_summary

    print_manifest_summary(manifest)
    print(f"M-Package written to {args.out}/manifest.json")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from app.labelling import run_label

    return run_label(args)


def _cmd_plan(args: argparse.Namespace) -> int:
    from stemcell.package import load_package
    from stemcell.package.planning import problem_from_manifest
    from stemcell.scheduling import SearchTooLarge, format_schedule, get_scheduler

    manifest = load_package(args.package).manifest
    problem = problem_from_manifest(manifest, args.apps, args.budget, frame_rates=args.fps,
                                    batch_size=args.batch, correlation=args.correlation)
    policies = sorted(SCHEDULERS) if args.policy == "all" else [args.policy]
    for name in policies:
        try:
            print(format_schedule(get_scheduler(name)(problem)))
        except SearchTooLarge as exc:
            if args.policy != "all":
                raise
            print(f"plan by {name}: skipped ({exc})")
        print()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from app.serve_app import run_serve

    run_serve(str(args.config), block=True)
    return 0


def _cmd_planner(args: argparse.Namespace) -> int:
    import time

    import ray

    from actors.planner import get_or_create_planner
    from app.runtime import ensure_ray
    from stemcell.serve_config import PlannerSection, load_serve_config

    ensure_ray()
    config = load_serve_config(args.config)
    given = {k: getattr(args, k) for k in ("window_s", "total_gpu", "scheduler", "slicing") if getattr(args, k) is not None}
    settings = PlannerSection.model_validate(config.planner.model_dump() | given)  # the flags override serve.yaml
    config = config.model_copy(update={"planner": settings})
    planner = get_or_create_planner(config)
    if config.learning.enabled:
        from app.learning_service import register_learning_worker

        worker = register_learning_worker(planner, config)
        print(f"learning worker {worker['actor']} is Planner role {worker['role']} (share {worker['share']:.2f})")
    print(f"Planner running: a round every {settings.window_s:g} s over {settings.total_gpu:g} GPU (Ctrl-C to stop watching)")
    try:
        while True:
            view = ray.get(planner.current_plan.remote(), timeout=60)
            shares = ", ".join(f"{role}={state['share']:.2f}" for role, state in view.get("roles", {}).items())
            print(f"round {view['rounds']}: decision {view['last_decision_ms'] or 0:.1f} ms; shares {shares or 'none yet'}")
            if args.once:
                return 0
            time.sleep(max(settings.window_s, 1.0))
    except KeyboardInterrupt:
        return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    from app.streamer import run_stream

    token = os.environ.get(args.token_env, "")
    if not token:
        raise ValueError(f"no camera token: set ${args.token_env} to the token `POST /admin/cameras` returned")
    summary = run_stream(args.source, args.camera, args.url, token, args.fps, args.duration,
                         concurrency=args.concurrency, report_every_s=args.report_every, resize=not args.no_resize)
    return 0 if summary["frames_sent"] else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemcell",
        description="Run many video-analytics apps for many cameras on shared GPUs: shared stems "
        "(Mainstream), merged layers, continuous learning (AMS, RECL), on Ray.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="train a base model on the synthetic world or a local image folder",
                       description="Train the base network (no pretrained weights can be downloaded).")
    p.add_argument("--config", type=Path, required=True, help="train config YAML, e.g. configs/demo.yaml")
    p.add_argument("--out", type=Path, required=True, help="folder for pretrained_base.safetensors")
    p.add_argument("--weights", type=Path, help="start from a local torchvision checkpoint (loaded weights_only)")
    p.add_argument("--image-folder", type=Path, help="pretrain on a local ImageFolder tree instead of the world")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("train", help="M-Trainer: fine-tune every app at every branchpoint -> M-Package",
                       description="Fine-tune one candidate per (app, branchpoint) in parallel Ray tasks with "
                       "fractional GPU shares, measure per-segment latency, write DIR/manifest.json. "
                       "Reuses DIR/pretrained_base.safetensors when present.")
    p.add_argument("--config", type=Path, required=True, help="train config YAML, e.g. configs/demo.yaml")
    p.add_argument("--out", type=Path, required=True, help="package folder to write")
    p.add_argument("--no-ray", action="store_true", help="run trials sequentially in this process")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("label", help="auto-label videos with a teacher into a video_labels table (resumable)",
                       description="Run a teacher (a torchvision detector from a local weights file, OpenCV's HOG "
                       "people detector, your own module:factory, ...) over video files, a folder of them or a "
                       "stream, and write one row per object: video, frame, ts, class, x0, y0, x1, y1, score, "
                       "camera_id. An interrupted run resumes where it stopped when run again with the same "
                       "arguments.")
    p.add_argument("--teacher", type=Path, required=True,
                   help="YAML with a `teacher:` mapping, e.g. `teacher: {kind: opencv_hog_people, scale: 1.5}`")
    p.add_argument("--source", required=True, help="video file, folder of videos, or rtsp://... URL")
    p.add_argument("--out", type=Path, required=True, help="labels table to write (.parquet or .csv)")
    p.add_argument("--every", type=int, default=1, help="label every Nth frame (default 1: all)")
    p.add_argument("--classes", nargs="+", metavar="CLASS", help="keep only these of the teacher's classes")
    p.add_argument("--batch", type=int, default=8, help="frames per teacher call (default 8)")
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser("plan", help="M-Scheduler: choose each app's branchpoint and frame rate under a budget",
                       description="One planning round on an M-Package: Mainstream greedy (or a baseline) picks "
                       "each app's candidate and frame rate to maximise mean event F1 within a GPU budget.")
    p.add_argument("--package", type=Path, required=True, help="M-Package folder from `stemcell train`")
    p.add_argument("--apps", nargs="+", required=True, metavar="APP",
                   help="apps to run on the stream; repeat a name for several tenants with the same model set")
    p.add_argument("--budget", type=float, required=True,
                   help="GPU-seconds per second available (e.g. 0.25 = a quarter of one device)")
    p.add_argument("--policy", default="mainstream", choices=[*SCHEDULERS, "all"],
                   help="scheduler (default: mainstream greedy; optimal/exhaustive are exact references "
                   "for small instances; 'all' prints every policy)")
    p.add_argument("--fps", type=float, nargs="+", help="frame-rate menu (default: 1.25 2.5 5 10, capped at the stream's fps)")
    p.add_argument("--batch", type=int, default=8, help="batch size whose measured latency is the cost (default 8)")
    p.add_argument("--correlation", type=float, default=0.5, help="miss correlation between sampled frames (0..1)")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("serve", help="run the HTTP API (Ray Serve) for an M-Package",
                       description="Deploy the Stemcell Serve app on the cluster in RAY_ADDRESS (or the one on this "
                       "node, else a local Ray) and keep it up until Ctrl-C. The admin token is read from the "
                       "environment variable the config names (default STEMCELL_ADMIN_TOKEN).")
    p.add_argument("--config", type=Path, default=Path("configs/serve.yaml"),
                   help="serve config YAML (default configs/serve.yaml)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("planner", help="run the Planner: re-plan GPU shares every window, make-before-break",
                       description="Start (or attach to) the cluster's Planner actor for a Serve app's config: every "
                       "window it reads measured costs and accuracies, runs Mainstream greedy for inference and "
                       "RECL slicing for retraining, and moves actors to new GPU shares make-before-break. With "
                       "learning.enabled it also takes over the learning RetrainWorker (role retrain-<worker_name>). "
                       "Prints each round; the plan is also at GET /admin/plan.")
    p.add_argument("--config", type=Path, default=Path("configs/serve.yaml"), help="the Serve app's config YAML")
    p.add_argument("--window-s", type=float, help="seconds between planning rounds (default: planner.window_s)")
    p.add_argument("--total-gpu", type=float, help="GPUs the Planner may hand out (default: planner.total_gpu)")
    p.add_argument("--scheduler", choices=list(SCHEDULERS), help="inference policy (default: planner.scheduler)")
    p.add_argument("--slicing", choices=list(SLICING_POLICIES),
                   help="retraining micro-window policy (default: planner.slicing)")
    p.add_argument("--once", action="store_true", help="print the current plan once and exit")
    p.set_defaults(func=_cmd_planner)

    p = sub.add_parser("stream", help="be a camera: post frames from a file, RTSP URL or synthetic camera",
                       description="Read frames with OpenCV at --fps (dropping frames when the server is behind, "
                       "as a real camera does), post them to /cameras/ID/frames and print rolling fps and latency.")
    p.add_argument("--source", required=True,
                   help="video file, rtsp://... URL, or synthetic:N[?seed=S&size=HxW&fps=F&duration=D]")
    p.add_argument("--camera", required=True, help="camera id registered with POST /admin/cameras")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="Stemcell server (default http://127.0.0.1:8000)")
    p.add_argument("--token-env", default="STEMCELL_CAMERA_TOKEN",
                   help="environment variable holding the camera's token (default STEMCELL_CAMERA_TOKEN)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second to send (default 10)")
    p.add_argument("--duration", type=float, help="seconds to stream (default: until the source ends)")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight at once (default 2)")
    p.add_argument("--report-every", type=float, default=5.0, help="seconds between progress lines (default 5)")
    p.add_argument("--no-resize", action="store_true",
                   help="send frames whole (default: resized to the camera's input_size before JPEG encoding)")
    p.set_defaults(func=_cmd_stream)

    p = sub.add_parser("demo", help="end to end on this machine: train, plan, serve, stream cameras, report",
                       description="Start local Ray, train (or reuse) a small M-Package, plan with Mainstream, "
                       "serve it over HTTP, stream synthetic cameras and one video-file camera through it, and "
                       "score the answers against ground truth. No GPU and no downloads needed.")
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "demo.yaml",
                   help="train config for the demo package (default configs/demo.yaml)")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="cache + results folder (default runs/demo)")
    p.add_argument("--budget-models", type=float, default=1.0,
                   help="GPU budget as a multiple of one full model at the stream's frame rate (default 1)")
    p.add_argument("--cameras", type=int, default=4, help="synthetic cameras to stream (default 4; plus one file camera)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds every camera streams (default 60)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1 (default 8000)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)  # a line per request
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"stemcell {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
