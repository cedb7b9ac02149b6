"""ASR (adaptive sampling rate) and ATR (adaptive training rate): direction, clipping, growth, reset."""
from __future__ import annotations

import pytest

from stemcell.learning.rates import (
    ASRConfig,
    ATRConfig,
    ATRState,
    LabelledSample,
    RatesConfig,
    asr_init,
    asr_step,
    atr_step,
    label_change,
    rates_init,
    step,
)


def _feed_asr(state, labels_at, config: ASRConfig, seconds: float, fps: float):
    t, n = 0.0, 0
    while t <= seconds:
        state = asr_step(state, LabelledSample(t, labels_at(n)), config)
        n += 1
        t = n / fps
    return state


def test_label_change_is_mean_absolute_difference_over_classes() -> None:
    assert label_change((1, 0, 0, 1), (1, 1, 0, 0)) == pytest.approx(0.5)
    assert label_change((0.2, 0.8), (0.2, 0.8)) == 0.0
    with pytest.raises(ValueError):
        label_change((1, 0), (1, 0, 0))


def test_asr_raises_rate_when_labels_change_fast_and_clips_at_max() -> None:
    config = ASRConfig(eta=2.0, phi_target=0.1, initial_fps=0.2)
    flicker = lambda n: (float(n % 2), 0.0, 0.0, 0.0, 0.0)  # noqa: E731  φ = 0.2 per sample
    state = _feed_asr(asr_init(config), flicker, config, seconds=10.0, fps=1.0)
    assert state.decisions == 1
    assert state.last_mean_phi == pytest.approx(0.2)
    assert state.rate_fps == pytest.approx(0.2 + 2.0 * (0.2 - 0.1))
    state = _feed_asr(state, flicker, config, seconds=200.0, fps=1.0)
    assert state.rate_fps == config.max_fps


def test_asr_lowers_rate_on_static_scene_and_clips_at_min() -> None:
    config = ASRConfig(eta=2.0, phi_target=0.1)
    static = lambda n: (1.0, 0.0, 1.0, 0.0, 0.0)  # noqa: E731
    state = _feed_asr(asr_init(config), static, config, seconds=10.0, fps=1.0)
    assert state.rate_fps == pytest.approx(1.0 - 2.0 * 0.1)
    state = _feed_asr(state, static, config, seconds=120.0, fps=1.0)
    assert state.rate_fps == config.min_fps


def test_asr_decides_only_every_period() -> None:
    config = ASRConfig(period_s=10.0)
    state = asr_init(config)
    for t in range(10):  # t = 0..9: window not yet 10 s long
        state = asr_step(state, LabelledSample(float(t), (0.0, 1.0)), config)
    assert state.decisions == 0 and state.rate_fps == config.initial_fps
    state = asr_step(state, LabelledSample(10.0, (0.0, 1.0)), config)
    assert state.decisions == 1 and state.phi_count == 0 and state.window_start_s == 10.0


def test_atr_grows_in_slowdown_up_to_max_and_resets_when_scene_moves() -> None:
    config = ATRConfig(base_s=10.0, step_s=2.0, max_s=16.0)
    state = ATRState(t_update_s=10.0)
    periods = []
    for _ in range(5):
        state = atr_step(state, 0.1, config)
        periods.append(state.t_update_s)
    assert periods == [12.0, 14.0, 16.0, 16.0, 16.0] and state.slowdown
    state = atr_step(state, 0.3, config)  # between γ0 and γ1: hysteresis keeps the slowdown
    assert state.slowdown and state.t_update_s == 16.0
    state = atr_step(state, 0.5, config)
    assert not state.slowdown and state.t_update_s == 10.0
    assert not atr_step(state, 0.3, config).slowdown  # 0.3 does not *enter* slowdown


def test_combined_step_static_scene_lowers_rate_then_lengthens_updates() -> None:
    config = RatesConfig(asr=ASRConfig(eta=5.0, phi_target=0.05))
    state = rates_init(config)
    t = 0.0
    while t < 120.0:
        state = step(state, LabelledSample(t, (0.0, 0.0, 1.0, 0.0, 0.0)), config)
        t += 1.0 / state.asr.rate_fps
    assert state.asr.rate_fps == config.asr.min_fps
    assert state.atr.slowdown and state.atr.t_update_s > config.atr.base_s
    moving = 0.0
    while not state.asr.rate_fps > config.atr.exit_above_fps:
        moving = 1.0 - moving
        state = step(state, LabelledSample(t, (moving, 1.0 - moving, 1.0, 0.0, 0.0)), config)
        t += 1.0 / state.asr.rate_fps
    assert not state.atr.slowdown and state.atr.t_update_s == config.atr.base_s
