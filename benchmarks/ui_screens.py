"""Screenshots of the operator's page `/ui`, one PNG per view, from a real app with a small live fleet.

    python benchmarks/ui_screens.py --out docs/ui

The fleet is `tests.helpers.ui_fleet.live_fleet` (the browser test's): four cameras (two pushing
frames, one without frames yet, one stopped pulled camera), the decisive 'car' app, a Planner that
reports its roles' GPU shares; the gate camera keeps posting frames at 2 fps meanwhile. Headless
Chromium (Debian's `chromium` + `chromium-driver`) logs in, opens each view, waits for its content and saves `login-error.png`, `cameras.png`, `camera.png`,
`events.png`, `plan.png`, `zoo.png` in DIR; `ui_screens.json` there lists each view's file and the
seconds from opening it to its content shown (on a loaded 2-core box most of it is the app's answers).
Takes the package's training (about a minute on 2 idle cores) plus ~20 s.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray

from stemcell.eval import print_table, save_results
from tests.helpers.serving import ADMIN_TOKEN
from tests.helpers.ui_fleet import (
    PUSHED,
    Fleet,
    chromium,
    chromium_available,
    live_fleet,
)

# view -> (URL fragment, CSS selector that appears once its content is drawn)
VIEWS = {
    "cameras": ("#/cameras", ".camera-card img.thumb"),
    "camera": (f"#/camera/{PUSHED[0]}", "#apps-table"),
    "events": ("#/events", "#events-list li[data-event]"),
    "plan": ("#/plan", ".executor"),
    "zoo": ("#/zoo", "#zoo-none, #zoo-table"),
}


def _shoot(driver: Any, fleet: Fleet, out: Path) -> list[dict[str, Any]]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def wait_for(css: str) -> float:
        started = time.perf_counter()
        WebDriverWait(driver, 30, poll_frequency=0.05).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))
        return time.perf_counter() - started

    rows = []
    driver.get(f"{fleet.url}/ui/")
    wait_for("#token")
    driver.find_element(By.ID, "token").send_keys("not-the-admin-token-0123456789")
    driver.find_element(By.ID, "login-button").click()
    seconds = wait_for("#error:not([hidden])")
    driver.save_screenshot(str(out / "login-error.png"))
    rows.append({"view": "login-error", "file": "login-error.png", "seconds": round(seconds, 3)})
    driver.find_element(By.ID, "token").clear()
    driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    driver.find_element(By.ID, "login-button").click()
    for view, (fragment, ready) in VIEWS.items():
        driver.get(f"{fleet.url}/ui/{fragment}")
        if view == "events":  # a live event arrives while the page is open
            wait_for("#events-list li")
            fleet.event(PUSHED[1], fleet.latest_ts + 1)
        seconds = wait_for(ready)
        if view == "events":  # open the yard event's snapshot once it ended (each change redraws the list)
            ended = f"#events-list li.has-snapshot[data-camera='{PUSHED[1]}']:not(.open)"
            wait_for(ended)
            driver.find_element(By.CSS_SELECTOR, ended).click()
            wait_for(ended + " img.thumb")
        time.sleep(7.0 if view == "camera" else 0.5)  # the camera's latency chart gets a few points
        driver.save_screenshot(str(out / f"{view}.png"))
        rows.append({"view": view, "file": f"{view}.png", "seconds": round(seconds, 3)})
    return rows


def _keep_posting(fleet: Fleet, stop: threading.Event) -> None:
    """The gate camera streams bright frames at 2 fps, so its charts, fps and latency have data."""
    while not stop.wait(0.5):
        fleet.post(PUSHED[0], True, time.time())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs and ui_screens.json")
    args = parser.parse_args()
    if not chromium_available():
        parser.error("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args.out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="stemcell-ui-") as tmp, live_fleet(Path(tmp)) as fleet, \
                chromium(1280, 1000) as driver:
            stop = threading.Event()
            poster = threading.Thread(target=_keep_posting, args=(fleet, stop), daemon=True)
            poster.start()
            try:
                rows = _shoot(driver, fleet, args.out)
            finally:
                stop.set()
                poster.join()
    finally:
        ray.shutdown()
    print_table(rows, title=f"/ui screenshots in {args.out}")
    save_results({"views": rows}, args.out / "ui_screens.json")


if __name__ == "__main__":
    main()
