"""A load generator for crowds of HTTP clients that costs little CPU itself, in its own process.

`load.py`'s crowd phase (500 clients posting single frames) first ran on httpx inside the process
that also drives Ray: on 2 shared cores the generator's own queueing was part of every measured
answer time.  Here the crowd is a separate process (`run_in_process`) on uvloop with raw asyncio
streams and requests prebuilt as bytes; every connection is opened *before* the burst, and each
answer time runs from the moment the request is written (or, when the server closed the connection,
from the moment the client started reconnecting) to the last byte of the answer.

A client posts, reads the answer, and on a 503 honours `Retry-After` (capped, jittered 1-1.5x) like
`stemcell.client` does; one request in `leave_every` is abandoned after `leaver_timeout_s` (a camera
that goes away mid-request: its connection is dropped and a new one opened).

`python benchmarks/crowd.py --clients 500 [--out X.json]` measures the generator alone against a trivial server
(another process that answers every request at once: 503 + Retry-After, or 200): what it reports
there is the generator's own floor, to subtract from nothing and compare with what Stemcell gets.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CONNECT_PARALLEL = 64  # connections opened at once before the burst (stays far below listen backlogs)


@dataclass(frozen=True)
class Plan:
    """What the crowd does. `requests[k]` are client k's raw HTTP/1.1 requests, sent in turn."""

    host: str
    port: int
    requests: list[list[bytes]]
    seconds: float
    spread_s: float = 0.2  # clients start within this window: a burst, not one instant
    timeout_s: float = 10.0  # no answer by then: a time-out
    leave_every: int = 0  # one request in this many is abandoned (0: none)
    leaver_timeout_s: float = 0.05
    retry_after_cap_s: float = 5.0  # like stemcell.client.RetryPolicy.max_delay_s
    seed: int = 0


@dataclass
class Tally:
    """What the crowd saw; answer times in seconds per status class."""

    answers: list[tuple[float, float, int, str]] = field(default_factory=list)  # (sent at, seconds, status, kind)
    timeouts: int = 0
    resets: int = 0  # connection refused or closed before an answer
    abandoned: int = 0
    connect_s: float = 0.0  # opening every connection before the burst


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 POST as bytes (keep-alive)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answer_kind(status: int, headers: dict[bytes, bytes], body: bytes) -> str:
    """'ok', 'stemcell_503' (Stemcell's JSON refusal with Retry-After), 'serve_503' (Serve's own, with
    Retry-After), 'bare_503' (no Retry-After), '500', or 'other'."""
    if status == 200:
        return "ok"
    if status == 503:
        if not headers.get(b"retry-after", b"").isdigit():
            return "bare_503"
        return "stemcell_503" if body.startswith(b'{"detail"') else "serve_503"
    return "500" if status == 500 else "other"


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers, body


class _Client:
    def __init__(self, plan: Plan, k: int, tally: Tally, rng: random.Random, t0: float) -> None:
        self.plan, self.k, self.tally, self.rng, self.t0 = plan, k, tally, rng, t0
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def connect(self) -> None:
        try:
            self.conn = await asyncio.wait_for(asyncio.open_connection(self.plan.host, self.plan.port),
                                               self.plan.timeout_s)
        except (OSError, TimeoutError):
            self.conn = None

    def drop(self) -> None:
        if self.conn is not None:
            self.conn[1].transport.abort()
            self.conn = None

    async def run(self, until: float) -> None:
        plan, tally = self.plan, self.tally
        await asyncio.sleep(self.rng.uniform(0, plan.spread_s))
        sent = 0
        while time.perf_counter() < until:
            sent += 1
            leave = plan.leave_every > 0 and (self.k * 7 + sent) % plan.leave_every == 0
            started = time.perf_counter()
            if self.conn is None:
                await self.connect()  # counted in this request's answer time
                if self.conn is None:
                    tally.resets += 1
                    await asyncio.sleep(0.1)
                    continue
            reader, writer = self.conn
            try:
                writer.write(plan.requests[self.k][sent % len(plan.requests[self.k])])
                status, headers, body = await asyncio.wait_for(
                    _read_answer(reader), plan.leaver_timeout_s if leave else plan.timeout_s)
            except TimeoutError:
                self.drop()
                if leave:
                    tally.abandoned += 1
                else:
                    tally.timeouts += 1
                continue
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                self.drop()
                tally.resets += 1
                continue
            kind = answer_kind(status, headers, body)
            tally.answers.append((started - self.t0, time.perf_counter() - started, status, kind))
            if headers.get(b"connection", b"").lower() == b"close":
                self.drop()
            if status == 503:
                value = headers.get(b"retry-after", b"")
                wait = min(plan.retry_after_cap_s, float(value)) if value.isdigit() else 1.0
                await asyncio.sleep(self.rng.uniform(wait, 1.5 * wait))


