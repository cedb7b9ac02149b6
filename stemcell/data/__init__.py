"""Training data from any source (synthetic world, labelled video, COCO, image folder): one registry.

Pure (no Ray). `load_dataset(config.data, request)` returns a `FrameDataset`: sampled frames with
per-class object counts, the labels of every labelled frame per video, and file provenance.
"""
from stemcell.data.dataset import (
    DataError,
    DataFile,
    FrameDataset,
    VideoTimeline,
    app_truth,
    model_inputs,
    split_by_chunks,
)
from stemcell.data.registry import (
    LoadRequest,
    list_sources,
    load_dataset,
    model_input_batches,
    register_source,
    request_for,
)

__all__ = [
    "DataError",
    "DataFile",
    "FrameDataset",
    "LoadRequest",
    "VideoTimeline",
    "app_truth",
    "list_sources",
    "load_dataset",
    "model_input_batches",
    "model_inputs",
    "register_source",
    "request_for",
    "split_by_chunks",
]
