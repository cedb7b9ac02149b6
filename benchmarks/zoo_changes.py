"""Scene changes and joins of the live-learning world, and what the zoo did after each (pure numpy).

`gain_zoo` (issue 17) is (c) AMS + zoo minus (b) AMS alone over the minute after each scene change
and each late camera's join (benchmarks/live_learning.py); `change_rows` explains it change by change
(benchmarks/live_zoo.py prints them). A run is anything with `predictions` (camera -> the served
answer on every frame) and, for the zoo mode, `live` (its `LiveLearning`, whose `decisions` it reads).
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from stemcell.world import CLASSES, World


def join_frame(camera: int, args: argparse.Namespace) -> int:
    """Cameras join the fleet one after another (`--stagger-s`): a late camera starts on a scene the
    cameras before it may have been in, and its frames before the join are neither served nor scored."""
    return round(camera * args.stagger_s * args.fps)


def after_changes(world: World, cams: list[int], args: argparse.Namespace) -> dict[str, list[tuple[int, int, int]]]:
    """(camera, first frame, last frame) of the minute after each scene change inside the run
    (`change`) and after each late camera's join (`join`: its model meets a scene it never saw)."""
    n, span = int(args.duration_s * args.fps), int(60 * args.fps)
    out: dict[str, list[tuple[int, int, int]]] = {"change": [], "join": []}
    for c in cams:
        join = join_frame(c, args)
        scenes = world.camera(c).scene_ids()[:n]
        out["change"] += [(c, int(s), min(n, int(s) + span)) for s in np.flatnonzero(np.diff(scenes)) + 1 if s > join]
        out["join"] += [(c, join, min(n, join + span))] if 0 < join < n else []
    return out


def accuracy_over(run: Any, world: World, spans: list[tuple[int, int, int]], target: int) -> float | None:
    if not spans:
        return None
    return float(np.mean([_accuracy(run, world, c, a, b, target) for c, a, b in spans]))


def zoo_gain(runs: dict[str, Any], world: World, spans: list[tuple[int, int, int]], target: int) -> float | None:
    """(c) - (b), accuracy points over `spans`."""
    ams, zoo = accuracy_over(runs["ams"], world, spans, target), accuracy_over(runs["zoo"], world, spans, target)
    return None if ams is None or zoo is None else 100 * (zoo - ams)


def zoo_gains(runs: dict[str, Any], world: World, cams: list[int], args: argparse.Namespace) -> dict[str, float | None]:
    """gain_zoo over the minutes after every scene change and join, and over each kind alone."""
    spans, target = after_changes(world, cams, args), CLASSES.index(args.app)
    return {kind: zoo_gain(runs, world, found, target) for kind, found in
            (("all", spans["change"] + spans["join"]), *spans.items())}


def _accuracy(run: Any, world: World, c: int, a: int, b: int, target: int) -> float:
    return float((run.predictions[f"cam{c}"][a:b] == world.camera(c).presence()[a:b, target].astype(bool)).mean())


def change_rows(runs: dict[str, Any], world: World, cams: list[int], args: argparse.Namespace) -> list[dict]:
    """One row per scene change inside the run (see the module)."""
    target, fps, horizon = CLASSES.index(args.app), args.fps, args.horizon_s
    n = int(args.duration_s * fps)
    scenes = {c: world.camera(c).scene_ids()[:n] for c in cams}
    decisions = list(runs["zoo"].live.decisions)
    rows = []
    for c, a, b in after_changes(world, cams, args)["change"]:
        new, old = int(scenes[c][a]), int(scenes[c][a - 1])
        before = scenes[c][join_frame(c, args):a]
        recent = before[-int(horizon * fps):]
        seen = np.flatnonzero(before == new)
        earlier_elsewhere = any(int(scenes[o][join_frame(o, args):a].tolist().count(new)) for o in cams if o != c)
        mine = [d for d in decisions if d["camera"] == f"cam{c}" and d["ts"] is not None
                and a / fps <= d["ts"] < b / fps]
        first = next((d for d in mine if d["kind"] != "undone"), None)
        switch = next((d for d in mine if d["kind"] == "switch"), None)
        undone = switch is not None and any(d["kind"] == "undone" and d["ts"] > switch["ts"] for d in mine)
        rows.append({
            "camera": c, "t_s": a / fps, "scene_from": old, "scene_to": new,
            "in_buffer": bool((recent == new).any()), "seen_elsewhere": earlier_elsewhere,
            # video seconds since this camera last showed the scene (None: not since it joined)
            "last_seen_s_ago": float((len(before) - seen[-1]) / fps) if len(seen) else None,
            "acc_ams": _accuracy(runs["ams"], world, c, a, b, target),
            "acc_zoo": _accuracy(runs["zoo"], world, c, a, b, target),
            "flag_after_s": None if first is None else first["ts"] - a / fps,
            "decision": "none" if first is None else ("switch" if switch is not None else first["kind"]),
            "switch_after_s": None if switch is None else switch["ts"] - a / fps,
            "expert_fresh": None if switch is None else switch["expert_accuracy"],
            "serving_fresh": None if switch is None else switch["serving_accuracy"],
            "best_stay_expert_fresh": None if first is None or switch is not None else first["expert_accuracy"],
            "stay_serving_fresh": None if first is None or switch is not None else first["serving_accuracy"],
            "undone": undone,
        })
    for r in rows:
        r["gain"] = 100 * (r["acc_zoo"] - r["acc_ams"])
    return rows


def summarise(rows: list[dict]) -> dict[str, Any]:
    """Mean gain (points), count and mean flag delay per group of changes."""
    def group(sel: list[dict]) -> dict[str, Any]:
        delays = [r["flag_after_s"] for r in sel if r["flag_after_s"] is not None]
        return {"changes": len(sel), "gain": float(np.mean([r["gain"] for r in sel])) if sel else None,
                "acc_ams": float(np.mean([r["acc_ams"] for r in sel])) if sel else None,
                "acc_zoo": float(np.mean([r["acc_zoo"] for r in sel])) if sel else None,
                "oracle_other": float(np.mean([r["oracle_other"] or 0.0 for r in sel])) if sel else None,
                "mean_flag_after_s": float(np.mean(delays)) if delays else None}
    groups = {"all": rows,
              "new_scene_in_buffer": [r for r in rows if r["in_buffer"]],
              "new_scene_not_in_buffer": [r for r in rows if not r["in_buffer"]],
              **{f"decision_{k}": [r for r in rows if r["decision"] == k] for k in ("none", "stay", "switch")},
              "switch_undone": [r for r in rows if r["undone"]],
              "switch_kept": [r for r in rows if r["decision"] == "switch" and not r["undone"]]}
    return {name: group(sel) for name, sel in groups.items()}