async def _crowd(plan: Plan) -> Tally:
    tally = Tally()
    rng = random.Random(plan.seed)
    t0 = time.perf_counter()
    clients = [_Client(plan, k, tally, random.Random(rng.random()), t0) for k in range(len(plan.requests))]
    gate = asyncio.Semaphore(CONNECT_PARALLEL)

    async def connect(client: _Client) -> None:
        async with gate:
            await client.connect()

    await asyncio.gather(*(connect(c) for c in clients))
    tally.connect_s = time.perf_counter() - t0
    for c in clients:
        c.t0 = time.perf_counter()
    until = time.perf_counter() + plan.seconds
    await asyncio.gather(*(c.run(until) for c in clients))
    for c in clients:
        c.drop()
    return tally


def summarise(tally: Tally, answer_within_s: float, cpu_s: float) -> dict:
    """The figures `load.py` reports: counts per answer kind, the answer-time distribution, the share
    answered honestly (200 or a 503 with Retry-After) within `answer_within_s`, the generator's CPU."""
    kinds = [a[3] for a in tally.answers]
    seconds = np.asarray([a[1] for a in tally.answers] or [np.nan])
    honest = sum(1 for _, s, _, k in tally.answers if k in ("ok", "stemcell_503", "serve_503") and s <= answer_within_s)
    total = len(tally.answers) + tally.timeouts + tally.resets
    counts = {k: kinds.count(k) for k in ("ok", "stemcell_503", "serve_503", "bare_503", "500", "other")}

    def pct(q: float, kind: str | None = None) -> float | None:
        values = [s for _, s, _, k in tally.answers if kind is None or k == kind]
        return float(np.percentile(values, q) * 1e3) if values else None

    first = [s for sent, s, _, _ in tally.answers if sent < 1.0]  # answers to the first second's burst
    late = [(sent, k) for sent, s, _, k in tally.answers if s > answer_within_s]
    return {"requests": total, "answered": len(tally.answers), **counts, "timeouts": tally.timeouts,
            "resets": tally.resets, "abandoned": tally.abandoned,
            "answered_within_s": honest / max(1, total), "p50_ms": pct(50), "p99_ms": pct(99),
            "max_ms": float(np.nanmax(seconds) * 1e3), "p50_ms_200": pct(50, "ok"), "p99_ms_200": pct(99, "ok"),
            "p50_ms_503": pct(50, "stemcell_503"), "p99_ms_503": pct(99, "stemcell_503"),
            "p99_ms_first_second": float(np.percentile(first, 99) * 1e3) if first else None,
            "late": {k: sum(1 for _, kind in late if kind == k) for k in sorted({k for _, k in late})},
            "late_sent_s": [round(min((t for t, _ in late), default=0.0), 3), round(max((t for t, _ in late), default=0.0), 3)],
            "connect_s": tally.connect_s, "generator_cpu_ms_per_request": 1e3 * cpu_s / max(1, total)}


def _child(plan: Plan, answer_within_s: float, out: multiprocessing.Queue) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    tally = asyncio.run(_crowd(plan))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    out.put(summarise(tally, answer_within_s, cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime))


def run_in_process(plan: Plan, answer_within_s: float = 2.0) -> dict:
    """Run the crowd in a fresh process (spawned: no Ray, no torch state) and return `summarise`'s dict."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(plan, answer_within_s, out), daemon=True)
    proc.start()
    try:
        return out.get(timeout=plan.seconds + plan.timeout_s + 120.0)
    finally:
        proc.join(timeout=10.0)
        if proc.is_alive():
            proc.kill()


def _trivial_server(port_out: multiprocessing.Queue, status: int) -> None:
    """Answers every request at once (503 + Retry-After: 1 like Stemcell's door, or 200) on a free port."""
    body = b'{"detail":"overloaded"}' if status == 503 else b'{"scores":{}}'
    answer = (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
              + ("retry-after: 1\r\n" if status == 503 else "") + "\r\n").encode() + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await _read_request(reader)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        port_out.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    import uvloop
    uvloop.run(main())


async def _read_request(reader: asyncio.StreamReader) -> None:
    """Consume one request: its head, then Content-Length bytes of body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--status", type=int, choices=(200, 503), default=503, help="what the trivial server answers")
    parser.add_argument("--body-bytes", type=int, default=3000, help="size of each posted body (a small JPEG)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_trivial_server, args=(ports, args.status), daemon=True)
    server.start()
    port = ports.get(timeout=30)
    body = bytes(args.body_bytes)
    reqs = [[request_bytes("127.0.0.1", port, f"/cameras/c{k}/frames", body, {"Content-Type": "image/jpeg"})]
            for k in range(args.clients)]
    try:
        result = run_in_process(Plan("127.0.0.1", port, reqs, args.seconds, leave_every=20))
    finally:
        server.kill()
    for key, value in result.items():
        print(f"{key:32s} {value}")
    if args.out:
        from stemcell.eval import save_results

        save_results({"clients": args.clients, "status": args.status, "load": os.getloadavg()[0], **result}, args.out)


if __name__ == "__main__":
    sys.exit(main())
