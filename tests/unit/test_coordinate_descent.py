"""AMS Algorithm 2: mask selection, frozen coordinates, and Adam state consistency."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from stemcell.learning.coordinate_descent import GradientGuidedAdam

LR, BETAS, EPS = 1e-2, (0.9, 0.999), 1e-8


def _problem(seed: int = 0) -> tuple[list[nn.Parameter], torch.Tensor, torch.Tensor]:
    """Two parameters (a matrix and a vector) of a linear regression with per-step random batches."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(8, 12, generator=g)), nn.Parameter(torch.randn(8, generator=g))]
    xs = torch.randn(40, 16, 12, generator=g)  # 40 steps of 16-sample batches
    ys = torch.randn(40, 16, 8, generator=g)
    return params, xs, ys


def _loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w, b = params
    return ((x @ w.T + b - y) ** 2).mean()


def _run(opt: GradientGuidedAdam, params: list[nn.Parameter], xs: torch.Tensor, ys: torch.Tensor, steps: int) -> None:
    for k in range(steps):
        opt.zero_grad()
        _loss(params, xs[k], ys[k]).backward()
        opt.step()


def _reference(params: list[nn.Parameter], xs: torch.Tensor, ys: torch.Tensor, first_mask: torch.Tensor,
               gamma: float, phase_steps: int, phases: int, selection: str) -> dict[str, object]:
    """Algorithm 2 written out: moments for all coordinates, step only under the phase's mask."""
    w = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in w]
    v = [torch.zeros_like(p) for p in w]
    total = sum(p.numel() for p in w)
    k_sel = max(1, round(gamma * total))
    mask_flat, masks, step = first_mask, [], 0
    for _ in range(phases):
        masks.append(mask_flat.clone())
        pieces = [piece.view_as(p) for piece, p in zip(torch.split(mask_flat, [p.numel() for p in w]), w)]
        score = [torch.zeros_like(p) for p in w]
        for _k in range(phase_steps):
            leaf = [p.clone().requires_grad_(True) for p in w]
            grads = torch.autograd.grad(_loss(leaf, xs[step], ys[step]), leaf)
            step += 1
            for i, g in enumerate(grads):
                m[i] = BETAS[0] * m[i] + (1 - BETAS[0]) * g
                v[i] = BETAS[1] * v[i] + (1 - BETAS[1]) * g * g
                u = LR / (1 - BETAS[0] ** step) * m[i] / (v[i].sqrt() / (1 - BETAS[1] ** step) ** 0.5 + EPS)
                score[i] = score[i] + u if selection == "cumulative" else u
                w[i] = torch.where(pieces[i], w[i] - u, w[i])
        flat_score = torch.cat([s.abs().flatten() for s in score])
        mask_flat = torch.zeros(total, dtype=torch.bool)
        mask_flat[torch.topk(flat_score, k_sel).indices] = True
    return {"w": w, "m": m, "v": v, "masks": masks}


def test_first_phase_is_a_seeded_random_gamma_fraction() -> None:
    params, xs, ys = _problem()
    total = sum(p.numel() for p in params)
    masks = []
    for seed in (1, 1, 2):
        ps = [nn.Parameter(p.detach().clone()) for p in params]
        opt = GradientGuidedAdam(ps, gamma=0.1, phase_steps=5, generator=torch.Generator().manual_seed(seed))
        _run(opt, ps, xs, ys, 1)
        masks.append(torch.cat([m.flatten() for m in opt.phase_mask]))
    assert int(masks[0].sum()) == round(0.1 * total) == opt.mask_size
    assert torch.equal(masks[0], masks[1])  # same seed, same mask
    assert not torch.equal(masks[0], masks[2])


