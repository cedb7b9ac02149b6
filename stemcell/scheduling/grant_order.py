"""Which due job a RetrainWorker trains next: the Planner's micro-window grants, not round-robin.

The Planner's slicing (`stemcell.scheduling.slicing`) grants every retraining job a number of
micro-windows per round; a worker's GPU share is the sum of its jobs' grants. Inside the worker,
phases used to rotate over the due jobs, so a job granted 4 windows and one granted 1 trained
equally often whenever both were due, and the slicing decided only the worker's total. Here a
worker serves its due jobs in proportion to their grants (stride scheduling): the next phase goes
to the due job whose phases so far, plus this one, are the smallest fraction of its grant, so over
a round each job's share of the phases follows its grant, whatever subset is due when.

A job granted nothing this round (new since the round was planned, or the slicing gave it no
window) trains only when no granted job is due: idle GPU time helps no one, as in the slicing.
Without grants (no Planner, or none sent yet) the worker keeps its round-robin.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

Job = TypeVar("Job", bound=Hashable)


def next_granted(due: Sequence[Job], grants: Mapping[Job, int], served: Mapping[Job, int]) -> Job | None:
    """The due job to train next: lowest `(served + 1) / grant` among granted jobs, then (nothing
    granted is due) the ungranted job served least; ties go to the earlier job in `due`.

    `due`: jobs (ids or (camera, app) keys) that can train now, in the worker's registration order;
    `grants`: the Planner's micro-windows per job this round; `served`: phases each job has run since
    the grants arrived.
    None when nothing is due.
    """
    def stride(pos: int) -> tuple[bool, float, int, int]:
        job = due[pos]
        grant = max(0, int(grants.get(job, 0)))
        done = served.get(job, 0)
        return grant == 0, (done + 1) / grant if grant else 0.0, done, pos

    return due[min(range(len(due)), key=stride)] if due else None



def worker_grants(grants: Iterable[tuple[str, int]], job_roles: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """The slicing's (job id, micro-windows) grants split by the worker role running each job
    (`job_roles`); every worker with a job gets its dict, a job the slicing did not list counts 0."""
    granted = dict(grants)
    out: dict[str, dict[str, int]] = {}
    for job, role in job_roles.items():
        out.setdefault(role, {})[job] = int(granted.get(job, 0))
    return out
