"""Frame-level classification metrics (what the M-Package records per candidate)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BinaryMetrics:
    precision: float  # TP / (TP + FP); 1.0 when nothing was predicted positive (no false alarms)
    recall: float  # TP / (TP + FN); 1.0 when there were no positives to find
    f1: float  # harmonic mean of precision and recall
    accuracy: float  # (TP + TN) / N
    positives: int  # ground-truth positive frames in the evaluation set
    frames: int  # frames evaluated

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def binary_metrics(predicted: np.ndarray, truth: np.ndarray) -> BinaryMetrics:
    """Precision/recall/F1/accuracy of boolean predictions against boolean ground truth."""
    predicted = np.asarray(predicted, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if predicted.shape != truth.shape:
        raise ValueError(f"shape mismatch: predicted {predicted.shape} vs truth {truth.shape}")
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = float(np.mean(predicted == truth)) if truth.size else 0.0
    return BinaryMetrics(precision, recall, f1, accuracy, int(truth.sum()), int(truth.size))
