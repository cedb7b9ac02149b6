"""Scheduling: which model (branchpoint) and frame rate each app runs (Mainstream), and more.

Policies are plain functions of frozen problems: `decide(ScheduleProblem) -> Schedule`.
Re-exports are one per line so other scheduling modules can add theirs without conflicts.
"""
from stemcell.scheduling.baselines import max_sharing
from stemcell.scheduling.baselines import no_sharing
from stemcell.scheduling.cost import IncrementalCost
from stemcell.scheduling.cost import stem_cost
from stemcell.scheduling.event_f1 import event_f1
from stemcell.scheduling.event_f1 import event_recall
from stemcell.scheduling.event_f1 import simulate_event_recall
from stemcell.scheduling.exhaustive import SearchTooLarge
from stemcell.scheduling.exhaustive import exhaustive
from stemcell.scheduling.greedy import mainstream_greedy
from stemcell.scheduling.instances import random_problem
from stemcell.scheduling.optimal import optimal
from stemcell.scheduling.problem import AppChoice
from stemcell.scheduling.problem import AppSpec
from stemcell.scheduling.problem import Candidate
from stemcell.scheduling.problem import Schedule
from stemcell.scheduling.problem import ScheduleProblem
from stemcell.scheduling.problem import build_problem
from stemcell.scheduling.problem import format_schedule
from stemcell.scheduling.registry import SCHEDULERS
from stemcell.scheduling.registry import get_scheduler

__all__ = [
    "SCHEDULERS",
    "AppChoice",
    "AppSpec",
    "Candidate",
    "IncrementalCost",
    "Schedule",
    "ScheduleProblem",
    "SearchTooLarge",
    "build_problem",
    "event_f1",
    "event_recall",
    "exhaustive",
    "format_schedule",
    "get_scheduler",
    "mainstream_greedy",
    "max_sharing",
    "no_sharing",
    "optimal",
    "random_problem",
    "simulate_event_recall",
    "stem_cost",
]
