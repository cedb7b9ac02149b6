"""A small live fleet behind a real Stemcell app, and a headless Chromium to look at its `/ui` page.

Shared by `tests/integration/test_ui.py` and `benchmarks/ui_screens.py`: the decisive 'car' app (bright
frames -> car, dark -> none) on loopback, a Planner that only reports its roles' GPU shares
(`planner.window_s: 0`: it never re-plans), and cameras in several states: two pushing frames (one
seeing a car, one not), one registered without frames yet, one pulled camera that is stopped.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import ray

from actors.planner import get_or_create_planner
from stemcell.imaging import encode_jpeg
from stemcell.serve_config import load_serve_config
from tests.helpers.builders import decisive_package
from tests.helpers.serving import ADMIN_TOKEN, served_package

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PUSHED = ("cam-gate", "cam-yard")  # post frames: the gate sees a car, the yard does not
IDLE = "cam-dock"  # registered, no frame yet
STOPPED = "cam-roof"  # a pulled camera, disabled
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")  # Debian's chromium and chromium-driver


@dataclass
class Fleet:
    url: str
    tokens: dict[str, str]  # pushed camera -> its bearer token
    http: httpx.Client  # base_url = url, no auth
    latest_ts: float  # frame time of the pushed cameras' latest frames (set up by `live_fleet`)

    def post(self, camera_id: str, bright: bool, ts: float, size: int = 96) -> dict:
        """One frame (random pixels, bright or dark) from a pushed camera; returns the answer's JSON."""
        low, high = (128, 256) if bright else (0, 128)
        frame = np.random.default_rng(int(ts * 10)).integers(low, high, (size, size, 3), dtype=np.uint8)
        answer = self.http.post(f"/cameras/{camera_id}/frames?ts={ts}", content=encode_jpeg(frame), headers={
            "Authorization": f"Bearer {self.tokens[camera_id]}", "Content-Type": "image/jpeg"})
        answer.raise_for_status()
        return answer.json()

    def event(self, camera_id: str, start_ts: float) -> None:
        """Dark, bright, bright, dark frames: the car app's event starts and ends (a snapshot is taken)."""
        for i, bright in enumerate((False, True, True, False)):
            self.post(camera_id, bright, start_ts + i)


@contextmanager
def live_fleet(root: Path) -> Iterator[Fleet]:
    """Deploy the app with the fleet registered, one event already over on the gate camera."""
    decisive_package(root / "pkg")
    extra = {"events": {"snapshot_dir": str(root / "snaps"), "stream_poll_s": 0.1}, "planner": {"window_s": 0}}
    with served_package(root, root / "pkg", "stemcell-ui", extra) as url, httpx.Client(base_url=url, timeout=60) as http:
        planner = get_or_create_planner(load_serve_config(root / "serve.yaml"))
        try:
            tokens = {}
            for cam in (*PUSHED, IDLE):
                added = http.post("/admin/cameras", headers=ADMIN, json={"camera_id": cam, "apps": ["car"]})
                added.raise_for_status()
                tokens[cam] = added.json()["token"]
            http.post("/admin/cameras", headers=ADMIN, json={
                "camera_id": STOPPED, "apps": ["car"], "enabled": False,
                "source": {"url": "rtsp://127.0.0.1:8554/roof"}}).raise_for_status()
            fleet = Fleet(url, tokens, http, latest_ts=float(round(time.time())))
            fleet.event(PUSHED[0], fleet.latest_ts - 60)
            fleet.post(PUSHED[0], True, fleet.latest_ts)  # the gate's latest frame shows a car; the yard's does not
            fleet.post(PUSHED[1], False, fleet.latest_ts)
            yield fleet
        finally:
            ray.kill(planner)


def chromium_available() -> bool:
    return all(Path(p).exists() for p in CHROMIUM) or (shutil.which("chromium") and shutil.which("chromedriver"))


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[object]:
    """A headless Chromium driven by Selenium (the Debian binaries: Selenium Manager downloads nothing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = CHROMIUM[0] if Path(CHROMIUM[0]).exists() else shutil.which("chromium")
    driver_path = CHROMIUM[1] if Path(CHROMIUM[1]).exists() else shutil.which("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()
