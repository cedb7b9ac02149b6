"""The GPU path measured on a GPU: precision/backend speed, sharing, merged memory, shares, co-location.

    python benchmarks/gpu_path.py --out results/gpu_path.json           # ~5 min on one GPU
    python benchmarks/gpu_path.py --quick --out /tmp/gpu_path.json     # smaller, ~1 min

Without CUDA it prints one "no CUDA" line, writes the JSON with empty figures and exits 0 (the
script is part of `scripts/device_check.sh`, which runs on a GPU machine). What it measures, each
through Stemcell's own serving path (`StemTree` behind a `DevicePath`, one app unless said):

* `rows`: frames/s of mobilenet_v3_small and resnet18 at 224 px, batch 1/8/32, for torch fp32,
  torch fp16 and TensorRT fp16 (engines built by the `EngineManager`, waited for up to
  `--engine-timeout-s`; a model whose engines are not ready gets no TensorRT row, and says why);
* `ratio_max_sharing_to_single_gpu` (and no sharing): 10 apps at max sharing vs one model vs ten
  separate models, mobilenet_v3_small fp32 batch 32 (the CPU benchmark's ratios, on the GPU);
* `bytes_merged_cuda` / `bytes_no_merge_cuda`: `torch.cuda.max_memory_allocated` of 10 apps
  sharing the lower half of resnet18, merged tree vs separate models, batch 32;
* `share_enforced`: two processes at 0.25 and 0.75 of the GPU (`enforce_share`; MPS thread
  percentage where MPS runs); the small one overfills its share: its batch fails with
  DeviceOutOfMemory (503) and its next batch is served; the large one serves throughout;
* `colocated`: a teacher, a retraining loop and inference on one GPU at once, each on its own
  stream and thread: throughput of each, and whether any failed.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.gpu_share import enforce_share, mps_detected, mps_thread_percentage
from stemcell.accel import DevicePath
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.models import build_base
from stemcell.sharing import DeviceOutOfMemory, InferRequest, StemTree, perturbed_app_model
from stemcell.sharing.memory import cuda_peak_bytes
from stemcell.training.loop import fit_bce

MODELS = ("mobilenet_v3_small", "resnet18")
BATCHES = (1, 8, 32)
SETTINGS = (("torch", "fp32"), ("torch", "fp16"), ("tensorrt", "fp16"))


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON output (Parquet and PNG beside it)")
    p.add_argument("--quick", action="store_true", help="fewer timed calls, 112 px, a shorter engine wait")
    p.add_argument("--size", type=int, help="input resolution (default 224, 112 with --quick)")
    p.add_argument("--seconds", type=float, help="timed seconds per configuration (default 1.0, 0.3 with --quick)")
    p.add_argument("--engine-timeout-s", type=float, help="wait for TensorRT engines per model (default 150, 60 quick)")
    p.add_argument("--share-worker", type=float, help=argparse.SUPPRESS)  # internal: one share process
    p.add_argument("--share-overfill", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fps(fn: Callable[[], object], batch: int, seconds: float, device: torch.device) -> float:
    for _ in range(3):  # warm-up: allocator, cudnn autotune, lazy engine contexts
        fn()
    _sync(device)
    calls, started = 0, time.perf_counter()
    while calls < 5 or time.perf_counter() - started < seconds:
        fn()
        calls += 1
    _sync(device)
    return batch * calls / (time.perf_counter() - started)


def _one_app_tree(name: str, path: DevicePath, size: int) -> StemTree:
    base = build_base(name)
    path.bind(base, size)
    tree = StemTree(base.num_segments, path.device, path.dtype, path.runner)
    tree.add(("cam", "app"), perturbed_app_model(base, base.num_segments, seed=1))
    path.segments_changed([(n.digest, n.module, n.depth) for n in tree.nodes() if n.depth < base.num_segments])
    return tree


def precision_rows(size: int, seconds: float, engine_timeout_s: float, engine_dir: Path, device: torch.device,
                   models: tuple[str, ...] = MODELS) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    for name in models:
        for backend, precision in SETTINGS:
            path = DevicePath.create(device=device, precision=precision, backend=backend, max_batch=max(BATCHES),
                                     engine_dir=engine_dir)
            if path.plan.describe() != f"{precision}/{backend}":
                notes.append(f"{name} {precision}/{backend}: not available ({path.plan.reason})")
                path.close()
                continue
            tree = _one_app_tree(name, path, size)
            if path.engines is not None:
                started = time.perf_counter()
                path.engines.wait(engine_timeout_s)
                stats = path.engines.stats()
                notes.append(f"{name} engines: {stats.ready} ready, {stats.failed} failed in {time.perf_counter() - started:.0f} s")
                if stats.ready == 0 or stats.building or stats.failed:
                    path.close()
                    continue
            for batch in BATCHES:
                x = torch.randn(batch, 3, size, size, device=path.device)
                rows_of = {("cam", "app"): torch.arange(batch)}
                with path.on_stream():
                    fps = _fps(lambda: tree.forward(x, rows_of), batch, seconds, device)
                rows.append({"model": name, "backend": backend, "precision": precision, "batch": batch, "fps": fps})
            path.close()
    return rows, notes


def sharing_ratios(size: int, seconds: float, device: torch.device, model: str = "mobilenet_v3_small", apps: int = 10,
                   batch: int = 32) -> dict[str, Any]:
    base = build_base(model)
    s = base.num_segments
    single = perturbed_app_model(base, s, seed=1).to(device).eval()
    shared = StemTree(s, device)
    for i in range(apps):
        shared.add(("cam", f"app{i}"), perturbed_app_model(base, s, seed=i + 1))
    separate = [perturbed_app_model(base, 0, seed=100 + i).to(device).eval() for i in range(apps)]
    x = torch.randn(batch, 3, size, size, device=device)
    rows = {key: torch.arange(batch) for key in shared.keys()}
    with torch.inference_mode():
        fps = {"single": _fps(lambda: single(x), batch, seconds, device),
               "max_sharing": _fps(lambda: shared.forward(x, rows), batch, seconds, device),
               "no_sharing": _fps(lambda: [m(x) for m in separate], batch, seconds, device)}
    return {"fps": fps, "ratio_max_sharing_to_single_gpu": fps["max_sharing"] / fps["single"],
            "ratio_no_sharing_to_single_gpu": fps["no_sharing"] / fps["single"]}


def merged_memory(size: int, device: torch.device, model: str = "resnet18", apps: int = 10, batch: int = 32,
                  ) -> dict[str, int | None]:
    base = build_base(model)
    b = base.num_segments // 2
    models = [perturbed_app_model(base, b, seed=i + 1).eval() for i in range(apps)]
    x = torch.randn(batch, 3, size, size, device=device)
    tree = StemTree(base.num_segments, device)
    for i, m in enumerate(models):
        tree.add(("cam", f"app{i}"), m)
    rows = {key: torch.arange(batch) for key in tree.keys()}
    merged = cuda_peak_bytes(lambda: tree.forward(x, rows), device)
    tree = None  # free the merged weights before measuring the separate models
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # deepcopy: the app models share the base's stem objects; deployed alone each holds all its weights
    separate = [copy.deepcopy(m).to(device) for m in models]
    with torch.inference_mode():
        no_merge = cuda_peak_bytes(lambda: [m(x) for m in separate], device)
    return {"bytes_merged_cuda": merged, "bytes_no_merge_cuda": no_merge, "apps": apps, "branchpoint": b}


def _fill(limit_bytes: int, chunk: int = 64 << 20) -> list[torch.Tensor]:
    """Allocate 64 MiB blocks until `limit_bytes` or the first OOM (the cap, if one holds)."""
    blocks: list[torch.Tensor] = []
    try:
        while len(blocks) * chunk < limit_bytes:
            blocks.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
    except torch.OutOfMemoryError:
        pass
    return blocks


def share_worker(share: float, overfill: bool, serve_s: float = 8.0) -> dict[str, Any]:
    """One executor-like process at `share` (a StemRuntime over a tiny package).

    overfill: fill memory until the cap stops it (it must stop near `share`), then send a batch
    that needs more: it must fail as DeviceOutOfMemory, and after the memory is freed the next
    batches are served. Otherwise: hold half the GPU (more than the small share) and keep serving.
    """
    from stemcell.package import load_package
    from stemcell.sharing import StemRuntime
    from tests.helpers.builders import tiny_package

    capped = enforce_share(share)
    total = torch.cuda.get_device_properties(0).total_memory
    frames = np.zeros((32, 32, 32, 3), np.uint8)
    with tempfile.TemporaryDirectory() as root:
        tiny_package(Path(root), branchpoints=(2,), apps=("car",))
        runtime = StemRuntime(load_package(root))
        runtime.set_camera("c0", [{"app": "car", "branchpoint": 2, "fps": 10}])
    out: dict[str, Any] = {"share": share, "capped": capped, "oom_clean": None, "batches_served": 0}
    blocks = _fill(total if overfill else total // 2)
    out["held_fraction"] = len(blocks) * (64 << 20) / total
    if overfill:
        try:
            runtime.infer([InferRequest("c0", np.zeros((4096, 32, 32, 3), np.uint8))])
            out["oom_clean"] = False  # it fit: the cap did not hold
        except DeviceOutOfMemory:
            out["oom_clean"] = True
        blocks.clear()
        torch.cuda.empty_cache()
    deadline = time.monotonic() + serve_s
    while time.monotonic() < deadline:
        out["batches_served"] += isinstance(runtime.infer([InferRequest("c0", frames)])[0], list)
    return out


def share_enforcement() -> dict[str, Any]:
    """Two processes at once on this GPU, at 0.25 (overfilling) and 0.75 (plain serving)."""
    mps = mps_detected()
    procs = []
    for share, overfill in ((0.25, True), (0.75, False)):
        env = dict(os.environ)
        if mps:
            env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(mps_thread_percentage(share))
        cmd = [sys.executable, __file__, "--out", os.devnull, "--share-worker", str(share)] + (["--share-overfill"] if overfill else [])
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    reports = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=240)
        reports.append(json.loads(stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.returncode})
    small, large = reports
    ok = (small.get("oom_clean") is True and small.get("held_fraction", 1.0) <= 0.25 + 0.01
          and small.get("batches_served", 0) > 0 and large.get("held_fraction", 0.0) >= 0.45
          and large.get("batches_served", 0) > 0)
    return {"enforced": ok, "mps": mps, "small": small, "large": large}


def colocated(size: int, device: torch.device, seconds: float = 10.0, teacher_model: str = "resnet18",
              student_model: str = "mobilenet_v3_small") -> dict[str, Any]:
    """Teacher labelling, retraining and inference at once, each on its own thread and CUDA stream."""
    half = torch.float16 if device.type == "cuda" else torch.float32
    teacher = build_base(teacher_model).to(device, half).eval()
    student_base = build_base(student_model)
    app = perturbed_app_model(student_base, student_base.num_segments // 2, seed=1).to(device)
    serving = StemTree(student_base.num_segments, device, half)
    for i in range(4):
        serving.add(("cam", f"app{i}"), perturbed_app_model(student_base, student_base.num_segments, seed=i + 2))
    counts = {"teacher_frames": 0, "retrain_steps": 0, "inference_frames": 0}
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def loop(name: str, step: Callable[[], int]) -> None:
        with DevicePath.create(device=device).on_stream():  # its own CUDA stream (nothing on a CPU)
            try:
                while time.monotonic() < stop:
                    counts[name] += step()
                _sync(device)
            except Exception as exc:  # noqa: BLE001 - reported in the result
                errors.append(f"{name}: {type(exc).__name__}: {exc}"[:200])

    x16 = torch.randn(16, 3, size, size, device=device, dtype=half)
    x32 = torch.randn(32, 3, size, size, device=device, dtype=half)
    feats = torch.randn(64, 3, size, size, device=device)
    labels = torch.randint(0, 2, (64, 1), device=device).float()
    rows = {key: torch.arange(32) for key in serving.keys()}

    def teach() -> int:
        with torch.inference_mode():
            teacher(x16)
        return 16

    def retrain() -> int:
        fit_bce(app, app.trainable_parameters(), feats, labels, epochs=1, lr=1e-3, batch_size=16)
        return 4

    def infer() -> int:
        serving.forward(x32, rows)
        return 32

    threads = [threading.Thread(target=loop, args=a) for a in
               (("teacher_frames", teach), ("retrain_steps", retrain), ("inference_frames", infer))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return {**{k: v / seconds for k, v in counts.items()}, "seconds": seconds, "errors": errors, "peak_bytes": peak}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.share_worker is not None:
        print(json.dumps(share_worker(args.share_worker, args.share_overfill)))
        return 0
    empty = {"cuda": False, "rows": [], "ratio_max_sharing_to_single_gpu": None, "bytes_merged_cuda": None,
             "bytes_no_merge_cuda": None, "share_enforced": None}
    if not torch.cuda.is_available():
        print("no CUDA: benchmarks/gpu_path.py measured nothing on this machine (run scripts/device_check.sh on a GPU)")
        save_results({**empty, "reason": "no CUDA"}, args.out)
        return 0
    size = args.size or (112 if args.quick else 224)
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    device = torch.device("cuda")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as engines:
        rows, notes = precision_rows(size, seconds, args.engine_timeout_s or (60 if args.quick else 150), Path(engines), device)
    sharing = sharing_ratios(size, seconds, device)
    memory = merged_memory(size, device)
    shares = share_enforcement()
    together = colocated(size, device, 3.0 if args.quick else 10.0)
    result = {
        "cuda": True, "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "size": size, "rows": rows,
        "notes": notes, **{k: v for k, v in sharing.items()}, **memory,
        "share_enforced": shares["enforced"], "share_details": shares, "colocated": together,
        "seconds": time.perf_counter() - started,
    }
    print_table(rows, title=f"frames/s, one app through the stem tree, {size} px ({result['device']})")
    for note in notes:
        print(note)
    print(f"10 apps: max sharing / single = {sharing['ratio_max_sharing_to_single_gpu']:.3f}, no sharing / single = "
          f"{sharing['ratio_no_sharing_to_single_gpu']:.3f}; CUDA peak merged {memory['bytes_merged_cuda']} B vs "
          f"{memory['bytes_no_merge_cuda']} B; shares enforced: {shares['enforced']} (MPS {shares['mps']}); "
          f"co-located: {together}")
    out = save_results(result, args.out, rows=rows)
    if rows:
        fig, ax = plt.subplots(figsize=(8, 4))
        for (model, backend, precision) in sorted({(r["model"], r["backend"], r["precision"]) for r in rows}):
            mine = [r for r in rows if (r["model"], r["backend"], r["precision"]) == (model, backend, precision)]
            ax.plot([r["batch"] for r in mine], [r["fps"] for r in mine], marker="o", label=f"{model} {precision}/{backend}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel("frames / s")
        ax.legend(fontsize=7)
        save_plot(fig, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
