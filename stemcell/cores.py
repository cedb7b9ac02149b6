"""Defaults that use the machine: replica counts and threads from the node's CPU cores.

With fixed defaults (one ingress replica, one executor thread) a 2-core box and a 32-core node ran
the same way, and the big node stayed mostly idle under load.  Settings that accept `auto` (the
default for these) take their value from `core_defaults(node_cpus(), ...)`, on the machine that
loads `serve.yaml`; a number in the file overrides it.  The rule, per node of C usable cores:

* inference gets half the cores, split over the node's executors: each executor's torch threads
  (`executors.num_cpus`, its Ray CPU reservation too) = max(1, C // (2 x executors.count));
* the ingress gets the other half: HTTP, token checks and JPEG decoding run in Python, about one
  core per replica, so `ingress.num_replicas` = max(1, C // 4);
* each replica decodes large images (720p/1080p JPEGs: 1-4 ms each, which would stall its event
  loop) on its own decode threads, which run outside the GIL (libjpeg-turbo, OpenCV), in parallel
  with the loop: `ingress.decode_threads` = max(1, ingress half // replicas), the ingress's cores
  shared by its replicas.

On the 2-core CI box that is one replica and one executor thread, as before.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


def node_cpus() -> int:
    """Cores this process may run on (cgroup/taskset affinity where the OS tells, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class CoreDefaults:
    """What `auto` means on a node with `cpus` cores."""

    cpus: int  # usable cores of the node
    ingress_replicas: int  # Serve replicas of the HTTP ingress
    executor_cpus: float  # per executor: Ray CPUs and torch threads
    decode_threads: int  # per ingress replica: threads decoding large images off its event loop


def core_defaults(cpus: int, executors: int = 1, replicas: int | None = None) -> CoreDefaults:
    """`replicas`: the ingress replicas actually configured (default: the `auto` count)."""
    if cpus < 1 or executors < 1 or (replicas is not None and replicas < 1):
        raise ValueError("cpus, executors and replicas must be >= 1")
    ingress_replicas = max(1, cpus // 4)
    return CoreDefaults(cpus=cpus, ingress_replicas=ingress_replicas,
                        executor_cpus=float(max(1, cpus // (2 * executors))),
                        decode_threads=max(1, (cpus - cpus // 2) // (replicas or ingress_replicas)))
