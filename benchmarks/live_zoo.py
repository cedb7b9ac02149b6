"""Why RECL's zoo does (not) pay off after a camera's own scene changes: one row per change.

benchmarks/live_learning.py measures `gain_zoo` = (c) AMS + zoo minus (b) AMS alone over the minute
after each scene change; this script runs only those two modes, on the same world and package, and
explains the figure change by change:
- the accuracy of each mode against ground truth in the minute after the change;
- whether the camera's AMS buffer (T_horizon) already held the new scene (the camera was in it
  within the last `horizon_s`), and whether any camera was in it before (an expert can exist);
- the zoo mode's first decision in that minute: how soon after the change drift was flagged,
  whether it switched, to which expert, how that expert and the serving model scored on the fresh
  teacher labels the safety check used, and whether the switch was undone on probation.
Summaries split the changes by "new scene in the buffer" (the AMS model has seen it recently) and by
decision. `--horizon-s` sets T_horizon (AmsConfig.horizon_s) to test the buffer-vs-scene-period
question; the world flags are live_learning.py's.

    python benchmarks/live_zoo.py --quick --out out/live_zoo_quick.json [--ams-cache DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ams_common import pretrained_base
from live_learning import ModeRun, ams_config, parse_args, run_mode, setup_of, world_of
from zoo_changes import change_rows, summarise, zoo_gains

from stemcell.eval import print_table, save_results
from stemcell.learning.published import model_logits
from stemcell.models import SegmentedNet
from stemcell.world import CLASSES, World


def oracle_experts(run: ModeRun, world: World, rows: list[dict], args: argparse.Namespace) -> None:
    """Add `oracle_other`: the best accuracy, over the minute after the change, of any expert in the final
    zoo taken from another camera (an optimistic bound of what reuse could give: it knows the ground truth
    and may use experts admitted later), and `oracle_expert` (which one)."""
    zoo, target, fps = run.live.zoo, CLASSES.index(args.app), args.fps
    assert zoo is not None
    models = {m.expert_id: (m.created_from, zoo.load_model(m.expert_id)) for m in zoo.store.metas()}
    for r in rows:
        c, a = r["camera"], round(r["t_s"] * fps)
        b = min(a + int(60 * fps), int(args.duration_s * fps))
        frames = np.stack([world.camera(c).frame(i) for i in range(a, b)])
        truth = world.camera(c).presence()[a:b, target].astype(bool)
        scores = {e: float(((model_logits(m, frames, ams_config(args)) > 0) == truth).mean())
                  for e, (cam, m) in models.items() if cam != f"cam{c}"}
        best = max(scores, key=scores.__getitem__, default=None)
        r["oracle_expert"], r["oracle_other"] = best, scores.get(best) if best else None


def ams_run(world: World, base: SegmentedNet, cams: list[int], args: argparse.Namespace, tmp: Path) -> ModeRun:
    """Mode (b), from `--ams-cache` when this world and AMS configuration ran before (the zoo flags do
    not change it): only its predictions are read here."""
    if args.ams_cache is None:
        return run_mode("ams", world, base, cams, args, tmp)
    zoo_flags = {"out", "drift", "zoo_k", "switch_margin", "own_batches", "ams_cache", "zoo_seeds", "real_fps",
                 "slicing_seeds", "slicing_fleet", "latency_frames"}
    key = hashlib.sha1(json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in zoo_flags},
                                  default=str).encode()).hexdigest()[:16]
    path = args.ams_cache / f"ams-{key}.npz"
    if path.exists():
        with np.load(path) as saved:
            return ModeRun({k: saved[k] for k in saved.files}, None, 0.0, 0.0)  # type: ignore[arg-type]
    run = run_mode("ams", world, base, cams, args, tmp)
    args.ams_cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **run.predictions)
    return run


def main(argv: list[str] | None = None) -> None:
    rest = list(sys.argv[1:] if argv is None else argv)
    cache = None
    if "--ams-cache" in rest:  # this script's own flag; the others are live_learning.py's
        at = rest.index("--ams-cache")
        cache = Path(rest[at + 1])
        del rest[at : at + 2]
    args = parse_args(rest)
    args.ams_cache = cache
    torch.set_num_threads(1)
    started = time.perf_counter()
    setup = setup_of(args)
    base = pretrained_base(setup)
    cams = list(range(args.cameras))
    per_seed, all_rows = [], []
    for k in range(args.zoo_seeds):
        seeded = argparse.Namespace(**{**vars(args), "seed": args.seed + k})  # the world's seed (and the cache key's)
        world = world_of(setup, seeded)
        with tempfile.TemporaryDirectory() as tmp:
            runs = {"ams": ams_run(world, base, cams, seeded, Path(tmp) / "ams"),
                    "zoo": run_mode("zoo", world, base, cams, args, Path(tmp) / "zoo")}
            rows = [{"seed": args.seed + k, **r} for r in change_rows(runs, world, cams, args)]
            oracle_experts(runs["zoo"], world, rows, args)
        gains = zoo_gains(runs, world, cams, args)
        all_rows += rows
        per_seed.append({"seed": args.seed + k, "gain_zoo": gains["all"], "gain_zoo_scene_changes": gains["change"],
                         "gain_zoo_joins": gains["join"], **{f"{m}_{c}": v for m in ("zoo",)
                                                             for c, v in runs[m].live.counts.items()}})
    summary = summarise(all_rows)
    gaps = [r["last_seen_s_ago"] for r in all_rows if r["last_seen_s_ago"] is not None]
    summary["revisits"] = {"changes_into_a_scene_seen_before": len(gaps), "of": len(all_rows),
                           "median_last_seen_s_ago": float(np.median(gaps)) if gaps else None,
                           "share_within_horizon": float(np.mean([g <= args.horizon_s for g in gaps])) if gaps else None,
                           "horizon_s": args.horizon_s}
    result = {"benchmark": "live_zoo", "quick": args.quick, "per_seed": per_seed, "summary": summary,
              "changes": all_rows, "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "elapsed_s": time.perf_counter() - started}
    print_table([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in all_rows],
                title="per scene change")
    print_table([{"group": g, **v} for g, v in summary.items() if g != "revisits"], title="summary")
    print_table([summary["revisits"]], title="scene revisits vs T_horizon")
    print_table(per_seed, title="per seed")
    save_results(result, args.out)


if __name__ == "__main__":
    main()
