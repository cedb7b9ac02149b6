"""Human-readable summaries printed by the CLI."""
from __future__ import annotations

from stemcell.eval import print_table
from stemcell.package import Manifest


def print_manifest_summary(manifest: Manifest) -> None:
    """Per candidate: the accuracy-vs-sharing trade-off Mainstream's scheduler will choose from."""
    lat = manifest.latency
    rows = [
        {"app": c.app, "branchpoint": c.branchpoint, "cut": c.branchpoint_name, "trainable_params": c.trainable_params,
         "precision": c.precision, "recall": c.recall, "f1": c.f1, "accuracy": c.accuracy,
         "count_mae": "-" if c.count_mae is None else round(c.count_mae, 3),
         "map50": "-" if c.map50 is None else round(c.map50, 3)}
        for c in manifest.candidates
    ]
    data = manifest.data
    print_table(rows, title=f"M-Package candidates (base {manifest.base.name}, input {manifest.base.input_size}px; "
                f"{data.kind} data, classes {', '.join(data.classes)})")
    lat_rows = [
        {"batch": b, "sum_of_segments_ms": 1e3 * sum(lat.segment_s[str(b)]), "full_model_ms": 1e3 * lat.full_model_s[str(b)],
         "per_frame_ms": 1e3 * lat.full_model_s[str(b)] / b}
        for b in lat.batch_sizes
    ]
    print_table(lat_rows, title=f"Latency on {lat.device}")
