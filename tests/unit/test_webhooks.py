"""Webhooks: target checks, signatures a receiver can verify, retries, and a queue that never blocks."""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stemcell.events import Event, EventChange, WebhookDispatcher, WebhookSpec, check_target
from stemcell.events.webhooks import DeliveryPolicy, RefusedTarget, WebhookSender, pinned_post

SECRET = "s" * 20
CHANGE = EventChange("start", Event("abc", "cam", "car", 1.0, None, 0.9))


def public(_host: str) -> list[str]:
    return ["93.184.216.34"]


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http://", "example.com/hook",
                                 "http://example.com:99999/"])
def test_non_http_or_malformed_targets_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_target(url, allow_private=False, resolve=public)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.9", "169.254.169.254", "::1", "fd00::1"])
def test_private_targets_are_refused_unless_allowed(address: str) -> None:
    with pytest.raises(ValueError, match="allow_private"):
        check_target("http://hooks.example/x", allow_private=False, resolve=lambda _h: [address])
    assert check_target("http://hooks.example/x", allow_private=True, resolve=lambda _h: [address])


def test_public_target_is_accepted() -> None:
    assert check_target("https://hooks.example/x", allow_private=False, resolve=public) == "https://hooks.example/x"


class Receiver(BaseHTTPRequestHandler):
    got: list[tuple[bytes, str]] = []
    hosts: list[str] = []
    fail_first = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.hosts.append(self.headers["Host"])
        if Receiver.fail_first > 0:
            Receiver.fail_first -= 1
            self.send_response(503)
        else:
            Receiver.got.append((body, self.headers["X-Stemcell-Signature"]))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def test_a_real_receiver_gets_a_verifiable_signed_body_after_retries() -> None:
    Receiver.got, Receiver.fail_first = [], 2
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dispatcher = WebhookDispatcher(DeliveryPolicy(max_attempts=3, backoff_s=0.01, allow_private=True))
        dispatcher.sync([WebhookSpec("w1", f"http://127.0.0.1:{server.server_port}/hook", SECRET)])
        assert dispatcher.publish([CHANGE]) == 1
        deadline = time.monotonic() + 5
        while not Receiver.got and time.monotonic() < deadline:
            time.sleep(0.01)
        ((body, signature),) = Receiver.got
        # what a receiver does (README snippet): recompute the HMAC with its copy of the secret
        assert hmac.compare_digest(signature, "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest())
        assert json.loads(body) == {"type": "event.start", "event": CHANGE.event.as_dict()}
        stats = dispatcher.stats("w1")
        assert (stats.delivered, stats.retries, stats.failed) == (1, 2, 0)
        dispatcher.close()
    finally:
        server.shutdown()


def test_a_stuck_receiver_never_blocks_publish_and_overflow_is_counted() -> None:
    release = threading.Event()

    def stuck(*_args: object) -> int:
        release.wait(10)
        return 200

    sender = WebhookSender(WebhookSpec("w", "http://x/", SECRET), DeliveryPolicy(queue_size=2), post=stuck)
    started = time.perf_counter()
    accepted = [sender.submit(b"{}", "event.start") for _ in range(10)]
    assert time.perf_counter() - started < 0.5
    assert accepted.count(False) == sender.counters.overflow >= 7  # one in flight, two queued at most
    release.set()
    sender.stop()


def test_failed_deliveries_are_counted_after_max_attempts_and_filters_apply() -> None:
    def refused(*_args: object) -> int:
        raise ConnectionRefusedError("nobody there")

    waits: list[float] = []
    sender = WebhookSender(WebhookSpec("w", "http://x/", SECRET, apps=("car",)),
                           DeliveryPolicy(max_attempts=4, backoff_s=1.0, backoff_max_s=3.0), post=refused, sleep=waits.append)
    sender._deliver(b"{}", "event.start")
    assert waits == [1.0, 2.0, 3.0] and sender.counters.failed == 1
    assert "nobody there" in sender.counters.last_error
    assert sender.spec.wants(CHANGE) and not sender.spec.wants(EventChange("end", Event("x", "c", "person", 1, 2, 0.5)))
    sender.stop()


def test_delivery_rechecks_the_address_and_refuses_a_rebound_host_without_retrying() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # public when registered, loopback by delivery time
    resolve = lambda _h: next(answers)  # noqa: E731
    url = "http://hooks.example/x"
    assert check_target(url, allow_private=False, resolve=resolve) == url
    waits: list[float] = []
    post = functools.partial(pinned_post, allow_private=False, resolve=resolve)
    sender = WebhookSender(WebhookSpec("w", url, SECRET), DeliveryPolicy(max_attempts=3), post=post, sleep=waits.append)
    sender._deliver(b"{}", "event.start")
    assert (sender.counters.failed, sender.counters.retries, sender.counters.delivered, waits) == (1, 0, 0, [])
    assert "127.0.0.1" in sender.counters.last_error and "allow_private" in sender.counters.last_error
    sender.stop()
    with pytest.raises(RefusedTarget):
        pinned_post("http://hooks.example/x", b"{}", {}, 1.0, resolve=lambda _h: ["10.0.0.7"])


def test_delivery_connects_to_the_checked_address_under_the_hook_host_name() -> None:
    Receiver.got, Receiver.hosts, Receiver.fail_first = [], [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://hooks.example:{server.server_port}/hook?k=1"
        status = pinned_post(url, b'{"a":1}', {"X-Stemcell-Signature": "sha256=00"}, 2.0, allow_private=True,
                             resolve=lambda host: ["127.0.0.1"] if host == "hooks.example" else [])
        assert status == 204
        assert Receiver.got == [(b'{"a":1}', "sha256=00")]
        assert Receiver.hosts == [f"hooks.example:{server.server_port}"]  # the name, not the pinned address
    finally:
        server.shutdown()
