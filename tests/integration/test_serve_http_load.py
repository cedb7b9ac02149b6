"""The frame path end to end under load and at real resolutions: Stemcell's own 503s in time, client
disconnects, cameras coming and going mid-stream, the stream sender, and HTTP scores equal to the
direct path's at 1080p, 720p, odd sizes, grey and PNG. The routes, limits and auth are in
`test_serve_http.py`; both modules serve the same app (`tests.helpers.http_app`), each its own copy.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import httpx
import numpy as np
import pytest

from app.streamer import run_stream
from benchmarks.harness import worker_log_lines
from stemcell.client import Admin, Camera, StemcellError
from stemcell.imaging import decode_image, encode_jpeg, encode_png, resize_frames
from tests.helpers.http_app import ADMIN_TOKEN, Server, frame

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

NAMESPACE = "stemcell-test-load"  # the executors' (read by the `server` fixture of tests/helpers/http_app.py)


def test_overload_answers_503_with_retry_after(server: Server, cam1: Camera) -> None:
    files = [("frames", (f"f{i}.jpg", encode_jpeg(frame(30 + i)), "image/jpeg")) for i in range(8)]
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/cameras/cam-1/frames:batch", files=files, headers=headers, timeout=60)

    statuses: list[int] = []
    for _ in range(3):  # concurrency is timing-dependent; a few rounds make a 503 certain in practice
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, range(16)))
        statuses += [r.status_code for r in answers]
        rejected = [r for r in answers if r.status_code == 503]
        if rejected:
            assert int(rejected[0].headers["retry-after"]) >= 1 and "overloaded" in rejected[0].json()["detail"]
            break
    assert 503 in statuses and set(statuses) <= {200, 503}


def test_hundreds_of_clients_get_results_or_stemcells_503_in_time(server: Server, admin: Admin) -> None:
    """Every request of a 200-client burst is answered: 200, or Stemcell's own 503 + Retry-After (not Serve's
    bare 503, not a time-out), within limits.answer_within_s (2 s) plus slack for a shared CI box."""
    body, clients = encode_jpeg(frame(40)), 200
    token = admin.add_camera("cam-burst", ["car"])["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}

    async def one(http: httpx.AsyncClient) -> tuple[int, float, str | None, str]:
        started = time.perf_counter()
        r = await http.post("/cameras/cam-burst/frames", content=body, headers=headers)
        return r.status_code, time.perf_counter() - started, r.headers.get("retry-after"), r.text

    async def burst() -> list[tuple[int, float, str | None, str]]:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=server.url, timeout=30.0, limits=limits) as http:
            return await asyncio.gather(*(one(http) for _ in range(clients)))

    answers = asyncio.run(burst())
    statuses = [a[0] for a in answers]
    assert set(statuses) <= {200, 503} and 200 in statuses, sorted(set(statuses))
    refused = [a for a in answers if a[0] == 503]
    assert all(a[2] is not None and a[2].isdigit() and "backpressure" not in a[3] for a in refused)
    assert max(a[1] for a in answers) < 2.0 + 3.0, sorted(a[1] for a in answers)[-5:]


def test_a_refused_crowd_is_told_to_come_back_spread_out(server: Server, admin: Admin) -> None:
    """Each refusal's Retry-After counts the clients already told to come back (stemcell.admission), so a
    crowd refused at once is spread over several seconds instead of all returning together."""
    body, clients = encode_jpeg(frame(42)), 200
    token = admin.add_camera("cam-crowd", ["car"])["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}

    async def crowd() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=server.url, timeout=30.0, limits=limits) as http:
            for _ in range(3):  # completions the door measures its rate from (it forgets them after 2 s)
                await asyncio.gather(*(http.post("/cameras/cam-crowd/frames", content=body, headers=headers)
                                       for _ in range(4)))
            return await asyncio.gather(*(http.post("/cameras/cam-crowd/frames", content=body, headers=headers)
                                          for _ in range(clients)))

    spreads: list[tuple[int, list[int]]] = []
    # How many are refused depends on how fast the replica serves at that moment (a quiet box serves most of
    # the crowd; a loaded one can stall with no rate known), so a few rounds, and the check is on the refused:
    # once a crowd is refused, their Retry-After values differ instead of all saying the same second.
    for _ in range(3):
        answers = asyncio.run(crowd())
        assert {r.status_code for r in answers} <= {200, 503}
        waits = sorted(int(r.headers["retry-after"]) for r in answers if r.status_code == 503)
        assert all(w >= 1 for w in waits)
        spreads.append((len(waits), sorted(set(waits))))
        if len(waits) >= 10 and waits[-1] > waits[0]:
            break
    else:
        pytest.fail(f"no round spread a refused crowd: (refused, Retry-After values) per round {spreads}")


def test_client_disconnect_is_not_a_server_error(server: Server, cam1: Camera) -> None:
    """A camera that goes away mid-upload is logged (and counted) as 499, client closed, not as a 500."""
    def count(text: str) -> int:
        return sum(text in line for line in worker_log_lines())

    closed, errors = count("/cameras/{camera_id}/frames -> 499"), count("ClientDisconnect") + count("-> 500")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(f"POST /cameras/cam-1/frames HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                         f"Content-Type: image/jpeg\r\nContent-Length: 60000\r\n\r\n".encode() + b"\xff" * 1000)
            time.sleep(0.3)
    assert cam1.infer(frame(41))["results"]  # still serving
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and count("/cameras/{camera_id}/frames -> 499") < closed + 3:
        time.sleep(0.5)
    # each one the replica saw is a 499 (the proxy may drop a request before the replica sees it)
    assert count("/cameras/{camera_id}/frames -> 499") > closed
    assert count("ClientDisconnect") + count("-> 500") == errors


def test_cameras_come_and_go_while_another_streams(server: Server, admin: Admin, cam1: Camera) -> None:
    stop = threading.Event()
    outcomes: list[str] = []

    def stream() -> None:
        i = 0
        while not stop.is_set():
            try:
                cam1.infer(frame(100 + i % 7))
                outcomes.append("ok")
            except StemcellError as exc:
                outcomes.append(f"{exc.status}: {exc.message}")
            i += 1

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        for k in range(3):
            token = admin.add_camera(f"cam-tmp-{k}", ["car", "person"])["token"]
            with Camera(server.url, token, f"cam-tmp-{k}") as tmp:
                assert len(tmp.infer(frame(200 + k))["results"]) == 2
            admin.add_camera(f"cam-tmp-{k}", [{"app": "car", "branchpoint": 0}])  # reconfigure in place
            admin.remove_camera(f"cam-tmp-{k}")
            with pytest.raises(StemcellError) as err:
                Camera(server.url, token, f"cam-tmp-{k}", retries=0).infer(frame(1))
            assert err.value.status == 403  # this (only) replica forgot the token when it removed the camera
    finally:
        stop.set()
        worker.join()
    assert outcomes and set(outcomes) == {"ok"}, [o for o in outcomes if o != "ok"][:3]


def test_stream_sender_end_to_end(server: Server, admin: Admin) -> None:
    token = admin.add_camera("cam-stream", ["car", "person"], fps=20)["token"]
    lines: list[str] = []
    summary = run_stream("synthetic:1?size=64x64&fps=20&duration=60", "cam-stream", server.url, token, fps=20,
                         duration_s=3.0, report_every_s=1.0, out=lines.append)
    admin.remove_camera("cam-stream")
    assert summary["errors"] == {}
    assert summary["frames_sent"] >= 20 and summary["frames_read"] == summary["frames_sent"] + summary["frames_dropped"]
    assert summary["p50_ms"] is not None and summary["p50_ms"] <= summary["p99_ms"]
    assert any("fps analysed" in line for line in lines)


def _scene(height: int, width: int) -> np.ndarray:
    """Gradients and blocks: compresses like a camera view (1080p in ~200 KB)."""
    y, x = np.mgrid[0:height, 0:width]
    blocks = np.random.default_rng(height).integers(0, 120, (height // 40 + 1, width // 40 + 1))[y // 40, x // 40]
    return np.stack([x * 255 // width, y * 255 // height, blocks + (x + y) % 90], axis=-1).astype(np.uint8)


def _grey_jpeg(height: int, width: int) -> bytes:
    ok, data = cv2.imencode(".jpg", _scene(height, width)[..., 1])  # one channel: a greyscale JPEG
    assert ok
    return data.tobytes()


def test_http_scores_equal_direct_scores_of_the_frame_resized_the_same_way(server: Server, admin: Admin) -> None:
    """Real resolutions through HTTP (decoded at a DCT scale and resized in the ingress) give exactly the
    scores of the same decoded frame given to the executor directly (resized there, off its lock), and
    of that frame resized beforehand by the same function."""
    import ray

    added = admin.add_camera("cam-sizes", ["car", "person"], fps=10)  # every app on every frame
    size, executor = added["input_size"], ray.get_actor(added["executor"], namespace=NAMESPACE)
    uploads = [(encode_jpeg(_scene(1080, 1920)), "image/jpeg"), (encode_jpeg(_scene(720, 1280)), "image/jpeg"),
               (encode_jpeg(_scene(481, 643)), "image/jpeg"), (_grey_jpeg(361, 487), "image/jpeg"),
               (encode_png(_scene(150, 203)), "image/png"), (encode_png(_scene(17, 23)), "image/png")]
    with Camera(server.url, added["token"], "cam-sizes", resize=False) as cam:
        assert cam.status()["input_size"] == size == 32  # the tiny package's input
        over_http = [cam.infer(data) for data, _ in uploads]
        batch = cam.infer_batch([data for data, _ in uploads])

    def scores(answer: dict) -> dict[str, float]:
        assert all(r["fresh"] for r in answer["results"])
        return {r["app"]: r["score"] for r in answer["results"]}

    for (data, content_type), answer, in_batch in zip(uploads, over_http, batch):
        frame = decode_image(data, content_type, min_side=size)  # what the ingress decoded
        direct = ray.get(executor.infer.remote("cam-sizes", frame[None]))
        resized = ray.get(executor.infer.remote("cam-sizes", resize_frames(frame, size)[None]))
        assert scores(answer) == scores(direct[0].as_dict()) == scores(resized[0].as_dict())
        # six frames in one forward: float32 sums in another order than one at a time, so one ulp apart
        assert scores(in_batch) == pytest.approx(scores(answer), abs=1e-6)
    admin.remove_camera("cam-sizes")
