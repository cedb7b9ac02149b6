"""The operator's page `/ui` and its pictures, against a real app on loopback with a small fleet.

The HTTP half (snapshot routes, page files) always runs; the browser half drives Debian's headless
Chromium with Selenium and is skipped where Chromium or its driver is not installed (`.ci/run`
installs them when it can): wrong token, every camera with its state, a camera, an event arriving
live with its snapshot, the plan's shares, the zoo, an empty fleet and a server that stops answering.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stemcell.imaging import decode_image
from tests.helpers.serving import ADMIN_TOKEN
from tests.helpers.ui_fleet import (
    ADMIN,
    IDLE,
    PUSHED,
    STOPPED,
    Fleet,
    chromium,
    chromium_available,
    live_fleet,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]
GATE, YARD = PUSHED


@pytest.fixture(scope="module")
def fleet(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with live_fleet(tmp_path_factory.mktemp("ui")) as running:
        yield running


def test_snapshot_is_the_latest_frame_with_cache_headers(fleet: Fleet) -> None:
    own = {"Authorization": f"Bearer {fleet.tokens[GATE]}"}
    latest = fleet.http.get(f"/cameras/{GATE}/latest", headers=own).json()
    assert latest["frame_ts"] == fleet.latest_ts and latest["results"][0]["label"] is True and latest["snapshot"]
    width, height = latest["frame_size"]  # the frame as analysed (96 px posted; smaller if the ingress resizes)
    assert latest["source_size"] == [96, 96]  # as posted: the pixels detect boxes are served in
    full = fleet.http.get(f"/cameras/{GATE}/snapshot", headers=ADMIN)
    assert full.status_code == 200 and float(full.headers["x-frame-ts"]) == fleet.latest_ts
    picture = decode_image(full.content, "image/jpeg")
    assert picture.shape == (height, width, 3) and picture.mean() > 150  # whole, and the bright frame (a car)

    answer = fleet.http.get(f"/cameras/{GATE}/snapshot", params={"side": 16}, headers=own)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert max(decode_image(answer.content, "image/jpeg").shape[:2]) == 16
    assert answer.headers["cache-control"].startswith("private") and answer.headers["etag"] != full.headers["etag"]
    again = fleet.http.get(f"/cameras/{GATE}/snapshot", params={"side": 16},
                           headers={**own, "If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""

    other = {"Authorization": f"Bearer {fleet.tokens[YARD]}"}
    assert fleet.http.get(f"/cameras/{GATE}/snapshot", headers=other).status_code == 403
    assert fleet.http.get(f"/cameras/{GATE}/snapshot").status_code == 401
    assert fleet.http.get(f"/cameras/{GATE}/snapshot", params={"side": 10_000}, headers=ADMIN).status_code == 422
    assert fleet.http.get(f"/cameras/{IDLE}/snapshot", headers=ADMIN).status_code == 404
    assert fleet.http.get("/cameras/cam-nowhere/snapshot", headers=ADMIN).status_code == 404

    assert fleet.http.get(f"/cameras/{IDLE}/latest", headers=ADMIN).json()["frame_ts"] is None


def _event_with_snapshot(fleet: Fleet, camera_id: str, timeout_s: float = 15.0) -> dict:
    """The camera's first event with a snapshot, once the event hub has it: results reach the one hub in
    batches and are held `events.reorder_s` before tracking, so an event is stored a moment after its frames."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = fleet.http.get("/admin/events", params={"camera": camera_id}, headers=ADMIN).json()["events"]
        found = [e for e in events if e["snapshot"]]
        if found or time.monotonic() > deadline:
            assert found, f"no event with a snapshot on {camera_id} after {timeout_s} s: {events}"
            return found[0]
        time.sleep(0.2)


def test_event_snapshots_are_served_to_the_admin(fleet: Fleet) -> None:
    shot = _event_with_snapshot(fleet, GATE)
    answer = fleet.http.get(f"/admin/events/{shot['event_id']}/snapshot", headers=ADMIN)
    assert answer.status_code == 200 and answer.content == Path(shot["snapshot"]).read_bytes()
    assert "immutable" in answer.headers["cache-control"]
    own = {"Authorization": f"Bearer {fleet.tokens[GATE]}"}
    assert fleet.http.get(f"/admin/events/{shot['event_id']}/snapshot", headers=own).status_code == 403
    assert fleet.http.get("/admin/events/..%2Fstate/snapshot", headers=ADMIN).status_code in (404, 422)
    assert fleet.http.get("/admin/events/abc123/snapshot", headers=ADMIN).status_code == 404


def test_page_files_are_served_with_a_strict_policy(fleet: Fleet) -> None:
    assert fleet.http.get("/ui").headers["location"] == "ui/"
    page = fleet.http.get("/ui/")
    assert page.status_code == 200 and '<script src="app.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert fleet.http.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert fleet.http.get("/ui/serve_app.py").status_code == 404


# ---------------------------------------------------------------------------------------------- browser
browser = pytest.mark.skipif(not chromium_available(), reason="no chromium + chromedriver (apt-get install "
                             "chromium chromium-driver)")


