"""A local Serve app over one M-Package for integration tests (real HTTP on a free loopback port)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from ray import serve

from app.serve_app import build_app
from benchmarks.ports import reserved_port

ADMIN_TOKEN = "admin-" + "y" * 26


@contextmanager
def served_package(root: Path, package_dir: Path, app_name: str, extra: dict[str, Any] | None = None) -> Iterator[str]:
    """Deploy the Stemcell Serve app for `package_dir` (state under `root`, `extra` config sections added);
    yields its base URL."""
    env = f"STEMCELL_{app_name.upper().replace('-', '_')}_TOKEN"
    config = root / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "package_dir": str(package_dir), "state_path": str(root / "state.db"), "admin_token_env": env,
        "app_name": app_name, "ingress": {"num_cpus": 0.5},
        "executors": {"count": 1, "num_gpus": 0.25, "num_cpus": 1, "namespace": app_name, "max_wait_ms": 2},
        **(extra or {}),
    }))
    os.environ[env] = ADMIN_TOKEN
    with reserved_port() as port:  # held while Serve's proxy serves there (see benchmarks/ports.py)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            serve.run(build_app({"config_path": str(config)}), name=app_name, route_prefix="/")
            yield f"http://127.0.0.1:{port}"
        finally:
            serve.shutdown()
            os.environ.pop(env, None)
