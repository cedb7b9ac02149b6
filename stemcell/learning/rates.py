"""Adaptive Sampling Rate (ASR, AMS §3.2) and Adaptive Training Rate (ATR, AMS appendix D).

Why: uplink bandwidth and teacher GPU time scale with how many frames the edge samples, and
retraining cost with how often the server trains. A static scene needs neither, so both adapt to
how fast the *teacher labels* change (labels are a far more robust change signal than pixels).

φ-score for presence labels (binary or multi-label, values in [0, 1]): the paper defines φ_k as
the task loss of the teacher's label on frame k against its label on the previous sampled frame.
For per-class presence the natural task loss is the per-class 0-1 error, averaged over classes,
i.e. φ_k = mean_c |y_k[c] - y_{k-1}[c]| (for soft labels this is the L1 distance, same formula).

ASR, every `period_s` (δt = 10 s): rate <- clip(rate + η · (mean φ - φ_target), r_min, r_max).
Sampling slower makes consecutive samples further apart, so their labels differ more and φ rises:
the rule is a feedback loop holding φ near φ_target.

ATR, at every ASR decision: enter a *slowdown* mode when the rate falls below `enter_below_fps`
(the scene has been static long enough for ASR to throttle down), leave it when the rate rises
above `exit_above_fps` (hysteresis, as in the paper: γ0 = 0.25, γ1 = 0.35 fps). In slowdown,
T_update grows by `step_s` (2 s) per decision up to `max_s`; otherwise it is reset to `base_s` at once,
so a scene that starts moving is caught up on immediately.

All state is in frozen dataclasses and every function is pure: the RetrainWorker stores the
state, calls `step`, and reads the new rate / period from the result.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np


def sample_due(last_kept_s: float | None, t_s: float, rate_fps: float) -> bool:
    """Keep the frame captured at `t_s`? Yes when it is at least 1/rate seconds after the last kept
    one (or none was kept yet). The one sampling rule of the ASR rate, shared by the server's live
    sampler and the edge client, so both send the teacher the same frames of the same stream."""
    return last_kept_s is None or t_s >= last_kept_s + 1.0 / rate_fps


def label_change(previous: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> float:
    """φ between two consecutive sampled frames: mean over classes of |y_t - y_{t-1}|."""
    prev = np.asarray(previous, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if prev.shape != cur.shape or prev.size == 0:
        raise ValueError(f"label vectors must have the same non-empty shape, got {prev.shape} and {cur.shape}")
    return float(np.abs(cur - prev).mean())


@dataclass(frozen=True)
class LabelledSample:
    """One teacher-labelled sampled frame, as seen by the rate controllers."""

    t_s: float  # capture timestamp (seconds of video time)
    labels: tuple[float, ...]  # teacher presence labels in [0, 1], one per class


@dataclass(frozen=True)
class ASRConfig:
    period_s: float = 10.0  # δt between rate decisions
    eta: float = 3.0  # η: fps added per unit of (mean φ - φ_target)
    # mean per-class label change wanted between consecutive samples; on the synthetic world
    # (5 classes) φ is ~0.075 at 1 fps and ~0.13 at 0.5 fps, so 0.1 settles busy scenes near 0.7 fps
    phi_target: float = 0.1
    min_fps: float = 0.1  # r_min
    max_fps: float = 1.0  # r_max
    initial_fps: float = 1.0  # start fast: nothing is known about the scene yet


@dataclass(frozen=True)
class ASRState:
    rate_fps: float  # sampling rate the edge should use now
    window_start_s: float | None = None  # start of the current δt window (None before any sample)
    phi_sum: float = 0.0  # Σ φ over the current window
    phi_count: int = 0  # number of φ values in the current window
    previous_labels: tuple[float, ...] | None = None  # labels of the last sampled frame
    last_mean_phi: float | None = None  # mean φ that drove the last decision
    decisions: int = 0  # rate decisions taken so far


def asr_init(config: ASRConfig = ASRConfig()) -> ASRState:
    return ASRState(rate_fps=float(np.clip(config.initial_fps, config.min_fps, config.max_fps)))


def asr_step(state: ASRState, sample: LabelledSample, config: ASRConfig = ASRConfig()) -> ASRState:
    """Fold one labelled sample in; when δt has elapsed since the window began, decide a new rate.

    A window with no φ value (fewer than two samples so far) keeps the rate unchanged.
    """
    phi_sum, phi_count = state.phi_sum, state.phi_count
    if state.previous_labels is not None:
        phi_sum += label_change(state.previous_labels, sample.labels)
        phi_count += 1
    start = sample.t_s if state.window_start_s is None else state.window_start_s
    state = replace(state, window_start_s=start, phi_sum=phi_sum, phi_count=phi_count, previous_labels=sample.labels)
    if sample.t_s - start < config.period_s or phi_count == 0:
        return state
    mean_phi = phi_sum / phi_count
    rate = float(np.clip(state.rate_fps + config.eta * (mean_phi - config.phi_target), config.min_fps, config.max_fps))
    return replace(
        state, rate_fps=rate, window_start_s=sample.t_s, phi_sum=0.0, phi_count=0,
        last_mean_phi=mean_phi, decisions=state.decisions + 1,
    )


@dataclass(frozen=True)
class ATRConfig:
    base_s: float = 10.0  # τ_min: T_update outside slowdown
    step_s: float = 2.0  # Δ: growth per decision in slowdown
    max_s: float = 60.0  # cap on T_update
    enter_below_fps: float = 0.25  # γ0: enter slowdown when ASR's rate drops below this
    exit_above_fps: float = 0.35  # γ1: leave slowdown when ASR's rate rises above this


@dataclass(frozen=True)
class ATRState:
    t_update_s: float  # current model update period
    slowdown: bool = False  # whether the scene is considered static


def atr_init(config: ATRConfig = ATRConfig()) -> ATRState:
    return ATRState(t_update_s=config.base_s)


def atr_step(state: ATRState, rate_fps: float, config: ATRConfig = ATRConfig()) -> ATRState:
    """One ATR decision from ASR's latest rate (paper eq. 2 with γ0/γ1 hysteresis)."""
    if state.slowdown:
        slowdown = rate_fps <= config.exit_above_fps
    else:
        slowdown = rate_fps < config.enter_below_fps
    if not slowdown:
        return ATRState(t_update_s=config.base_s, slowdown=False)
    return ATRState(t_update_s=min(state.t_update_s + config.step_s, config.max_s), slowdown=True)


@dataclass(frozen=True)
class RatesConfig:
    asr: ASRConfig = field(default_factory=ASRConfig)
    atr: ATRConfig = field(default_factory=ATRConfig)


@dataclass(frozen=True)
class RatesState:
    """Both controllers for one camera; `asr.rate_fps` and `atr.t_update_s` are the outputs."""

    asr: ASRState
    atr: ATRState


def rates_init(config: RatesConfig = RatesConfig()) -> RatesState:
    return RatesState(asr=asr_init(config.asr), atr=atr_init(config.atr))


def step(state: RatesState, sample: LabelledSample, config: RatesConfig = RatesConfig()) -> RatesState:
    """Fold one labelled sample into ASR; every time ASR decides, ATR decides from the new rate."""
    asr = asr_step(state.asr, sample, config.asr)
    if asr.decisions == state.asr.decisions:
        return RatesState(asr=asr, atr=state.atr)
    return RatesState(asr=asr, atr=atr_step(state.atr, asr.rate_fps, config.atr))
