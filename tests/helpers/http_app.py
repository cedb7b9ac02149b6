"""The served app the two HTTP end-to-end modules share (`tests/integration/test_serve_http*.py`).

Each module gets its own Serve app (module-scoped fixtures; starting it costs seconds), its state in
its own temp folder and its executors in the module's own Ray namespace (`NAMESPACE` at the top of
the test module), so the second module never meets the first one's actors while they shut down.
`tests/integration/conftest.py` imports the fixtures (`server`, `admin`, `cam1`); a module defining its own
fixture of the same name keeps its own.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from ray import serve

from app.serve_app import build_app
from benchmarks.ports import reserved_port
from stemcell.client import Admin, Camera
from tests.helpers.builders import tiny_package

ADMIN_TOKEN = "admin-" + "x" * 26
APP_NAME = "stemcell-test"
MAX_IMAGE_BYTES = 256 * 1024
MAX_PIXELS = 2_100_000  # a 1080p frame fits
MAX_QUEUED = 16


def frame(seed: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb() -> bytes:
    """~100 bytes that declare 50 000 x 50 000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")


class Server:
    def __init__(self, root: Path, port: int, namespace: str = "stemcell-test") -> None:
        self.config_path = root / "serve.yaml"
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.package = root / "pkg"
        self.namespace = namespace  # the executors' Ray namespace

    def deploy(self) -> None:
        serve.run(build_app({"config_path": str(self.config_path)}), name=APP_NAME, route_prefix="/")

    def http(self, token: str | None = ADMIN_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve")
    with reserved_port() as port:  # held while Serve's proxy serves there (see benchmarks/ports.py)
        srv = Server(root, port, request.module.NAMESPACE)
        tiny_package(srv.package, branchpoints=(0, 3, 6), apps=("car", "person"))
        srv.config_path.write_text(yaml.safe_dump({
            "package_dir": str(srv.package), "state_path": str(root / "state.db"),
            "admin_token_env": "STEMCELL_TEST_ADMIN_TOKEN", "app_name": APP_NAME,
            "ingress": {"num_cpus": 0.5},
            "executors": {"count": 1, "num_gpus": 0.25, "num_cpus": 1, "namespace": srv.namespace, "max_wait_ms": 2},
            "limits": {"max_image_bytes": MAX_IMAGE_BYTES, "max_pixels": MAX_PIXELS, "max_batch_frames": 8,
                       "max_batch_bytes": 4 * MAX_IMAGE_BYTES, "max_queued_frames": MAX_QUEUED},
        }))
        os.environ["STEMCELL_TEST_ADMIN_TOKEN"] = ADMIN_TOKEN
        serve.start(http_options={"host": "127.0.0.1", "port": srv.port})
        srv.deploy()
        yield srv
        serve.shutdown()
        os.environ.pop("STEMCELL_TEST_ADMIN_TOKEN", None)


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[Admin]:
    with Admin(server.url, ADMIN_TOKEN, timeout=60.0) as a:
        yield a


@pytest.fixture(scope="module")
def cam1(server: Server, admin: Admin) -> Iterator[Camera]:
    token = admin.add_camera("cam-1", ["car", {"app": "person", "branchpoint": 3, "fps": 5}], fps=10)["token"]
    with Camera(server.url, token, "cam-1") as cam:
        yield cam