@pytest.mark.parametrize("selection", ["cumulative", "last"])
def test_matches_algorithm_2_masks_weights_and_moments(selection: str) -> None:
    params, xs, ys = _problem()
    initial = [p.detach().clone() for p in params]
    opt = GradientGuidedAdam(params, gamma=0.15, phase_steps=5, lr=LR, betas=BETAS, eps=EPS, selection=selection)
    masks = []
    for _phase in range(3):
        _run(opt, params, xs[opt.phase * 5 :], ys[opt.phase * 5 :], 5)
        masks.append(torch.cat([m.flatten() for m in opt.phase_mask]))
    ref_params = [nn.Parameter(p) for p in initial]
    ref = _reference(ref_params, xs, ys, masks[0], 0.15, 5, 3, selection)
    for got, want in zip(masks, ref["masks"]):
        assert torch.equal(got, want)
    assert not torch.equal(masks[1], masks[0])  # phase 2 is gradient-guided, not the random one again
    for p, w, m, v in zip(params, ref["w"], ref["m"], ref["v"]):
        state = opt.adam.state[p]
        assert int(state["step"]) == 15
        torch.testing.assert_close(p.detach(), w, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state["exp_avg"], m, rtol=1e-5, atol=1e-7)  # moments of every coordinate
        torch.testing.assert_close(state["exp_avg_sq"], v, rtol=1e-5, atol=1e-7)


def test_masked_out_coordinates_stay_bit_identical() -> None:
    params, xs, ys = _problem()
    opt = GradientGuidedAdam(params, gamma=0.05, phase_steps=4)
    for _phase in range(3):
        before = [p.detach().clone() for p in params]
        _run(opt, params, xs, ys, 4)
        masks = opt.phase_mask
        for p, old, mask in zip(params, before, masks):
            assert torch.equal(p.detach()[~mask], old[~mask])
        moved = torch.cat([(p.detach() != old)[m] for p, old, m in zip(params, before, masks)])
        assert moved.all()  # and every coordinate under the mask did move


def test_applied_mask_is_union_of_phases_and_resets() -> None:
    params, xs, ys = _problem()
    opt = GradientGuidedAdam(params, gamma=0.1, phase_steps=3)
    before = [p.detach().clone() for p in params]
    phase_masks = []
    for _phase in range(2):
        _run(opt, params, xs, ys, 3)
        phase_masks.append(opt.phase_mask)
    applied = opt.take_applied_mask()
    for a, m1, m2, p, old in zip(applied, *phase_masks, params, before):
        assert torch.equal(a, m1 | m2)
        assert torch.equal(p.detach() != old, a)  # exactly the applied coordinates changed
    assert not any(a.any() for a in opt.take_applied_mask())


def test_gamma_one_is_plain_adam_bit_for_bit() -> None:
    params, xs, ys = _problem()
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    opt = GradientGuidedAdam(params, gamma=1.0, phase_steps=5, lr=LR)
    adam = torch.optim.Adam(twins, lr=LR)
    _run(opt, params, xs, ys, 12)
    for k in range(12):
        adam.zero_grad()
        _loss(twins, xs[k], ys[k]).backward()
        adam.step()
    for p, t in zip(params, twins):
        assert torch.equal(p.detach(), t.detach())


def test_state_dict_resumes_identically() -> None:
    params, xs, ys = _problem()
    clones = [nn.Parameter(p.detach().clone()) for p in params]
    opt = GradientGuidedAdam(params, gamma=0.1, phase_steps=4)
    _run(opt, params, xs, ys, 6)  # stop mid-phase
    saved = opt.state_dict()
    with torch.no_grad():
        for c, p in zip(clones, params):
            c.copy_(p)
    resumed = GradientGuidedAdam(clones, gamma=0.1, phase_steps=4, generator=torch.Generator().manual_seed(99))
    resumed.load_state_dict(saved)
    _run(opt, params, xs[6:], ys[6:], 7)
    _run(resumed, clones, xs[6:], ys[6:], 7)
    for p, c in zip(params, clones):
        assert torch.equal(p.detach(), c.detach())


def test_rejects_bad_arguments() -> None:
    params, _, _ = _problem()
    with pytest.raises(ValueError):
        GradientGuidedAdam(params, gamma=0.0)
    with pytest.raises(ValueError):
        GradientGuidedAdam(params, phase_steps=0)
    with pytest.raises(RuntimeError):
        _ = GradientGuidedAdam(params).phase_mask
