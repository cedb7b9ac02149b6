"""M-Trainer's unit of work: fine-tune one app above one branchpoint and evaluate it."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from stemcell.models import SegmentedNet, make_app_model, to_input
from stemcell.models.readout import counts_from_output, events_from_output
from stemcell.training.candidate import CandidateResult, CandidateSpec
from stemcell.training.data import LabelledFrames
from stemcell.training.detect_train import finetune_detector
from stemcell.training.loop import batched, count_loss, fit, fit_bce, training_device
from stemcell.training.metrics import binary_metrics

__all__ = ["CandidateResult", "CandidateSpec", "finetune_candidate"]


def finetune_candidate(base: SegmentedNet, spec: CandidateSpec, train: LabelledFrames, val: LabelledFrames) -> CandidateResult:
    """Train segments [b, S) + a new head for one app; the stem is frozen and shared.

    The stem's activation at the branchpoint is computed once (the stem is frozen and in eval mode,
    so it is a fixed function), which makes deep branchpoints almost free to train, as on a GPU.
    Detect apps train a CenterNet head from boxes (`detect_train.finetune_detector`).
    """
    if spec.task == "detect":
        return finetune_detector(base, spec, train, val)
    started = time.perf_counter()
    device = training_device()
    torch.manual_seed(spec.seed)
    model = make_app_model(base.to(device), spec.branchpoint, num_outputs=1).to(device)
    x_train = batched(model.stem_features, to_input(train.frames, spec.input_size, mean=spec.mean, std=spec.std).to(device))
    truth = spec.truth(train)
    counting = spec.task == "count"
    y_train = torch.from_numpy((truth if counting else truth > 0).astype(np.float32)[:, None]).to(device)
    if counting:  # start at the mean count: the Poisson fit then only has to learn the variation
        with torch.no_grad():
            model.head.fc.bias.fill_(math.log(max(float(truth.mean()), 1e-3)))
    model.train()
    options = {"epochs": spec.epochs, "lr": spec.lr, "batch_size": spec.batch_size, "seed": spec.seed}
    if counting:
        fit(model.upper_forward, model.trainable_parameters(), x_train, y_train, count_loss(), **options)
    else:
        fit_bce(model.upper_forward, model.trainable_parameters(), x_train, y_train, **options)
    model.eval()
    output = batched(model, to_input(val.frames, spec.input_size, mean=spec.mean, std=spec.std).to(device)).cpu()[:, 0].numpy()
    val_truth = spec.truth(val)
    metrics = binary_metrics(events_from_output(spec.task, spec.min_count, output), val_truth >= spec.min_count)
    mae = float(np.mean(np.abs(counts_from_output(output) - val_truth))) if counting and len(val_truth) else None
    return CandidateResult(
        spec=spec,
        trainable_state={k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()},
        trainable_params=sum(p.numel() for p in model.trainable_parameters()),
        metrics=metrics,
        train_seconds=time.perf_counter() - started,
        count_mae=mae,
    )
