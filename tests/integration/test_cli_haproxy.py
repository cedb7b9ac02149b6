"""`stemcell serve` with `http.ingress: haproxy`, end to end from the command line.

The CLI process starts its own local Ray (`RAY_ADDRESS=local`: it must not join another Ray on the
box) and must put Serve behind HAProxy by itself: the test's environment does not carry Serve's
feature flag, only private HAProxy ports and paths so that it can share the machine.  A camera is
registered and a frame answered through HAProxy; Ctrl-C stops the server.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from benchmarks.harness import jpeg_frames, write_serve_config
from benchmarks.ports import haproxy_env, reserved_port
from stemcell.client import Admin
from stemcell.serve_config import HttpSection
from tests.helpers.builders import tiny_package

START_S = 300.0  # a cold local Ray + Serve + HAProxy on a loaded 2-core box


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_S
    with httpx.Client(base_url=url, timeout=5.0) as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"stemcell serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            try:
                if http.get("/healthz").status_code == 200 and http.get("/-/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    pytest.fail(f"stemcell serve did not answer within {START_S:.0f} s:\n{log.read_text()[-3000:]}")


def _descendant_names(pid: int) -> set[str]:
    try:
        return {child.name() for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def test_stemcell_serve_behind_haproxy(tmp_path: Path) -> None:
    tiny_package(tmp_path / "pkg", branchpoints=(0, 6), apps=("car",))
    config = write_serve_config(tmp_path, tmp_path / "pkg", app_name="cli-haproxy", namespace="cli-haproxy",
                                token_env="STEMCELL_CLI_HAPROXY_TOKEN")
    flag_env = HttpSection(ingress="haproxy").serve_env()
    env = {k: v for k, v in os.environ.items() if k not in flag_env}
    env.update({k: v for k, v in haproxy_env().items() if k not in flag_env})  # private ports and paths only
    env.update(RAY_ADDRESS="local", STEMCELL_CLI_HAPROXY_TOKEN="t" * 32, RAY_USAGE_STATS_ENABLED="0")
    log = tmp_path / "serve.log"
    with reserved_port() as port:  # HAProxy binds with SO_REUSEPORT, like Serve's proxy
        data = yaml.safe_load(config.read_text())
        data["http"] = {"host": "127.0.0.1", "port": port, "ingress": "haproxy"}
        config.write_text(yaml.safe_dump(data))
        with log.open("w") as out:
            proc = subprocess.Popen([str(Path(sys.executable).with_name("stemcell")), "serve", "--config", str(config)],
                                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc, log)
            assert "haproxy" in _descendant_names(proc.pid)  # the CLI put Serve behind HAProxy by itself
            with Admin(url, "t" * 32, timeout=60.0) as admin:
                token = admin.add_camera("cam-0", ["car"])["token"]
            r = httpx.post(f"{url}/cameras/cam-0/frames", content=jpeg_frames(1)[0], timeout=60.0,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"})
            assert r.status_code == 200, r.text
            (result,) = r.json()["results"]
            assert result["app"] == "car" and 0.0 <= result["score"] <= 1.0
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the CLI deletes the app and its local Ray ends with it
            assert proc.wait(timeout=120) == 0
            assert "Stemcell is serving" in log.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            print(log.read_text()[-4000:])  # shown by pytest when the test fails: what the server said
