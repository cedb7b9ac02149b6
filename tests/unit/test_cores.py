"""stemcell.cores: `auto` replica counts and threads follow the node's cores; numbers in serve.yaml override."""
from __future__ import annotations

import pytest

import stemcell.serve_config
from stemcell.cores import core_defaults, node_cpus
from stemcell.serve_config import ExecutorSection, IngressSection


def test_half_the_cores_infer_the_rest_serve_http() -> None:
    assert core_defaults(2) == core_defaults(2, executors=1)
    two, sixteen = core_defaults(2), core_defaults(16)
    assert (two.ingress_replicas, two.executor_cpus) == (1, 1.0)  # the 2-core CI box: as before
    assert (sixteen.ingress_replicas, sixteen.executor_cpus) == (4, 8.0)
    assert core_defaults(16, executors=4).executor_cpus == 2.0  # executors share the inference half
    assert core_defaults(1, executors=8).executor_cpus == 1.0  # never below one thread
    assert (two.decode_threads, sixteen.decode_threads) == (1, 2)  # the ingress half, shared by its replicas
    assert core_defaults(16, replicas=1).decode_threads == 8 and core_defaults(16, replicas=64).decode_threads == 1
    for cpus in range(1, 65):
        d = core_defaults(cpus, executors=2)
        assert 2 * d.executor_cpus <= max(2, cpus) and d.ingress_replicas <= max(1, cpus // 2)
    with pytest.raises(ValueError):
        core_defaults(0)
    assert node_cpus() >= 1


def test_auto_settings_resolve_to_numbers_and_numbers_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stemcell.serve_config, "node_cpus", lambda: 32)
    assert IngressSection().num_replicas == 8 and IngressSection(num_replicas="auto").num_replicas == 8
    assert ExecutorSection().num_cpus == 16.0 and ExecutorSection(count=4, num_cpus="auto").num_cpus == 4.0
    assert ExecutorSection(count=4).num_cpus == 4.0  # the default follows the count too
    assert IngressSection(num_replicas=2).num_replicas == 2 and ExecutorSection(num_cpus=0.5).num_cpus == 0.5
    assert IngressSection().decode_threads == 2 and IngressSection(num_replicas=2).decode_threads == 8
    assert IngressSection(decode_threads="auto").decode_threads == 2 and IngressSection(decode_threads=3).decode_threads == 3