def _wait(driver, condition, timeout: float = 20.0):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the views redraw as data arrives: an element found a moment ago may be gone, so look again
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _login(driver, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/ui/")
    box = _wait(driver, lambda d: d.find_element(By.ID, "token"))
    box.clear()
    box.send_keys(token)
    driver.find_element(By.ID, "login-button").click()


@browser
def test_operator_page_in_a_real_browser(fleet: Fleet) -> None:
    from selenium.webdriver.common.by import By

    css = By.CSS_SELECTOR
    with chromium() as driver:
        _login(driver, fleet.url, "wrong-" + "x" * 26)
        error = _wait(driver, lambda d: d.find_element(By.ID, "error").is_displayed() and d.find_element(By.ID, "error"))
        assert "Wrong token" in error.text and "403" in error.text
        assert driver.find_element(By.ID, "nav").is_displayed() is False

        _login(driver, fleet.url, ADMIN_TOKEN)
        card = f".camera-card[data-camera='{GATE}']"

        def shown(d) -> dict[str, tuple[str, str]] | None:  # camera -> (state, card text), once all are drawn
            cards = d.find_elements(css, ".camera-card")
            return {c.get_attribute("data-camera"): (c.find_element(css, ".state").text, c.text) for c in cards} \
                if len(cards) == 4 and d.find_elements(css, card + " img.thumb") else None

        cameras = _wait(driver, shown)  # the grid is redrawn every 5 s: read it in one go
        assert {cam: state for cam, (state, _) in cameras.items()} == {GATE: "push", YARD: "push", IDLE: "push",
                                                                          STOPPED: "stopped"}
        assert "car: yes" in cameras[GATE][1] and "car: no" in cameras[YARD][1]
        assert driver.execute_script("return document.querySelector(arguments[0]).src", card + " img.thumb") \
            .startswith("blob:")  # fetched with the header, shown from memory
        assert driver.execute_script("return sessionStorage.getItem('stemcell.adminToken')") == ADMIN_TOKEN
        assert ADMIN_TOKEN not in driver.current_url

        driver.execute_script("document.querySelector(arguments[0]).click()", card)  # one step: no stale element
        apps = _wait(driver, lambda d: d.find_element(By.ID, "apps-table").text)  # views redraw: read text at once
        assert "car" in apps and "n/a" in apps  # F1 live: no live-learning numbers on this server
        assert driver.find_elements(css, "#camera-events li[data-event]")  # the gate's past event is listed

        driver.get(f"{fleet.url}/ui/#/events")
        _wait(driver, lambda d: d.find_element(By.ID, "stream-state").text == "live")
        before = _wait(driver, lambda d: {li.get_attribute("data-event")  # the gate's events, loaded first
                                          for li in d.find_elements(css, "#events-list li[data-event]")})
        started = time.monotonic()
        fleet.event(YARD, fleet.latest_ts + 1)  # the yard's scene turns bright, then dark: an event starts and ends
        fresh = _wait(driver, lambda d: [(li.get_attribute("data-event"), li.get_attribute("data-camera"))
                                         for li in d.find_elements(css, "#events-list li[data-event]")
                                         if li.get_attribute("data-event") not in before])
        assert fresh[0][1] == YARD and time.monotonic() - started < 15
        row = f"#events-list li[data-event='{fresh[0][0]}']"
        _wait(driver, lambda d: d.find_elements(css, row + ":not(.open)"))  # its end came too: no more redraws
        driver.find_element(css, row).click()  # its snapshot opens under it
        shot = _wait(driver, lambda d: d.find_elements(css, row + " img.thumb"))[0]
        assert _wait(driver, lambda d: d.execute_script("return arguments[0].naturalWidth", shot)) > 0  # decoded

        driver.get(f"{fleet.url}/ui/#/plan")
        roles = _wait(driver, lambda d: d.find_element(css, "table#roles-table").text)
        assert "0.25" in roles  # the executor's GPU share (served_package's executors.num_gpus)
        executor = _wait(driver, lambda d: d.find_element(css, ".executor").text)
        assert f"car@{GATE}" in executor and "branches" in executor  # the stem tree

        driver.get(f"{fleet.url}/ui/#/zoo")
        assert _wait(driver, lambda d: d.find_element(css, "#zoo-none, #zoo-table").text)  # n/a without a zoo

        for cam in (*PUSHED, IDLE, STOPPED):  # the last test of the module: the fleet may go
            assert fleet.http.delete(f"/admin/cameras/{cam}", headers=ADMIN).status_code == 200
        driver.execute_script("window.location.hash = '#/cameras'")
        assert "fleet is empty" in _wait(driver, lambda d: d.find_element(By.ID, "fleet-summary").text)

        driver.execute_cdp_cmd("Network.enable", {})  # the server stops answering: the page says so
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        driver.execute_script("window.location.hash = '#/plan'")
        dead = _wait(driver, lambda d: "Cannot reach" in (text := d.find_element(By.ID, "error").text) and text)
        assert fleet.url.split("//")[1] in dead  # shown (Selenium's text is only what is displayed)
