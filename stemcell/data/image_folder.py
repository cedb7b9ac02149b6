"""`kind: image_folder`: one sub-folder per class, one label per image (for pretraining a base)."""
from __future__ import annotations

import logging

import cv2
import numpy as np

from stemcell.config import ImageFolderData
from stemcell.data.dataset import DataError, FrameDataset, VideoTimeline, resize_square
from stemcell.data.registry import LoadRequest, register_source
from stemcell.training.data import LabelledFrames

log = logging.getLogger(__name__)


@register_source("image_folder")
def load_image_folder(section: ImageFolderData, request: LoadRequest) -> FrameDataset:
    """Every readable image of every class folder, one-hot labelled (classes = folder names, sorted)."""
    root = section.root
    if not root.is_dir():
        raise DataError(f"data.root: image folder not found: {root}")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not classes:
        raise DataError(f"{root}: expected one sub-folder per class, found none")
    frames, labels = [], []
    for c, cls in enumerate(classes):
        for path in sorted((root / cls).iterdir()):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping unreadable image %s", path)
                continue
            frames.append(resize_square(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), request.input_size))
            labels.append(np.eye(len(classes), dtype=np.int32)[c])
    if not frames:
        raise DataError(f"{root}: no readable images")
    n = len(frames)
    counts = np.stack(labels)
    samples = LabelledFrames(np.stack(frames), counts > 0, np.zeros(n, int), np.arange(n), counts)
    return FrameDataset("image_folder", classes, 1.0, samples, (VideoTimeline(root.name, root.name, np.arange(n), counts),),
                        (), str(root))
