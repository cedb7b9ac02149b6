"""Unit tests exercise pure logic only: starting Ray here is a bug, so make it fail loudly."""
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray_init(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a hard dependency
        return

    def _refuse(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; put this test under tests/integration")

    monkeypatch.setattr(ray, "init", _refuse)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models train fastest single-threaded on a busy 2-core box (no OpenMP spinning against other
    jobs). Opt in per module: `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
