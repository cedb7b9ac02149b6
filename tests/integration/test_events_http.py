"""Events end to end: pushed frames -> event start/end -> StateStore, SSE stream, signed webhook on loopback."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from stemcell.imaging import encode_jpeg
from tests.helpers.builders import decisive_package
from tests.helpers.serving import ADMIN_TOKEN, served_package

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]
SECRET = "webhook-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Receiver(BaseHTTPRequestHandler):
    got: list[tuple[bytes, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        Receiver.got.append((self.rfile.read(int(self.headers["Content-Length"])), self.headers["X-Stemcell-Signature"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.got = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def _follow_stream(url: str, seen: list[str], opened: threading.Event, stop: threading.Event) -> None:
    try:
        with httpx.stream("GET", f"{url}/admin/events:stream", headers=ADMIN, timeout=30) as answer:
            for line in answer.iter_lines():
                opened.set()  # the first line (a comment) comes once the stream's start seq is fixed
                if line.startswith("event: "):
                    seen.append(line[len("event: "):])
                if stop.is_set():
                    return
    except httpx.TransportError:  # the server shut down under an open stream at the end of the test
        return


def _post_until_start_and_end(http: httpx.Client, token: str) -> list[bool]:
    """Dark, bright, bright, dark frames (the 'car' app learnt brightness) until its event turned on and
    off again; returns the labels seen."""
    labels: list[bool] = []
    for ts, (low, high) in enumerate([(0, 128), (128, 256), (128, 256), (0, 128)] * 3):
        frame = np.random.default_rng(ts).integers(low, high, (32, 32, 3), dtype=np.uint8)
        answer = http.post(f"/cameras/cam-ev/frames?ts={1000 + ts}", content=encode_jpeg(frame),
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        labels.append(answer.json()["results"][0]["event_active"])
        if True in labels and labels[-1] is False:
            return labels
    return labels


def test_events_reach_store_sse_and_a_signed_webhook(tmp_path: Path, receiver: str) -> None:
    decisive_package(tmp_path / "pkg")
    extra = {"webhooks": {"allow_private": True, "backoff_s": 0.05},
             "events": {"snapshot_dir": str(tmp_path / "snaps"), "stream_poll_s": 0.1}}
    with served_package(tmp_path, tmp_path / "pkg", "stemcell-events", extra) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        bad = http.post("/admin/webhooks", headers=ADMIN, json={"url": "ftp://example.com/x", "secret": SECRET})
        assert bad.status_code == 422 and "http" in bad.json()["detail"]
        hook = http.post("/admin/webhooks", headers=ADMIN, json={"url": receiver, "secret": SECRET, "apps": ["car"]})
        assert hook.status_code == 201, hook.text
        token = http.post("/admin/cameras", headers=ADMIN, json={"camera_id": "cam-ev", "apps": ["car"]}).json()["token"]
        seen: list[str] = []
        opened, stop = threading.Event(), threading.Event()
        threading.Thread(target=_follow_stream, args=(url, seen, opened, stop), daemon=True).start()
        assert opened.wait(30)  # the stream starts at the newest seq: let it open first

        labels = _post_until_start_and_end(http, token)
        assert True in labels and labels[-1] is False, f"the tiny model never turned on and off: {labels}"

        deadline = time.monotonic() + 20
        while (len(Receiver.got) < 2 or "event.end" not in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        bodies = [json.loads(body) for body, _ in Receiver.got]
        assert [b["type"] for b in bodies][:2] == ["event.start", "event.end"]
        for body, signature in Receiver.got:
            assert hmac.compare_digest(signature, "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest())
        start, end = bodies[0]["event"], bodies[1]["event"]
        assert start["event_id"] == end["event_id"] and start["end_ts"] is None and end["end_ts"] > end["start_ts"]
        assert seen[:2] == ["event.start", "event.end"]
        assert start["snapshot"] and Path(start["snapshot"]).read_bytes()[:2] == b"\xff\xd8"

        mine = http.get("/cameras/cam-ev/events", params={"since": 1000, "app": "car"},
                        headers={"Authorization": f"Bearer {token}"})
        assert mine.status_code == 200
        assert [e["event_id"] for e in mine.json()["events"]][-1] == start["event_id"]
        assert http.get("/admin/events", headers={"Authorization": f"Bearer {token}"}).status_code == 403
        assert http.get("/admin/events", params={"until": 999}, headers=ADMIN).json()["events"] == []
        listed = http.get("/admin/webhooks", headers=ADMIN).json()["webhooks"]
        assert listed[0]["stats"]["delivered"] >= 2 and "secret" not in listed[0]
        webhook_id = hook.json()["webhook_id"]
        assert http.delete(f"/admin/webhooks/{webhook_id}", headers=ADMIN).status_code == 200
        assert http.delete(f"/admin/webhooks/{webhook_id}", headers=ADMIN).status_code == 404
