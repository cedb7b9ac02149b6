"""Closed-loop load and CPU accounting for the Serve benchmarks (`serve_overhead.py`).

`closed_loop` runs `cameras` loops that each send the next request when the previous answer
arrives, and counts only a measured window after a warm-up; `summarise` takes the median over
rounds (robust to load drifting on a shared machine); `cpu_by_component` splits the CPU seconds
of this Ray session's processes by role, which is far less sensitive to other load than wall time.
`camera_jpegs` renders the world's frames at a camera resolution (128 px squares, or 720p/1080p
by scaling the world up: the content stays learnable, the bytes are a real camera's size).
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import cv2
import numpy as np

from procstat import process_age_s
from stemcell.imaging import encode_jpeg
from stemcell.world import World, WorldConfig

RESOLUTIONS = {128: (128, 128), 720: (720, 1280), 1080: (1080, 1920)}  # --resolution -> (height, width)
COMPONENTS = (("ProxyActor", "proxy"), ("StemcellIngress", "replica"), (":Echo", "replica"),
              ("PlainModels", "replica"), ("StemExecutor", "executor"), ("RoutedExecutor", "executor"))

Send = Callable[[int, int], Awaitable[int]]  # (camera, request index) -> frames answered


def camera_jpegs(cameras: int, frames_per_camera: int, resolution: int) -> list[list[bytes]]:
    """Per camera, `frames_per_camera` JPEGs of the synthetic world at `resolution` (a RESOLUTIONS key)."""
    height, width = RESOLUTIONS[resolution]
    world = World(WorldConfig(seed=0, num_cameras=cameras, height=128, width=128, duration_s=60.0))

    def at_size(frame: np.ndarray) -> np.ndarray:
        return frame if frame.shape[:2] == (height, width) else cv2.resize(frame, (width, height),
                                                                           interpolation=cv2.INTER_LINEAR)

    return [[encode_jpeg(at_size(world.camera(c).frame(i * 7))) for i in range(frames_per_camera)]
            for c in range(cameras)]


async def closed_loop(send: Send, cameras: int, warmup_s: float, measure_s: float) -> dict:
    """`cameras` loops, each awaiting `send(camera, i) -> frames` back to back; counts the measured window."""
    latencies: list[float] = []
    frames = 0
    cpu: dict[str, float] = {}
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup_s, t_start + warmup_s + measure_s

    async def camera(c: int) -> None:
        nonlocal frames
        i = 0
        while (now := time.perf_counter()) < t_end:
            n = await send(c, i)
            done = time.perf_counter()
            if now >= t_measure and done <= t_end:
                frames += n
                latencies.append((done - now) * 1000.0)
            i += 1

    async def account() -> None:  # CPU over exactly the measured window
        await asyncio.sleep(warmup_s)
        before = cpu_by_component()
        await asyncio.sleep(measure_s)
        cpu.update({k: v - before[k] for k, v in cpu_by_component().items()})

    await asyncio.gather(account(), *(camera(c) for c in range(cameras)))
    per_request = {f"cpu_ms_{k}": 1e3 * v / max(len(latencies), 1) for k, v in cpu.items()}  # per request
    return {"fps": frames / measure_s, "rps": len(latencies) / measure_s, "latencies_ms": latencies, **per_request}


def summarise(windows: list[dict]) -> dict:
    """Median throughput over the rounds (robust to load drifting during the run); latency over all requests."""
    lat = np.concatenate([w["latencies_ms"] for w in windows]) if windows else np.array([np.nan])
    cpu = {k: float(np.median([w[k] for w in windows])) for k in windows[0] if k.startswith("cpu_ms_")}
    return {"fps": float(np.median([w["fps"] for w in windows])), "rps": float(np.median([w["rps"] for w in windows])),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "requests": int(lat.size), "rounds": len(windows), **cpu,
            "cpu_ms_server": sum(cpu[f"cpu_ms_{k}"] for k in ("proxy", "replica", "executor")),
            "cpu_ms_total": sum(cpu.values()),
            **{k: float(np.median([w[k] for w in windows])) for k in windows[0] if k == "executor_batch_frames"}}


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, title, CPU seconds) from /proc (Linux); empty elsewhere."""
    table = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), title, (int(fields[11]) + int(fields[12])) / tick)
    return table


def cpu_by_component() -> dict[str, float]:
    """CPU seconds used so far by this Ray session's processes, by role (this process = client).

    Only descendants of this process count (the local Ray started here), so other Ray sessions on
    the machine are not mixed in.  CPU time, unlike wall time, is little affected by other load.
    """
    table = _process_table()
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    totals = {"client": table.get(me, (0, "", 0.0))[2], "proxy": 0.0, "replica": 0.0, "executor": 0.0, "other": 0.0}
    stack = list(children.get(me, []))
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        title = table[pid][1]
        role = next((r for key, r in COMPONENTS if key in title), "other")
        totals[role] += table[pid][2]
    return totals


class Phases:
    """Wall seconds of each start-up and measurement phase, printed as each ends: where the run's time goes,
    with the CPU seconds this process and its Ray session's living processes used meanwhile (the side
    session is no descendant: not counted), which tells a CPU-bound phase from one that waits."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"imports": process_age_s()}
        self._last = time.perf_counter()
        self._cpu = sum(cpu_by_component().values())

    def done(self, name: str) -> None:
        now, cpu = time.perf_counter(), sum(cpu_by_component().values())
        self.seconds[name] = round(now - self._last, 2)
        print(f"[{process_age_s():5.1f} s] {name} took {self.seconds[name]:.1f} s "
              f"({cpu - self._cpu:.1f} CPU-s here)", flush=True)
        self._last, self._cpu = now, cpu
