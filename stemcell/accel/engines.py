"""Engines built off the serving path: a segment runs in torch until its engine is ready.

The manager is asked for an engine whenever a segment enters the stem tree (`request`). It answers
at once; the build (or the load from the disk cache) runs on its own thread, and when it finishes
the engine is published with one dictionary write. The serving thread only looks engines up
(`runner`): it never waits for a build, so a camera added while its engines build is served by
the torch path meanwhile. Byte-identical segments (merged in the tree) have the same content hash
and input shape, hence the same key: one build, one engine, used by every node that holds them.

The builder and loader are injected (`stemcell.accel.tensorrt_engine` on a GPU, fakes in tests),
so the scheduling, caching and failure rules are tested on the CPU.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
import torch
from torch import nn

from stemcell.accel.engine_cache import EngineCache, EngineKey
from stemcell.control.contracts import EngineStats

log = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], torch.Tensor]  # a built engine, called like the segment it replaces
Builder = Callable[[nn.Module, EngineKey], bytes]  # segment + key -> serialised engine
Loader = Callable[[bytes, EngineKey], Runner]  # serialised engine -> runner on this process's GPU
Shape = tuple[int, ...]


class EngineManager:
    def __init__(
        self, cache: EngineCache, builder: Builder, loader: Loader, *, precision: str, max_batch: int,
        gpu_model: str, tensorrt_version: str, pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.cache = cache
        self._builder = builder
        self._loader = loader
        self._key_fields = {"precision": precision, "max_batch": max_batch, "gpu_model": gpu_model,
                            "tensorrt_version": tensorrt_version}
        self._pool = pool or ThreadPoolExecutor(1, thread_name_prefix="engine-build")
        self._lock = threading.Lock()
        self._ready: dict[tuple[str, Shape], Runner] = {}
        self._pending: dict[tuple[str, Shape], Future[None]] = {}
        self._failed: set[tuple[str, Shape]] = set()
        self._counts = {"built": 0, "loaded": 0, "build_s": 0.0}

    def key(self, segment_hash: str, input_shape: Shape) -> EngineKey:
        return EngineKey(segment_hash, tuple(input_shape), **self._key_fields)

    def request(self, segment_hash: str, module: nn.Module, input_shape: Shape) -> bool:
        """Start building (or loading) the engine of this segment at this input shape unless it is
        ready, in flight or failed before; True when a job was started. Never blocks on a build."""
        slot = (segment_hash, tuple(input_shape))
        with self._lock:
            if slot in self._ready or slot in self._pending or slot in self._failed:
                return False
            self._pending[slot] = self._pool.submit(self._obtain, slot, module)
        return True

    def runner(self, segment_hash: str, input_shape: Shape) -> Runner | None:
        """The engine for this segment and input shape if it is ready (the hot path's only call)."""
        return self._ready.get((segment_hash, input_shape))

    def _obtain(self, slot: tuple[str, Shape], module: nn.Module) -> None:
        key = self.key(*slot)
        try:
            blob = self.cache.load(key)
            if blob is None:
                started = time.perf_counter()
                blob = self._builder(module, key)
                self.cache.store(key, blob)
                with self._lock:
                    self._counts["built"] += 1
                    self._counts["build_s"] += time.perf_counter() - started
                log.info("built engine %s for segment %s %s", key.digest()[:12], slot[0][:12], slot[1])
            else:
                with self._lock:
                    self._counts["loaded"] += 1
            runner = self._loader(blob, key)
        except Exception as exc:  # noqa: BLE001 - a failed build leaves the segment on torch, serving
            log.warning("engine for segment %s %s failed, staying on torch: %s", slot[0][:12], slot[1], exc)
            with self._lock:
                self._failed.add(slot)
                del self._pending[slot]
            return
        with self._lock:
            self._ready[slot] = runner
            del self._pending[slot]

    def forget(self, live: set[tuple[str, Shape]]) -> None:
        """Drop ready engines whose segment left the tree (the disk cache keeps them for later)."""
        with self._lock:
            self._ready = {slot: r for slot, r in self._ready.items() if slot in live}

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until every build in flight is done (benchmarks and tests; never on the serving path)."""
        with self._lock:
            futures = list(self._pending.values())
        _, not_done = wait_futures(futures, timeout=timeout_s)
        return not not_done

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(len(self._ready), len(self._pending), len(self._failed), int(self._counts["built"]),
                               int(self._counts["loaded"]), float(self._counts["build_s"]))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
