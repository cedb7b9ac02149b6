"""The HAProxy half of `serve_overhead.py`, in a side process started while the main run deploys.

Serve reads `RAY_SERVE_ENABLE_HA_PROXY` when its controller, proxies and replicas start, so the
HAProxy measurements need a second local Ray whose processes all inherit the flag (as `stemcell
serve` with `http.ingress: haproxy` starts one). Starting it only after the main measurements
added a whole Ray start and Serve deployment (about 45 s on 2 cores) to `--quick`; here its Ray
starts at once (while the main run trains its package), it deploys when the package is there, waits
deployed and idle (an idle Serve costs ~1 % of a core) while the main modes are measured, and
measures when told to, after the main Ray is gone: the two sets of windows never overlap.

Protocol on the pipes: the side process prints `PID <pid>`, reads `PACKAGE` from stdin (the package is written), prints
`READY` once it serves, reads `GO`, measures, writes its results as JSON to `--results`, prints
`DONE` and exits.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ray

from serve_bench import CAMERAS, bench, deploy, http_client
from serve_load import camera_jpegs

PID, PACKAGE, READY, GO, DONE = "PID ", "PACKAGE", "READY", "GO", "DONE"


class HaproxySide:
    """Parent's handle on the side process: start it, wait until it serves, let it measure."""

    def __init__(self, package: Path, root: Path, *, resolution: int, rounds: int, warmup_s: float,
                 measure_s: float, coalesce_ms: float, threads: int) -> None:
        self.results = root / "haproxy.json"
        args = [sys.executable, __file__, "--package", str(package), "--root", str(root), "--results", str(self.results),
                "--resolution", str(resolution), "--rounds", str(rounds), "--warmup-s", str(warmup_s),
                "--measure-s", str(measure_s), "--coalesce-ms", str(coalesce_ms), "--threads", str(threads)]
        # The side process forks and its first half exits at once: the second (and its whole Ray session)
        # is then no descendant of this process, so the main run's CPU accounting (`serve_load.cpu_by_component`,
        # this process's descendants) leaves it out. The pipes stay connected; it reports its pid first.
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.pid: int | None = None  # its first line, read when needed: the main run does not wait for its imports

    def _side_pid(self) -> int:
        if self.pid is None:
            self.pid = int(self._line().removeprefix(PID))
        return self.pid

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the HAProxy side process exited")
        return line.strip()

    def _until(self, marker: str) -> None:
        while (line := self._line()) != marker:
            print(line, flush=True)  # its round lines, in the main run's output

    def _tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def package_ready(self) -> None:
        self._tell(PACKAGE)

    def wait_ready(self) -> None:
        self._side_pid()
        self._until(READY)

    def measure(self) -> dict[str, dict]:
        self._tell(GO)
        self._until(DONE)
        return json.loads(self.results.read_text())

    def stop(self) -> None:
        """Close its stdin (a side process still waiting for a line then shuts its Ray down) and, if it is
        still there after 30 s, kill it."""
        self.process.wait()  # the first half, gone at once
        try:
            pid = self._side_pid()
        except RuntimeError:  # it exited before saying who it is
            return
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except BrokenPipeError:  # it had exited already
                pass
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


def _side(args: argparse.Namespace) -> None:
    from ports import haproxy_env

    print(f"{PID}{os.getpid()}", flush=True)
    os.environ.update(haproxy_env())
    args.root.mkdir(parents=True, exist_ok=True)  # its own serve.yaml and state
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        if sys.stdin.readline().strip() != PACKAGE:
            return
        url, tokens = deploy(args.root, args.package, args.coalesce_ms, args.threads, peer=False)
        jpegs = camera_jpegs(CAMERAS, 16 if args.resolution == 128 else 4, args.resolution)
        jpegs_1080 = camera_jpegs(CAMERAS, 4, 1080)
        print(READY, flush=True)
        if sys.stdin.readline().strip() != GO:
            return

        async def run() -> dict[str, dict]:
            async with http_client(url) as http:
                b = bench(http, tokens, args.package, args.rounds, args.warmup_s, args.measure_s)
                return await b.rounds_of({"http_haproxy": b.single(jpegs, "bench"),
                                          "echo_haproxy": b.single(jpegs, "bench", "/echo"),
                                          "http_batch_haproxy": b.batch(jpegs, "bench", stream=True),
                                          "http_1080_haproxy": b.single(jpegs_1080, "bench"),
                                          "http_batch_1080_haproxy": b.batch(jpegs_1080, "bench", stream=True)})
        args.results.write_text(json.dumps(asyncio.run(run())))
        print(DONE, flush=True)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--resolution", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--warmup-s", type=float, required=True)
    parser.add_argument("--measure-s", type=float, required=True)
    parser.add_argument("--coalesce-ms", type=float, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    if os.fork():  # detach from the main run (see HaproxySide); before any thread exists
        os._exit(0)
    _side(args)
    sys.stdout.flush()
    os._exit(0)  # its Ray is down and its results written: skip the interpreter's seconds of teardown


if __name__ == "__main__":
    main()
