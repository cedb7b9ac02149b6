"""A loopback port for a server in another process (Ray Serve's HTTP proxy), picked without a race.

Binding port 0, closing the socket and handing the number to the server leaves a window in which
another process (a parallel test, a client's ephemeral port) can take the port.  Instead the
caller keeps a socket bound to the port, never listening, for as long as the server lives.  Serve's
proxy binds its own socket with SO_REUSEADDR and SO_REUSEPORT (`SERVE_SOCKET_REUSE_PORT_ENABLED`,
on by default; checked on Ray 2.60), so it can share the port with this reservation, while any
process binding without SO_REUSEPORT gets EADDRINUSE.  A socket that does not listen is never
handed a connection, so every connection reaches the server; with no server, the reserved port
refuses connections (what a client's "nothing listens there" test needs).
"""
from __future__ import annotations

import random
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from stemcell.serve_config import HttpSection


@contextmanager
def reserved_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A free TCP port on `host`, held (bound, not listening) until the block ends."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, 0))
        yield s.getsockname()[1]


def wait_listening(port: int, host: str = "127.0.0.1", timeout_s: float = 120.0) -> None:
    """Block until a server accepts connections on `port`: after that the reservation may be released.

    Serve starts its HTTP proxy asynchronously, so `serve.run` can return before the proxy has bound;
    releasing the reservation then would reopen the race.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=5.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s") from None
            time.sleep(0.1)


def _free_block(size: int, rng: random.Random, low: int = 20000, high: int = 29000) -> int:
    """The first port of `size` consecutive loopback ports that nothing is bound to now (a bind without
    SO_REUSEPORT succeeds on each), picked at random in [low, high) (below the ephemeral ports, 32768+)."""
    for _ in range(200):
        base = rng.randrange(low, high - size)
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {size} free consecutive ports in [{low}, {high})")


def haproxy_env(replica_ports: int = 16) -> dict[str, str]:
    """Environment for a local Ray whose Serve runs behind its HAProxy ingress (`http.ingress: haproxy`), with
    HAProxy's stats and metrics pages on free ports rather than 8404/9101 and its config, admin socket and
    server state in a private folder rather than /tmp/haproxy-serve (another Serve may run on a shared box;
    a benchmark can live with the bind-close race there: nothing connects to them).

    Behind HAProxy each ingress replica serves HTTP (and gRPC) itself on a port Serve allocates from a fixed
    range (30000-31000 and 40000-41000 by default), and the head node's Python proxy stays on as HAProxy's
    fallback on fixed ports (8500, 9500), all bound with SO_REUSEPORT: two such Ray sessions on one box (two
    people's benchmarks as the same user) bind the same ports and the kernel splits each one's connections
    between both sessions, so one session's HAProxy reaches the other's app (a wrong admin token, mixed
    measurements). Each session gets its own free blocks of `replica_ports` ports and its own fallback ports."""
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    rng = random.Random()
    private = tempfile.mkdtemp(prefix="hap", dir="/tmp")  # short: the admin socket's path is length-limited
    http, grpc = _free_block(replica_ports, rng), _free_block(replica_ports, rng, 12000, 19000)  # below ephemeral ports
    return {**HttpSection(ingress="haproxy").serve_env(), "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",  # HAProxy's manager starts slowly on a busy box (deploy.md)
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + replica_ports - 1),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc + replica_ports - 1),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()), "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{private}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{private}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": private,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{private}/server-state"}
